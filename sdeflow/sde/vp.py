"""The variance-preserving SDE."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..custom_types import RealScalarLike
from ..priors import AbstractPrior
from ._base import AbstractCentredSDE, check_schedule_end, check_times
from .schedules import AbstractSchedule, LinearSchedule


class VPSDE(AbstractCentredSDE):
    """$dX = -\\frac12 \\beta(t) X dt + \\sqrt{\\beta(t)} C^{1/2} dW$.

    $m(t)^2 = \\sigma(-\\gamma(t))$ and $s(t)^2 = \\sigma(\\gamma(t))$ for the schedule's
    $\\gamma = \\log(s^2/m^2)$, so $m^2 + s^2 = 1$: with a prior of unit trace the pointwise variance
    is preserved.

    **Arguments:**

    - `prior`: the Gaussian prior whose $C^{1/2}$ drives the noise.
    - `schedule`: the noise schedule (default `LinearSchedule()`).
    - `t0`: the smallest time used ($\\epsilon$), `t1`: the final time $T$.
    """

    prior: AbstractPrior
    schedule: AbstractSchedule = eqx.field(default_factory=LinearSchedule)
    t0: float = 1e-3
    t1: float = 1.0

    def __check_init__(self):
        check_times(self.t0, self.t1)
        check_schedule_end(self.schedule, self.t1)

    def marginal(self, t: RealScalarLike) -> tuple[Float[Array, ""], Float[Array, ""]]:
        gamma = self.schedule.gamma(t)
        return jnp.sqrt(jax.nn.sigmoid(-gamma)), jnp.sqrt(jax.nn.sigmoid(gamma))

    def drift_coefficient(self, t: RealScalarLike) -> Float[Array, ""]:
        return -0.5 * self.schedule.beta(t)

    def diffusion(self, t: RealScalarLike) -> Float[Array, ""]:
        return jnp.sqrt(self.schedule.beta(t))
