"""The sub-variance-preserving SDE."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..custom_types import RealScalarLike
from ..priors import AbstractPrior
from ._base import AbstractCentredSDE, check_schedule_end, check_times
from .schedules import AbstractSchedule, LinearSchedule


class SubVPSDE(AbstractCentredSDE):
    """$dX = -\\frac12 \\beta(t) X dt + \\sqrt{\\beta(t) (1 - e^{-2 B(t)})} C^{1/2} dW$, $B = \\int_0^t \\beta$.

    $m = e^{-B/2}$ and $s = 1 - e^{-B}$: the noise is at most the VP process's, hence "sub-VP"
    (Song et al., 2021). The schedule is that of the VP process with the same $\\beta$.

    **Arguments:**

    - `prior`: the Gaussian prior whose $C^{1/2}$ drives the noise.
    - `schedule`: the VP noise schedule giving $\\beta$ (default `LinearSchedule()`).
    - `t0`: the smallest time used, `t1`: the final time.
    """

    prior: AbstractPrior
    schedule: AbstractSchedule = eqx.field(default_factory=LinearSchedule)
    t0: float = 1e-3
    t1: float = 1.0

    def __check_init__(self):
        check_times(self.t0, self.t1)
        check_schedule_end(self.schedule, self.t1)

    def marginal(self, t: RealScalarLike) -> tuple[Float[Array, ""], Float[Array, ""]]:
        big_b = self.schedule.integrated_beta(t)
        return jnp.exp(-0.5 * big_b), -jnp.expm1(-big_b)

    def drift_coefficient(self, t: RealScalarLike) -> Float[Array, ""]:
        return -0.5 * self.schedule.beta(t)

    def diffusion(self, t: RealScalarLike) -> Float[Array, ""]:
        big_b = self.schedule.integrated_beta(t)
        return jnp.sqrt(self.schedule.beta(t) * -jnp.expm1(-2 * big_b))
