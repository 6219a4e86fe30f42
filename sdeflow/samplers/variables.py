"""The variables a sampler integrates in: an increasing solver time $u(t)$ and a state $y(t, x)$.

Samplers run from $t_{start}$ down to $t_{end}$; diffrax steps forward, so every choice maps
decreasing $t$ to increasing $u$. `ReversedTime` ($u = -t$, $y = x$) is every sampler's default.
`NoiseLevel` ($u = -\\sigma(t)$, $y = (x - b(t)) / m(t)$) is where the probability-flow ODE reads
$dy / d\\sigma = \\hat\\epsilon(t, x)$: its linear part is integrated exactly and DDIM is its
Euler method (`log=True` takes $u = -\\log\\sigma$ instead).
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

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
    """A change of variables $(t, x) \\mapsto (u, y)$ with $u$ decreasing in $t$."""

    @abc.abstractmethod
    def time(self, t: RealScalarLike) -> Float[Array, ""]:
        """The solver time $u(t)$."""

    @abc.abstractmethod
    def inverse_time(self, u: RealScalarLike) -> Float[Array, ""]:
        """The time $t$ of solver time `u`."""

    @abc.abstractmethod
    def to_state(self, t: RealScalarLike, x: Field) -> Field:
        """The state $y$ of the field `x` at time `t`."""

    @abc.abstractmethod
    def from_state(self, t: RealScalarLike, y: Field) -> Field:
        """The field $x$ of the state `y` at time `t`."""


class ReversedTime(AbstractVariables):
    """$u = -t$ and $y = x$: the reverse-time dynamics as they are."""

    def time(self, t: RealScalarLike) -> Float[Array, ""]:
        return -jnp.asarray(t, jnp.float32)

    def inverse_time(self, u: RealScalarLike) -> Float[Array, ""]:
        return -jnp.asarray(u, jnp.float32)

    def to_state(self, t: RealScalarLike, x: Field) -> Field:
        return x

    def from_state(self, t: RealScalarLike, y: Field) -> Field:
        return y


class NoiseLevel(AbstractVariables):
    """$u = -\\sigma(t)$ with $\\sigma = s / m = e^{\\gamma / 2}$, and $y = (x - b(t)) / m(t)$.

    For every forward SDE of `sdeflow.sde` the probability-flow ODE in these variables is
    $dy / d\\sigma = \\hat\\epsilon(t(\\sigma), m y + b)$ (see `DDIMSolver`). $t(\\sigma)$ inverts the
    increasing $\\gamma(t)$ on `[t_lo, t_hi]` (`inverse_gamma`).

    **Arguments:**

    - `sde`: the forward SDE.
    - `t_lo`, `t_hi`: the interval of times the solve covers.
    - `log`: use $u = -\\log\\sigma = -\\gamma / 2$ as the solver time instead of $-\\sigma$.
    """

    sde: AbstractSDE
    t_lo: Float[Array, ""]
    t_hi: Float[Array, ""]
    log: bool = eqx.field(static=True, default=False)

    def sigma(self, t: RealScalarLike) -> Float[Array, ""]:
        """$\\sigma(t) = s(t) / m(t)$."""
        return jnp.exp(0.5 * self.sde.gamma(jnp.asarray(t, jnp.float32)))

    def time(self, t: RealScalarLike) -> Float[Array, ""]:
        if self.log:
            return -0.5 * self.sde.gamma(jnp.asarray(t, jnp.float32))
        return -self.sigma(t)

    def inverse_time(self, u: RealScalarLike) -> Float[Array, ""]:
        u = jnp.asarray(u, jnp.float32)
        target = -2 * u if self.log else 2 * jnp.log(-u)
        return inverse_gamma(self.sde, target, self.t_lo, self.t_hi)

    def to_state(self, t: RealScalarLike, x: Field) -> Field:
        m, _ = self.sde.marginal(t)
        return (x - self.sde.mean(t, jnp.zeros_like(x))) / m

    def from_state(self, t: RealScalarLike, y: Field) -> Field:
        m, _ = self.sde.marginal(t)
        return m * y + self.sde.mean(t, jnp.zeros_like(y))
