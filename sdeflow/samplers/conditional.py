"""Conditional sampling by replacement: inpainting and super-resolution, and editing (SDEdit)."""

import abc
from collections.abc import Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from ..custom_types import Field, RealScalarLike
from ..grid import field_grid, prolong, restrict
from ..sde import AbstractSDE
from .keys import time_key
from .wrapped import AbstractDelegatingSolver


class AbstractObservation(eqx.Module):
    """A linear observation $y = A x$ of a field with a right inverse: `insert(x, y)` returns the
    field closest to `x` (changing only what $A$ sees) with $A\\,$`insert(x, y)` $= y$ exactly.

    Replacement sampling (Song et al. 2021) inserts, after every solver step at time $t$, a draw of
    $A X_t$ given the observation: $A(m(t) \\tilde y + b(t) + s(t) \\xi)$ with $\\xi \\sim N(0, C)$ and
    $\\tilde y$ any field with $A \\tilde y = y$ (`lift`). The final sample gets $y$ itself.
    """

    values: eqx.AbstractVar[Array]

    @abc.abstractmethod
    def observe(self, x: Field) -> Array:
        """$A x$."""

    @abc.abstractmethod
    def insert(self, x: Field, y: Array) -> Field:
        """`x` changed so that its observation equals `y` exactly."""

    @abc.abstractmethod
    def lift(self) -> Field:
        """A field on the sampling grid whose observation is `values`."""

    @abc.abstractmethod
    def check(self, x: Field):
        """Raise a ValueError if the sampling state `x` does not fit the observation."""

    def insert_noisy(self, sde: AbstractSDE, key: PRNGKeyArray, t: RealScalarLike, x: Field) -> Field:
        """Insert a draw of the observation diffused to time `t` (see the class docstring)."""
        m, s = sde.marginal(t)
        xi = sde.prior.from_white_noise(jr.normal(key, x.shape, x.dtype))
        diffused = sde.mean(t, self.lift()) + s * xi
        return self.insert(x, self.observe(diffused))


class Inpainting(AbstractObservation):
    """Observed point values on a mask: $A x = x|_{\\text{mask}}$.

    **Arguments:**

    - `mask`: boolean array of the sample's shape `(c, *grid)`, true where observed.
    - `values`: a field of that shape holding the observed values (ignored off the mask).
    """

    mask: Bool[Array, "c *grid"]
    values: Float[Array, "c *grid"]

    def __init__(self, mask: ArrayLike, values: ArrayLike):
        mask, values = jnp.asarray(mask, bool), jnp.asarray(values, jnp.float32)
        field_grid(values, "values")
        if mask.shape != values.shape:
            raise ValueError(f"`mask` {mask.shape} and `values` {values.shape} must have the same shape.")
        self.mask, self.values = mask, values

    def observe(self, x: Field) -> Field:
        return jnp.where(self.mask, x, 0.0)

    def insert(self, x: Field, y: Field) -> Field:
        return jnp.where(self.mask, y, x)

    def lift(self) -> Field:
        return self.values

    def check(self, x: Field):
        if x.shape != self.mask.shape:
            raise ValueError(f"the sample's shape {x.shape} differs from the mask's {self.mask.shape}.")


class SuperResolution(AbstractObservation):
    """A coarse field seen through restriction: $A x = $ `restrict(x, coarse grid)`.

    Restriction keeps the modes the coarse grid holds (the $L^2$ projection), so replacement
    overwrites exactly the low modes of the fine sample: `insert(x, y) = x + prolong(y - restrict(x))`
    and `restrict(insert(x, y)) == y` to round-off.

    **Arguments:**

    - `values`: the coarse field, `(c, *coarse_grid)`.
    - `grid`: the fine grid `(n_1, ..., n_d)` to sample on, at least as fine on every axis.
    """

    values: Float[Array, "c *coarse"]
    grid: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, values: ArrayLike, grid: Sequence[int]):
        values = jnp.asarray(values, jnp.float32)
        coarse = field_grid(values, "values")
        grid = tuple(int(n) for n in grid)
        if len(grid) != len(coarse) or any(n < m for n, m in zip(grid, coarse)):
            raise ValueError(f"`grid` {grid} must be at least as fine as the coarse grid {coarse} on every axis.")
        self.values, self.grid = values, grid

    def observe(self, x: Field) -> Float[Array, "c *coarse"]:
        return restrict(x, field_grid(self.values))

    def insert(self, x: Field, y: Float[Array, "c *coarse"]) -> Field:
        return x + prolong(y - restrict(x, field_grid(self.values)), self.grid)

    def lift(self) -> Field:
        return prolong(self.values, self.grid)

    def check(self, x: Field):
        if field_grid(x) != self.grid or x.shape[0] != self.values.shape[0]:
            raise ValueError(
                f"the sample's shape {x.shape} does not match the super-resolution target "
                f"{(self.values.shape[0], *self.grid)}."
            )


class ReplacementSolver(AbstractDelegatingSolver):
    """Wraps a fixed-step diffrax solver: after each step to $t$ the observation diffused to $t$ is
    inserted into the state (fresh noise each step, keyed by the time).

    **Arguments:**

    - `solver`: the wrapped solver (not first-same-as-last: its cached stage would be stale).
    - `observation`: the `AbstractObservation`.
    - `sde`: the forward SDE.
    - `key`: the key of the replacement noise.
    """

    solver: diffrax.AbstractSolver
    observation: AbstractObservation
    sde: AbstractSDE
    key: PRNGKeyArray

    def __check_init__(self):
        self.refuse_fsal("which replacement invalidates; use Euler, Heun, DDIM, a stochastic solver "
                         "or a predictor-corrector.")

    def init(self, terms, t0, t1, y0, args) -> Any:
        return self.solver.init(terms, t0, t1, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, error, dense_info, solver_state, result = self.solver.step(
            terms, t0, t1, y0, args, solver_state, made_jump
        )
        # Diffrax steps in reversed time tau = -t.
        y1 = self.observation.insert_noisy(self.sde, time_key(self.key, t1), -t1, y1)
        if isinstance(dense_info, dict) and "y1" in dense_info:
            dense_info = dict(dense_info, y1=y1)
        return y1, error, dense_info, solver_state, result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


def edit(
    sampler,
    score,
    key: PRNGKeyArray,
    x0: Field,
    t_start: RealScalarLike,
    **kwargs,
):
    """Resample a given field from an intermediate time (SDEdit): diffuse `x0` to `t_start` with the
    forward SDE, then run `sampler` from there down to $t_0$.

    Small `t_start` keeps the field's coarse structure and redraws its fine detail; `t_start = t_1`
    forgets the field.

    **Arguments:**

    - `sampler`: an `AbstractSampler`.
    - `score`: the `PreconditionedScore`.
    - `key`: a JAX random key.
    - `x0`: the field to edit, `(c, *grid)`.
    - `t_start`: the time to diffuse to and start from.
    - `**kwargs`: passed on to `sampler.sample` (e.g. `observation`, `chain`).

    **Returns:**

    The `SampleResult` of the edit.
    """
    key_perturb, key_sample = jr.split(key)
    x_t, _ = score.sde.perturb(key_perturb, t_start, jnp.asarray(x0, jnp.float32))
    return sampler.sample(score, key_sample, x_start=x_t, t_start=t_start, **kwargs)


