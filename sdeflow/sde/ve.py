"""The variance-exploding SDE."""

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..checks import check_positive
from ..custom_types import RealScalarLike
from ..priors import AbstractPrior
from ._base import AbstractCentredSDE, check_times


class VESDE(AbstractCentredSDE):
    """$dX = \\sqrt{d\\sigma(t)^2 / dt}\\, C^{1/2} dW$ with $\\sigma(t) = \\sigma_{min} (\\sigma_{max} / \\sigma_{min})^t$.

    Started at $t = 0$, so exactly $m = 1$ and $s(t)^2 = \\sigma(t)^2 - \\sigma_{min}^2$.

    **Arguments:**

    - `prior`: the Gaussian prior whose $C^{1/2}$ drives the noise.
    - `sigma_min`, `sigma_max`: $0 < \\sigma_{min} < \\sigma_{max}$.
    - `t0`: the smallest time used, `t1`: the final time.
    """

    prior: AbstractPrior
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t0: float = 1e-3
    t1: float = 1.0

    def __check_init__(self):
        check_times(self.t0, self.t1)
        check_positive(self.sigma_min, "sigma_min")
        if not self.sigma_max > self.sigma_min:
            raise ValueError(f"need `sigma_max` > `sigma_min`, got {self.sigma_max} <= {self.sigma_min}.")

    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def marginal(self, t: RealScalarLike) -> tuple[Float[Array, ""], Float[Array, ""]]:
        t = jnp.asarray(t, jnp.float32)
        variance = self.sigma_min**2 * jnp.expm1(2 * self._log_ratio() * t)
        return jnp.ones_like(t), jnp.sqrt(variance)

    def drift_coefficient(self, t: RealScalarLike) -> Float[Array, ""]:
        return jnp.zeros_like(jnp.asarray(t, jnp.float32))

    def diffusion(self, t: RealScalarLike) -> Float[Array, ""]:
        t = jnp.asarray(t, jnp.float32)
        sigma = self.sigma_min * jnp.exp(self._log_ratio() * t)
        return sigma * math.sqrt(2 * self._log_ratio())
