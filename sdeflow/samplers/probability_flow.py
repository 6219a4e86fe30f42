"""The probability-flow ODE $dX/dt = f X + h - \\tfrac12 g^2 C \\nabla \\log p_t$."""

import diffrax
from jaxtyping import Array, Int, PRNGKeyArray

from ..custom_types import Field
from .base import (
    AbstractSampler,
    Stepping,
    check_num_steps,
    check_spacing,
    fixed_stepping,
    in_reverse_time,
    rk_evaluations,
)
from .score import PreconditionedScore
from .variables import NoiseLevel, ReversedTime


VARIABLES = ("t", "sigma", "log_sigma")


def probability_flow(score: PreconditionedScore):
    """The probability-flow vector field $f(t) x + h(t) - \\tfrac12 g(t)^2 S(t, x)$, of `(t, x)`."""

    def vector_field(t, x):
        g = score.sde.diffusion(t)
        return score.sde.drift(t, x) - 0.5 * g**2 * score(t, x)

    return vector_field


class ProbabilityFlow(AbstractSampler):
    """Sample by solving the probability-flow ODE (deterministic given the initial state).

    Its solutions carry the law $p_{t_1}$ to $p_t$ for every $t$, like the reverse SDE. Fixed steps
    with `num_steps` (`diffrax.Euler()` order 1, `diffrax.Heun()` order 2, 2 evaluations per step)
    or adaptive steps (`num_steps=None`) with a PID controller and an embedded-error solver such as
    `diffrax.Tsit5()` (6 evaluations per attempted step plus one).

    The ODE is solved in the variables `variables`:

    - `"t"`: $x$ against $t$, $dx/dt = f x + h - \\tfrac12 g^2 C \\nabla \\log p_t(x)$;
    - `"sigma"`: $y = (x - b(t)) / m(t)$ against $\\sigma = s(t) / m(t)$ (`NoiseLevel`), where the
      same ODE reads $dy / d\\sigma = \\hat\\epsilon(t, x)$: its linear part is integrated exactly and
      Euler's method in these variables is DDIM;
    - `"log_sigma"`: the same $y$ against $\\log \\sigma$, $dy / d\\log\\sigma = \\sigma \\hat\\epsilon$.

    Fixed steps use the same `spacing` grid of times in every variables choice. Which one needs
    the fewest adaptive steps depends on the score: for Gaussian data and for the MNIST model of
    benchmarks/bench_samplers.py, `"t"` did at equal tolerance (the tolerance then bounds errors in
    $x$, not in $y$, whose scale grows like $\\sigma$).

    **Arguments:**

    - `solver`: a diffrax ODE solver, default `diffrax.Tsit5()`.
    - `num_steps`: equal steps from start to end; `None` (default) for adaptive steps.
    - `rtol`, `atol`: tolerances of the PID controller.
    - `max_steps`: the most steps an adaptive solve may take.
    - `spacing`: the fixed time grid, `"uniform"` in $t$ or `"log_snr"` (see `time_grid`).
    - `denoise`: finish with Tweedie's denoising step at $t_0$ (one more evaluation).
    - `variables`: `"t"` (default), `"sigma"` or `"log_sigma"`, see above.
    """

    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    num_steps: int | None = None
    rtol: float = 1e-3
    atol: float = 1e-3
    max_steps: int = 4096
    spacing: str = "uniform"
    denoise: bool = False
    variables: str = "t"

    def __check_init__(self):
        check_spacing(self.spacing)
        if self.variables not in VARIABLES:
            raise ValueError(f"`variables` must be one of {VARIABLES}, got {self.variables!r}.")
        check_num_steps(self.num_steps, optional=True)
        if self.num_steps is None and not isinstance(self.solver, diffrax.AbstractAdaptiveSolver):
            raise ValueError(
                f"adaptive steps (`num_steps=None`) need a solver with an error estimate such as "
                f"diffrax.Tsit5(), not {type(self.solver).__name__}."
            )

    def build(
        self, score: PreconditionedScore, key: PRNGKeyArray, x: Field, tau_start: Array, tau_end: Array
    ) -> tuple[diffrax.AbstractTerm, diffrax.AbstractSolver, Stepping]:
        del key, x
        if self.variables == "t":
            variables = ReversedTime()
            term = diffrax.ODETerm(in_reverse_time(probability_flow(score)))
        else:
            log = self.variables == "log_sigma"
            variables = NoiseLevel(score.sde, -tau_end, -tau_start, log)

            def noise_field(u, y, args):  # dy/du = -dy/dsigma (times sigma for u = -log sigma)
                del args
                t = variables.inverse_time(u)
                eps = score.epsilon(t, variables.from_state(t, y))
                return -variables.sigma(t) * eps if log else -eps

            term = diffrax.ODETerm(noise_field)
        if self.num_steps is None:
            span = variables.time(-tau_end) - variables.time(-tau_start)
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


