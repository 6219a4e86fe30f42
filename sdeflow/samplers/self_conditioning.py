"""Self-conditioned sampling: each step gives the network the previous step's estimate of $x_0$."""

from typing import Any

import diffrax
import jax.numpy as jnp

from .score import PreconditionedScore
from .wrapped import AbstractDelegatingSolver


class SelfConditioningSolver(AbstractDelegatingSolver):
    """Wraps a fixed-step diffrax solver of a self-conditioned score (Chen, Zhang and Hinton's
    self-conditioning): the solver state carries an estimate $\\hat x_0$ (zeros at the start), each
    step hands it to the terms' vector fields as their `args` (the `cond` of `PreconditionedScore`),
    and after the step it becomes Tweedie's estimate at the step's start,
    $(x - b - s\\, \\hat\\epsilon(t, x, \\hat x_0^{prev})) / m$.

    That estimate is the network evaluated on the same inputs as the first evaluation of the wrapped
    step (Euler–Maruyama, DDIM and the Euler/Heun ODE steps evaluate at the step's start, as does
    the first Langevin step of a predictor–corrector), so under `jax.jit` XLA computes it once.
    Diffrax steps in reversed time $\\tau = -t$ with the state $x$ itself (`ReversedTime()` variables).

    **Arguments:**

    - `solver`: the wrapped fixed-step solver.
    - `score`: the self-conditioned `PreconditionedScore`.
    """

    solver: diffrax.AbstractSolver
    score: PreconditionedScore

    def __check_init__(self):
        self.refuse_fsal("which a new estimate of x0 at every step invalidates; a self-conditioned "
                         "score needs Euler, Heun, DDIM, Euler-Maruyama or a predictor-corrector.")

    def init(self, terms, t0, t1, y0, args) -> Any:
        estimate = jnp.zeros_like(y0)
        return self.solver.init(terms, t0, t1, y0, estimate), estimate

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner, estimate = solver_state
        y1, error, dense_info, inner, result = self.solver.step(
            terms, t0, t1, y0, estimate, inner, made_jump
        )
        estimate = self.score.denoise(-t0, y0, estimate)
        return y1, error, dense_info, (inner, estimate), result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


def unwrap(solver: diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    """The solver inside any `SelfConditioningSolver` wrapper."""
    while isinstance(solver, SelfConditioningSolver):
        solver = solver.solver
    return solver
