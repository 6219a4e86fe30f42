"""The probability-flow ODE $dX/dt = f X + h - \\tfrac12 g^2 C \\nabla \\log p_t$."""

from collections.abc import Callable

import diffrax
from jaxtyping import Array, Int, PRNGKeyArray

from ..custom_types import Field
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
from .variables import AbstractNoiseLevel, AbstractVariables, check_variables, ReversedTime


def probability_flow(score: PreconditionedScore) -> Callable[..., Field]:
    """The probability-flow vector field $f(t) x + h(t) - \\tfrac12 g(t)^2 S(t, x)$, of `(t, x)`.

    **Arguments:**

    - `score`: the preconditioned score $S(t, x) = C \\nabla \\log p_t(x)$, whose `sde` gives
      $f$, $h$ and $g$.

    **Returns:**

    A function `vector_field(t, x, cond=None)` of a time `t` and one field `x` of shape `(c, *grid)`,
    returning $dx/dt$ in forward time, a field of the shape of `x`; `cond` is passed on to `score`
    (the estimate of $x_0$ a self-conditioned model is given). One network evaluation per call.
    """

    def vector_field(t, x, cond=None):
        g = score.sde.diffusion(t)
        return score.sde.drift(t, x) - 0.5 * g**2 * score(t, x, cond)

    return vector_field


class ProbabilityFlow(AbstractSampler):
    """Sample by solving the probability-flow ODE (deterministic given the initial state).

    Its solutions carry the law $p_{t_1}$ to $p_t$ for every $t$, like the reverse SDE. Fixed steps
    with `num_steps` (`diffrax.Euler()` order 1, `diffrax.Heun()` order 2, 2 evaluations per step)
    or adaptive steps (`num_steps=None`) with a PID controller and an embedded-error solver such as
    `diffrax.Tsit5()` (6 evaluations per attempted step plus one).

    The ODE is solved in the variables `variables` (`sdeflow.samplers.variables`):

    - `ReversedTime()`: $x$ against $t$, $dx/dt = f x + h - \\tfrac12 g^2 C \\nabla \\log p_t(x)$;
    - `NoiseLevel()`: $y = (x - b(t)) / m(t)$ against $\\sigma = s(t) / m(t)$, where the same ODE
      reads $dy / d\\sigma = \\hat\\epsilon(t, x)$: its linear part is integrated exactly and Euler's
      method in these variables is DDIM;
    - `LogNoiseLevel()`: the same $y$ against $\\log \\sigma$, $dy / d\\log\\sigma = \\sigma \\hat\\epsilon$.

    Fixed steps use the same `spacing` grid of times in every variables choice. Which one needs
    the fewest adaptive steps depends on the score: for Gaussian data and for the MNIST model of
    benchmarks/bench_samplers.py, `ReversedTime()` did at equal tolerance (the tolerance then
    bounds errors in $x$, not in $y$, whose scale grows like $\\sigma$).

    **Arguments:**

    - `solver`: a diffrax ODE solver, default `diffrax.Tsit5()`.
    - `num_steps`: equal steps from start to end; `None` (default) for adaptive steps.
    - `rtol`, `atol`: tolerances of the PID controller.
    - `max_steps`: the most steps an adaptive solve may take.
    - `spacing`: the fixed time grid, `UniformSpacing()` in $t$ or `LogSNRSpacing()` (see
      `time_grid`).
    - `denoise`: finish with Tweedie's denoising step at $t_0$ (one more evaluation).
    - `variables`: `ReversedTime()` (default), `NoiseLevel()` or `LogNoiseLevel()`, see above.
    """

    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    num_steps: int | None = None
    rtol: float = 1e-3
    atol: float = 1e-3
    max_steps: int = 4096
    spacing: AbstractSpacing = UniformSpacing()
    denoise: bool = False
    variables: AbstractVariables = ReversedTime()

    def __check_init__(self):
        check_spacing(self.spacing)
        if not isinstance(check_variables(self.variables), (ReversedTime, AbstractNoiseLevel)):
            raise ValueError(
                "`variables` of the probability-flow ODE must be ReversedTime(), NoiseLevel() or "
                f"LogNoiseLevel(), got {type(self.variables).__name__}."
            )
        check_num_steps(self.num_steps, optional=True)
        check_adaptive_controls(self.rtol, self.atol, self.max_steps)
        if self.num_steps is None and not isinstance(self.solver, diffrax.AbstractAdaptiveSolver):
            raise ValueError(
                f"adaptive steps (`num_steps=None`) need a solver with an error estimate such as "
                f"diffrax.Tsit5(), not {type(self.solver).__name__}."
            )

    def build(
        self, score: PreconditionedScore, key: PRNGKeyArray, x: Field, tau_start: Array, tau_end: Array
    ) -> tuple[diffrax.AbstractTerm, diffrax.AbstractSolver, Stepping]:
        del key, x
        sde, variables = score.sde, self.variables
        if isinstance(variables, AbstractNoiseLevel):

            def noise_field(u, y, args):
                t = variables.inverse_time(sde, u, -tau_end, -tau_start)
                eps = score.epsilon(t, variables.from_state(sde, t, y), args)
                return variables.velocity(sde, t, eps)

            term = diffrax.ODETerm(noise_field)
        else:
            term = diffrax.ODETerm(in_reverse_time(probability_flow(score)))
        if self.num_steps is None:
            span = variables.time(sde, -tau_end) - variables.time(sde, -tau_start)
            stepping = Stepping(
                diffrax.PIDController(rtol=self.rtol, atol=self.atol),
                span / 32,
                int(self.max_steps),
                False,
                variables=variables,
            )
        else:
            stepping = fixed_stepping(score, self.num_steps, tau_start, tau_end, self.spacing, variables)
        return term, self.solver, stepping

    def evaluations(self, solver: diffrax.AbstractSolver, num_steps: Int[Array, ""]) -> Int[Array, ""]:
        return rk_evaluations(solver, num_steps)


