"""A step-size controller that steps to given times, with no checks at run time."""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int, PyTree, Real

from ..custom_types import RealScalarLike


class StepToGrid(diffrax.AbstractStepSizeController):
    """Steps to the times `ts`, as `diffrax.StepTo` does, without its run-time checks.

    `diffrax.StepTo` checks at run time that its times increase and that they begin at `t0` and
    end at `t1`. Each check is a host callback in the compiled program, and JAX's persistent
    compilation cache does not keep programs with host callbacks; so every process would compile
    a fixed-step sampler afresh. The samplers build their times with `time_grid` (a monotone
    spacing whose end points are the solve's `t0` and `t1`), so the checks hold by construction.
    Here the times are checked when the controller is built: their shape always, and that they are
    strictly monotone when they are concrete (not traced). Should a grid's last time differ from
    the solve's `t1` by rounding, the solve still ends at `t1` in as many steps: diffrax moves a
    last step that ends within a few ulps of `t1` onto it, and a single step goes to `t1` itself.

    **Fields:**

    - `ts`: the times of the solve, strictly monotone, `ts[0]` the solve's `t0` and `ts[-1]` its
      `t1`.
    """

    ts: Real[Array, " times"] = eqx.field(converter=jnp.asarray)

    def __check_init__(self):
        if self.ts.ndim != 1:
            raise ValueError(f"`ts` must be one-dimensional, got shape {self.ts.shape}.")
        if self.ts.shape[0] < 2:
            raise ValueError(f"`ts` must hold at least 2 times, got {self.ts.shape[0]}.")
        if not isinstance(self.ts, jax.core.Tracer):
            steps = np.diff(np.asarray(self.ts))
            if not (np.all(steps > 0) or np.all(steps < 0)):
                raise ValueError(
                    f"`ts` must be strictly increasing or decreasing, got {np.asarray(self.ts)}."
                )

    def wrap(self, direction: Int[Array, ""] | int) -> "StepToGrid":
        return StepToGrid(self.ts * direction)

    def init(
        self,
        terms: PyTree[diffrax.AbstractTerm],
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: PyTree,
        dt0: None,
        args: PyTree,
        func: Callable,
        error_order: RealScalarLike | None,
    ) -> tuple[RealScalarLike, Int[Array, ""]]:
        del terms, t0, y0, args, func, error_order
        if dt0 is not None:
            raise ValueError("`dt0` must be None: `StepToGrid` steps to its own times.")
        # One step goes to the solve's t1 itself: diffrax snaps a last step that ends within a few
        # ulps of t1 onto it, but not a first one, which would leave a second step to make.
        first = t1 if self.ts.shape[0] == 2 else self.ts[1]
        return first, jnp.asarray(2, jnp.int32)

    def adapt_step_size(
        self,
        t0: RealScalarLike,
        t1: RealScalarLike,
        y0: PyTree,
        y1_candidate: PyTree,
        args: PyTree,
        y_error: PyTree | None,
        error_order: RealScalarLike | None,
        controller_state: Int[Array, ""],
    ) -> tuple[bool, RealScalarLike, RealScalarLike, bool, Int[Array, ""], diffrax.RESULTS]:
        del t0, y0, y1_candidate, args, y_error, error_order
        # Past the last time the index clamps to it; diffrax stops at t1 = ts[-1] before that.
        next_t = self.ts[controller_state]
        return True, t1, next_t, False, controller_state + 1, diffrax.RESULTS.successful
