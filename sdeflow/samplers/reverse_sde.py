"""The reverse-time SDE $dX = [f X + h - g^2 C \\nabla \\log p_t] dt + g C^{1/2} d\\bar W$."""

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Int, PRNGKeyArray

from ..custom_types import Field
from ._noise import ReverseNoiseTerm
from .base import (
    AbstractSampler,
    Stepping,
    check_num_steps,
    fixed_stepping,
    in_reverse_time,
    rk_evaluations,
)
from .score import PreconditionedScore
from ..checks import check_adaptive_controls
from .spacing import AbstractSpacing, check_spacing, UniformSpacing


def levy_area_for(solver: diffrax.AbstractSolver) -> type:
    """The concrete Lévy area a diffrax SDE solver needs from its Brownian path."""
    needed = getattr(solver, "minimal_levy_area", diffrax.AbstractBrownianIncrement)
    if needed is diffrax.AbstractSpaceTimeTimeLevyArea:
        return diffrax.SpaceTimeTimeLevyArea
    if needed is diffrax.AbstractSpaceTimeLevyArea:
        return diffrax.SpaceTimeLevyArea
    return diffrax.BrownianIncrement


def reverse_drift(score: PreconditionedScore) -> Callable[..., Field]:
    """The drift $f(t) x + h(t) - g(t)^2 S(t, x)$ of the reverse SDE, as a function of `(t, x)`.

    **Arguments:**

    - `score`: the preconditioned score $S(t, x) = C \\nabla \\log p_t(x)$, whose `sde` gives
      $f$, $h$ and $g$.

    **Returns:**

    A function `vector_field(t, x, cond=None)` of a time `t` and one field `x` of shape `(c, *grid)`,
    returning the drift in forward time, a field of the shape of `x`; `cond` is passed on to `score`
    (the estimate of $x_0$ a self-conditioned model is given). One network evaluation per call.
    """

    def vector_field(t, x, cond=None):
        g = score.sde.diffusion(t)
        return score.sde.drift(t, x) - g**2 * score(t, x, cond)

    return vector_field


class ReverseSDE(AbstractSampler):
    """Sample by solving the reverse-time SDE (Anderson 1982) with a diffrax SDE solver.

    $dX = [f(t) X + h(t) - g(t)^2 S(t, X)] dt + g(t) C^{1/2} d\\bar W$ from $t_1$ down to $t_0$, with
    $S = C \\nabla \\log p_t$ from the network. The noise is additive, so Itô and Stratonovich
    solvers agree: `diffrax.Euler()` is Euler–Maruyama (1 evaluation per step, strong order 0.5 in
    general, 1 for additive noise) and `diffrax.ShARK()` / `diffrax.SRA1()` are the additive-noise
    stochastic Runge–Kutta methods (2 evaluations per step, strong order 1.5), which also give the
    error estimates for adaptive steps (`num_steps=None` with a PID controller). The Brownian motion
    is unit-variance point noise turned into $C^{1/2} dW$ by `ReverseNoiseTerm`: fresh draws per
    step with fixed steps (`diffrax.UnsafeBrownianPath`, cheap, deterministic given the key), and a
    `diffrax.VirtualBrownianTree` with adaptive steps (rejected steps must see the same path).

    **Arguments:**

    - `solver`: a diffrax SDE solver, default Euler–Maruyama.
    - `num_steps`: equal steps from start to end; `None` for adaptive steps.
    - `rtol`, `atol`: tolerances of the PID controller (adaptive only).
    - `max_steps`: the most steps an adaptive solve may take.
    - `brownian_tol`: adaptive steps only: the resolution of the Brownian tree as a fraction of the
      time span.
    - `spacing`: the fixed time grid, `UniformSpacing()` in $t$ or `LogSNRSpacing()` (see
      `time_grid`).
    - `denoise`: finish with Tweedie's denoising step at $t_0$ (one more evaluation).
    """

    solver: diffrax.AbstractSolver = diffrax.Euler()
    num_steps: int | None = 200
    rtol: float = 1e-2
    atol: float = 1e-2
    max_steps: int = 4096
    brownian_tol: float = 1e-4
    spacing: AbstractSpacing = UniformSpacing()
    denoise: bool = False

    def __check_init__(self):
        check_spacing(self.spacing)
        check_num_steps(self.num_steps, optional=True)
        check_adaptive_controls(self.rtol, self.atol, self.max_steps)
        if not 0 < self.brownian_tol < 1:
            raise ValueError(f"`brownian_tol` must lie in (0, 1) (a fraction of the time span), got {self.brownian_tol}.")
        has_error = isinstance(self.solver, diffrax.AbstractAdaptiveSolver) or (
            getattr(getattr(self.solver, "tableau", None), "b_error", None) is not None
        )
        if self.num_steps is None and not has_error:
            raise ValueError(
                f"adaptive steps (`num_steps=None`) need a solver with an error estimate such as "
                f"diffrax.ShARK(), not {type(self.solver).__name__}."
            )

    def build(
        self, score: PreconditionedScore, key: PRNGKeyArray, x: Field, tau_start: Array, tau_end: Array
    ) -> tuple[diffrax.AbstractTerm, diffrax.AbstractSolver, Stepping]:
        levy_area = levy_area_for(self.solver)
        if self.num_steps is None:
            span = tau_end - tau_start
            stepping = Stepping(
                diffrax.PIDController(rtol=self.rtol, atol=self.atol), span / 64, int(self.max_steps), False
            )
            path = diffrax.VirtualBrownianTree(
                tau_start,
                tau_end,
                tol=self.brownian_tol * span,
                shape=jnp.shape(x),
                key=key,
                levy_area=levy_area,
            )
        else:
            stepping = fixed_stepping(score, self.num_steps, tau_start, tau_end, self.spacing)
            stepping = eqx.tree_at(lambda st: st.adjoint, stepping, diffrax.ForwardMode())
            path = diffrax.UnsafeBrownianPath(jnp.shape(x), key, levy_area=levy_area)
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(in_reverse_time(reverse_drift(score))), ReverseNoiseTerm(score.sde, path)
        )
        return terms, self.solver, stepping

    def evaluations(self, solver: diffrax.AbstractSolver, num_steps: Int[Array, ""]) -> Int[Array, ""]:
        return rk_evaluations(solver, num_steps)


def EulerMaruyama(num_steps: int = 200, *, denoise: bool = False) -> ReverseSDE:
    """The reverse SDE with Euler–Maruyama and `num_steps` equal steps (`ReverseSDE(diffrax.Euler())`).

    **Arguments:**

    - `num_steps`: the number of equal steps from start to end, a positive integer (default 200).
    - `denoise`: finish with Tweedie's denoising step at $t_0$ (one more evaluation).

    **Returns:**

    A `ReverseSDE` sampler with solver `diffrax.Euler()`, `num_steps` fixed steps in uniform
    spacing, and the other options at their defaults.
    """
    return ReverseSDE(diffrax.Euler(), num_steps, denoise=denoise)


