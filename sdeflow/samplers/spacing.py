"""Where a fixed-step sampler puts its times: equal steps in $t$ or in the log-SNR."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..checks import check_instance, check_positive_int
from ..custom_types import RealScalarLike
from ..sde import AbstractSDE
from .variables import inverse_gamma


class AbstractSpacing(eqx.Module):
    """A spacing of the times of a fixed-step solve from $t_{start}$ down to $t_{end}$."""

    @abc.abstractmethod
    def __call__(
        self, sde: AbstractSDE, u: Float[Array, " k"], t_start: RealScalarLike, t_end: RealScalarLike
    ) -> Float[Array, " k"]:
        """The times at the fractions `u` of the way from `t_start` (`u = 0`) to `t_end` (`u = 1`)."""


class UniformSpacing(AbstractSpacing):
    """Equal steps in $t$."""

    def __call__(
        self, sde: AbstractSDE, u: Float[Array, " k"], t_start: RealScalarLike, t_end: RealScalarLike
    ) -> Float[Array, " k"]:
        return t_start + (t_end - t_start) * u


class LogSNRSpacing(AbstractSpacing):
    """Equal steps in $\\gamma(t) = \\log(s^2/m^2)$ (the log noise-to-signal ratio), which puts more
    steps near $t_0$ where the marginals change fastest; $\\gamma$ is inverted by bisection (it is
    increasing)."""

    def __call__(
        self, sde: AbstractSDE, u: Float[Array, " k"], t_start: RealScalarLike, t_end: RealScalarLike
    ) -> Float[Array, " k"]:
        g_start, g_end = sde.gamma(t_start), sde.gamma(t_end)
        targets = g_start + (g_end - g_start) * u
        return jax.vmap(lambda g: inverse_gamma(sde, g, t_end, t_start))(targets)


SPACINGS: dict[str, type[AbstractSpacing]] = {"uniform": UniformSpacing, "log_snr": LogSNRSpacing}
"""The names a config gives the spacings, and their classes."""


def check_spacing(spacing: object) -> AbstractSpacing:
    """`spacing` if it is an `AbstractSpacing`, else a `TypeError` saying which object to pass."""
    return check_instance(spacing, "spacing", AbstractSpacing, SPACINGS, "sdeflow.samplers")


def time_grid(
    sde: AbstractSDE,
    num_steps: int,
    t_start: RealScalarLike,
    t_end: RealScalarLike,
    spacing: AbstractSpacing = UniformSpacing(),
) -> Float[Array, " k"]:
    """`num_steps + 1` decreasing times from `t_start` to `t_end`.

    **Arguments:**

    - `sde`: the forward SDE.
    - `num_steps`: the number of steps.
    - `t_start`, `t_end`: the end points, `t_start > t_end`.
    - `spacing`: `UniformSpacing()` (equal steps in $t$) or `LogSNRSpacing()` (equal steps in
      $\\log(s^2/m^2)$).

    **Returns:**

    The times, shape `(num_steps + 1,)`, exactly `t_start` first and `t_end` last.
    """
    u = jnp.linspace(0.0, 1.0, check_positive_int(num_steps, "num_steps") + 1)
    ts = check_spacing(spacing)(sde, u, t_start, t_end)
    return ts.at[0].set(t_start).at[-1].set(t_end)
