"""The Ornstein–Uhlenbeck bridge toward a target field."""

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..checks import check_positive
from ..custom_types import Field, RealScalarLike
from ..grid import field_grid, resample
from ..priors import AbstractPrior
from ._base import AbstractSDE, check_times


class OUBridge(AbstractSDE):
    """$dX = -\\theta (X - x^*) dt + \\eta C^{1/2} dW$, pulled toward a target field $x^*$.

    $X_t | X_0 \\sim N(x^* + e^{-\\theta t}(X_0 - x^*), \\frac{\\eta^2}{2\\theta}(1 - e^{-2\\theta t}) C)$:
    $m = e^{-\\theta t}$, $b = (1 - m) x^*$. The target is a function: given on one grid, it is
    resampled spectrally to the grid of each state.

    Its terminal law is centred on the target, $N(x^*, s(t_1)^2 C)$ (`terminal_mean`): the law at
    $t_1$ of the bridge started from $x^*$. A datum's mean at $t_1$ is then $e^{-\\theta t_1}(x_0 - x^*)$
    away from it, so a target near the data's mean (fitted from the data) shrinks the mismatch and
    the ELBO's prior term.

    **Arguments:**

    - `prior`: the Gaussian prior whose $C^{1/2}$ drives the noise.
    - `target`: $x^*$, a field of shape `(c, *grid)`.
    - `theta`: the pull $\\theta > 0$.
    - `eta`: the noise level $\\eta > 0$.
    - `t0`: the smallest time used, `t1`: the final time.
    """

    prior: AbstractPrior
    target: Float[Array, "c *grid"]
    theta: float = 4.0
    eta: float = 2.0 ** 1.5
    t0: float = 1e-3
    t1: float = 1.0

    def __check_init__(self):
        check_times(self.t0, self.t1)
        check_positive(self.theta, "theta")
        check_positive(self.eta, "eta")
        field_grid(self.target, "target")

    def _target_on(self, x: Field) -> Field:
        if self.target.shape[0] != x.shape[0]:
            raise ValueError(
                f"the OU target has {self.target.shape[0]} channels but the state has {x.shape[0]}."
            )
        if self.target.shape == x.shape:
            return self.target.astype(x.dtype)
        return resample(self.target, field_grid(x)).astype(x.dtype)

    def marginal(self, t: RealScalarLike) -> tuple[Float[Array, ""], Float[Array, ""]]:
        t = jnp.asarray(t, jnp.float32)
        variance = -(self.eta**2) * jnp.expm1(-2 * self.theta * t) / (2 * self.theta)
        return jnp.exp(-self.theta * t), jnp.sqrt(variance)

    def mean(self, t: RealScalarLike, x0: Field) -> Field:
        m, _ = self.marginal(t)
        target = self._target_on(x0)
        return target + m * (x0 - target)

    def drift(self, t: RealScalarLike, x: Field) -> Field:
        return -self.theta * (x - self._target_on(x))

    def terminal_mean(self, x: Field) -> Field:
        """The target $x^*$ on the grid of `x` (see the class docstring)."""
        return self._target_on(x)

    def drift_coefficient(self, t: RealScalarLike) -> Float[Array, ""]:
        return jnp.full((), -self.theta, jnp.float32)

    def diffusion(self, t: RealScalarLike) -> Float[Array, ""]:
        return jnp.full((), self.eta, jnp.float32)
