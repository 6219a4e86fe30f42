"""The variables a sampler integrates in: an increasing solver time $u(t)$ and a state $y(t, x)$.

Samplers run from $t_{start}$ down to $t_{end}$; diffrax steps forward, so every choice maps
decreasing $t$ to increasing $u$. `ReversedTime()` ($u = -t$, $y = x$) is every sampler's default.
`NoiseLevel()` ($u = -\\sigma(t)$, $y = (x - b(t)) / m(t)$) is where the probability-flow ODE reads
$dy / d\\sigma = \\hat\\epsilon(t, x)$: its linear part is integrated exactly and DDIM is its
Euler method; `LogNoiseLevel()` takes $u = -\\log\\sigma$ instead. The objects hold no SDE: each
method is given the forward SDE of the solve.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..checks import check_instance
from ..custom_types import Field, RealScalarLike
from ..sde import AbstractSDE


def inverse_gamma(
    sde: AbstractSDE, target: RealScalarLike, t_lo: RealScalarLike, t_hi: RealScalarLike
) -> Float[Array, ""]:
    """The time $t \\in$ `[t_lo, t_hi]` with $\\gamma(t) = \\log(s^2/m^2)$ equal to `target`, by 40
    halvings of the interval ($\\gamma$ is increasing; 40 is below float32 resolution)."""

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) / 2
        below = sde.gamma(mid) < target
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    bounds = (jnp.asarray(t_lo, jnp.float32), jnp.asarray(t_hi, jnp.float32))
    lo, hi = jax.lax.fori_loop(0, 40, halve, bounds)
    return (lo + hi) / 2


class AbstractVariables(eqx.Module):
    """A change of variables $(t, x) \\mapsto (u, y)$ with $u$ decreasing in $t$, for the forward SDE
    each method is given."""

    @abc.abstractmethod
    def time(self, sde: AbstractSDE, t: RealScalarLike) -> Float[Array, ""]:
        """The solver time $u(t)$."""

    @abc.abstractmethod
    def inverse_time(
        self, sde: AbstractSDE, u: RealScalarLike, t_lo: RealScalarLike, t_hi: RealScalarLike
    ) -> Float[Array, ""]:
        """The time $t$ of solver time `u`, in the interval `[t_lo, t_hi]` the solve covers."""

    @abc.abstractmethod
    def to_state(self, sde: AbstractSDE, t: RealScalarLike, x: Field) -> Field:
        """The state $y$ of the field `x` at time `t`."""

    @abc.abstractmethod
    def from_state(self, sde: AbstractSDE, t: RealScalarLike, y: Field) -> Field:
        """The field $x$ of the state `y` at time `t`."""


class ReversedTime(AbstractVariables):
    """$u = -t$ and $y = x$: the reverse-time dynamics as they are."""

    def time(self, sde: AbstractSDE, t: RealScalarLike) -> Float[Array, ""]:
        return -jnp.asarray(t, jnp.float32)

    def inverse_time(
        self, sde: AbstractSDE, u: RealScalarLike, t_lo: RealScalarLike, t_hi: RealScalarLike
    ) -> Float[Array, ""]:
        return -jnp.asarray(u, jnp.float32)

    def to_state(self, sde: AbstractSDE, t: RealScalarLike, x: Field) -> Field:
        return x

    def from_state(self, sde: AbstractSDE, t: RealScalarLike, y: Field) -> Field:
        return y


class AbstractNoiseLevel(AbstractVariables):
    """The state $y = (x - b(t)) / m(t)$ against a solver time decreasing in the noise level
    $\\sigma = s / m = e^{\\gamma / 2}$.

    For every forward SDE of `sdeflow.sde` the probability-flow ODE in these variables is
    $dy / d\\sigma = \\hat\\epsilon(t(\\sigma), m y + b)$ (see `DDIMSolver`). $t(\\sigma)$ inverts the
    increasing $\\gamma(t)$ on the interval of the solve (`inverse_gamma`).
    """

    @abc.abstractmethod
    def velocity(self, sde: AbstractSDE, t: RealScalarLike, eps: Field) -> Field:
        """$dy / du$ of the probability-flow ODE at time `t`, given the predicted noise `eps`."""

    def sigma(self, sde: AbstractSDE, t: RealScalarLike) -> Float[Array, ""]:
        """$\\sigma(t) = s(t) / m(t)$."""
        return jnp.exp(0.5 * sde.gamma(jnp.asarray(t, jnp.float32)))

    def to_state(self, sde: AbstractSDE, t: RealScalarLike, x: Field) -> Field:
        m, _ = sde.marginal(t)
        return (x - sde.mean(t, jnp.zeros_like(x))) / m

    def from_state(self, sde: AbstractSDE, t: RealScalarLike, y: Field) -> Field:
        m, _ = sde.marginal(t)
        return m * y + sde.mean(t, jnp.zeros_like(y))


class NoiseLevel(AbstractNoiseLevel):
    """$u = -\\sigma(t)$ and $y = (x - b(t)) / m(t)$: the probability-flow ODE reads
    $dy / d\\sigma = \\hat\\epsilon$, and Euler's method in these variables is DDIM."""

    def time(self, sde: AbstractSDE, t: RealScalarLike) -> Float[Array, ""]:
        return -self.sigma(sde, t)

    def inverse_time(
        self, sde: AbstractSDE, u: RealScalarLike, t_lo: RealScalarLike, t_hi: RealScalarLike
    ) -> Float[Array, ""]:
        u = jnp.asarray(u, jnp.float32)
        return inverse_gamma(sde, 2 * jnp.log(-u), t_lo, t_hi)

    def velocity(self, sde: AbstractSDE, t: RealScalarLike, eps: Field) -> Field:
        return -eps  # dy/du = -dy/dsigma


class LogNoiseLevel(AbstractNoiseLevel):
    """$u = -\\log\\sigma(t) = -\\gamma(t) / 2$ and $y = (x - b(t)) / m(t)$: the probability-flow ODE
    reads $dy / d\\log\\sigma = \\sigma \\hat\\epsilon$."""

    def time(self, sde: AbstractSDE, t: RealScalarLike) -> Float[Array, ""]:
        return -0.5 * sde.gamma(jnp.asarray(t, jnp.float32))

    def inverse_time(
        self, sde: AbstractSDE, u: RealScalarLike, t_lo: RealScalarLike, t_hi: RealScalarLike
    ) -> Float[Array, ""]:
        u = jnp.asarray(u, jnp.float32)
        return inverse_gamma(sde, -2 * u, t_lo, t_hi)

    def velocity(self, sde: AbstractSDE, t: RealScalarLike, eps: Field) -> Field:
        return -self.sigma(sde, t) * eps  # dy/du = -sigma dy/dsigma


VARIABLES: dict[str, type[AbstractVariables]] = {
    "t": ReversedTime,
    "sigma": NoiseLevel,
    "log_sigma": LogNoiseLevel,
}
"""The names a config gives the variables of the probability-flow ODE, and their classes."""


def check_variables(variables: object) -> AbstractVariables:
    """`variables` if it is an `AbstractVariables`, else a `TypeError` saying which object to pass."""
    return check_instance(variables, "variables", AbstractVariables, VARIABLES, "sdeflow.samplers")
