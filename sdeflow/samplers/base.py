"""The abstract sampler: solve the reverse-time dynamics with diffrax from $t_1$ (or any time) to $t_0$."""

import abc
from collections.abc import Sequence

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..checks import check_positive_int
from ..custom_types import Field, RealScalarLike
from ..grid import field_grid
from ..sde import AbstractSDE, check_score_defined
from .conditional import AbstractObservation, ReplacementSolver
from .score import PreconditionedScore
from .self_conditioning import SelfConditioningSolver
from .spacing import AbstractSpacing, time_grid
from .step_to_grid import StepToGrid
from .variables import AbstractVariables, ReversedTime


class SampleResult(eqx.Module):
    """What a sampler returns for one sample.

    **Fields:**

    - `samples`: the field at the final time, `(c, *grid)` (denoised if the sampler's `denoise`,
      with the observation inserted exactly for conditional sampling).
    - `num_evaluations`: the number of network evaluations spent.
    - `num_steps`: the number of solver steps (accepted and rejected).
    - `ts`: the times of the chain, or `None`.
    - `chain`: the states at `ts`, shape `(len(ts), c, *grid)`, or `None`. With `chain=True` an
      adaptive solver's chain is padded with `inf` up to `max_steps` (diffrax's `SaveAt(steps=True)`).
      In conditional sampling the states are the solver's, with the observation diffused to each
      time inserted by `ReplacementSolver`; only `samples` gets the observation itself.
    - `result`: diffrax's outcome of the solve, a `diffrax.RESULTS` (`RESULTS.successful`, or why
      it stopped short: read it after `sample(..., throw=False)`, see `check_results`).
    """

    samples: Field
    num_evaluations: Int[Array, ""]
    num_steps: Int[Array, ""]
    ts: Float[Array, " k"] | None = None
    chain: Float[Array, "k c *grid"] | None = None
    result: diffrax.RESULTS = eqx.field(default_factory=lambda: diffrax.RESULTS.successful)


def check_results(results: diffrax.RESULTS, what: str = "sampling") -> None:
    """The check that `sample(..., throw=False)` leaves to its caller, on the host after the
    compiled program has run: a `RuntimeError` with diffrax's message and the number of samples
    whose solve failed, if any of `results` is not `diffrax.RESULTS.successful`.

    **Arguments:**

    - `results`: the `result` of a `SampleResult`, of one sample or a batch, concrete.
    - `what`: what was being drawn, for the message.

    **Returns:**

    None; it raises instead when a solve failed.
    """
    succeeded = np.asarray(results == diffrax.RESULTS.successful).reshape(-1)
    failed = np.flatnonzero(~succeeded)
    if failed.size:
        first = jax.tree.map(lambda v: np.asarray(np.asarray(v).reshape(-1)[failed[0]]), results)
        raise RuntimeError(
            f"{what} failed for {failed.size} of {succeeded.size} samples: {diffrax.RESULTS[first]}"
        )


class Stepping(eqx.Module):
    """How a sampler steps through time: the diffrax step-size controller, `dt0`, `max_steps`, the
    adjoint (`diffrax.ForwardMode()` with `UnsafeBrownianPath`, which reverse mode rejects), and the
    variables diffrax integrates in (`controller`, `dt0` and the terms are in those variables)."""

    controller: diffrax.AbstractStepSizeController
    dt0: Float[Array, ""] | None
    max_steps: int = eqx.field(static=True)
    fixed: bool = eqx.field(static=True)
    adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint()
    variables: AbstractVariables = ReversedTime()


def fixed_stepping(
    score: PreconditionedScore,
    num_steps: int,
    tau_start: Array,
    tau_end: Array,
    spacing: AbstractSpacing,
    variables: AbstractVariables = ReversedTime(),
) -> Stepping:
    """`num_steps` steps from `tau_start` to `tau_end` on `time_grid` (`StepToGrid`), the
    times mapped to the solver time of `variables`."""
    ts = time_grid(score.sde, num_steps, -tau_start, -tau_end, spacing)
    ts = jax.vmap(lambda t: variables.time(score.sde, t))(ts)
    return Stepping(StepToGrid(ts), None, int(num_steps), True, variables=variables)


def check_num_steps(num_steps: int | None, name: str = "num_steps", *, optional: bool = False):
    if num_steps is None and optional:
        return None
    return check_positive_int(num_steps, name)


def _terminal_sample(sde: AbstractSDE, key: PRNGKeyArray, shape: tuple[int, ...]) -> Field:
    """A draw of $N(\\mu_1, s(t_1)^2 C)$, the law of `sde.terminal_sample`, from point noise.

    `sde.terminal_sample` draws each Fourier mode from its own key so that the same key gives the
    same function at every resolution; that costs seconds of compilation per grid. Samplers only
    need the law, so they draw unit point noise and apply $\\sqrt N C^{1/2}$ (pass
    `x_start=sde.terminal_sample(key, shape)` for resolution-consistent starting noise).
    """
    field_grid(jnp.zeros(shape), "shape")
    _, s = sde.marginal(sde.t1)
    noise = sde.prior.from_white_noise(jr.normal(key, shape, jnp.float32))
    return sde.terminal_mean(noise) + s * noise


def start_shape(shape: Sequence[int] | None, x_start: Field | None) -> tuple[int, ...]:
    """The shape `(c, *grid)` a sample is drawn on: `shape`, or that of `x_start` (they must agree)."""
    if x_start is None:
        if shape is None:
            raise ValueError("give either `shape` or `x_start`.")
        return tuple(int(n) for n in shape)
    field_grid(x_start, "x_start")
    if shape is not None and tuple(shape) != tuple(x_start.shape):
        raise ValueError(f"`shape` {tuple(shape)} differs from `x_start`'s {x_start.shape}.")
    return tuple(x_start.shape)


class AbstractSampler(eqx.Module):
    """A reverse-time sampler of a score-based diffusion, solved with diffrax.

    Diffrax integrates forward in the reversed time $\tau = -t$, from $-t_{start}$ to $-t_{end}$, so
    that every solver (diffrax's and ours) steps forward and sees times it can negate explicitly:
    vector fields are $dX/d\tau = -dX/dt$ evaluated at $t = -\tau$ (`in_reverse_time`), and the
    Brownian increments over $\tau$ are those of the reverse-time Brownian motion $\bar W$.

    Subclasses say which diffrax terms and solver integrate the dynamics (`build`) and how many
    network evaluations a solve costs (`evaluations`); `sample` is defined here once: it starts
    from the law of `sde.terminal_sample` at $t_1$ (or from a given state and time), works on any grid,
    optionally keeps the chain, and conditions on an observation by replacement. Everything runs
    under `jax.jit` (diffrax's loop is a `lax.while_loop`); `jax.vmap` it over keys for batches.
    """

    denoise: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def build(
        self, score: PreconditionedScore, key: PRNGKeyArray, x: Field, tau_start: Array, tau_end: Array
    ) -> tuple[diffrax.AbstractTerm, diffrax.AbstractSolver, Stepping]:
        """The diffrax terms, solver and stepping that carry `x` from reversed time `tau_start`
        to `tau_end` ($\tau = -t$, increasing)."""

    @abc.abstractmethod
    def evaluations(self, solver: diffrax.AbstractSolver, num_steps: Int[Array, ""]) -> Int[Array, ""]:
        """Network evaluations of a solve that made `num_steps` steps (accepted and rejected)."""

    def sample(
        self,
        score: PreconditionedScore,
        key: PRNGKeyArray,
        shape: Sequence[int] | None = None,
        *,
        x_start: Field | None = None,
        t_start: RealScalarLike | None = None,
        t_end: RealScalarLike | None = None,
        observation: AbstractObservation | None = None,
        save_ts: Float[Array, " k"] | None = None,
        chain: bool = False,
        throw: bool = True,
    ) -> SampleResult:
        """Draw one sample by integrating the reverse-time dynamics from `t_start` down to `t_end`.

        **Arguments:**

        - `score`: the model as a `PreconditionedScore` (it carries the forward SDE).
        - `key`: a JAX random key (initial state, Brownian motion, replacement noise).
        - `shape`: `(c, n_1, ..., n_d)`, any grid; not needed with `x_start`.
        - `x_start`: a state at `t_start` to start from instead of `sde.terminal_sample`.
        - `t_start`: the start time, default `sde.t1`.
        - `t_end`: the final time, default `sde.t0`.
        - `observation`: an `Inpainting` or `SuperResolution` to condition on by replacement
          (fixed-step solvers only).
        - `save_ts`: times in `[t_end, t_start]` (decreasing) at which to keep the state.
        - `chain`: keep the state after every step (ignored when `save_ts` is given).
        - `throw`: raise at run time if the solve fails (an adaptive solver out of `max_steps`).
          With `False` the outcome is the result's `result` field, for `check_results` after the
          program has run. A fixed-step sampler's program then holds no host callback, so JAX's
          persistent compilation cache can keep it; diffrax still checks at run time the times
          of `save_ts` and an adaptive solver's first step.

        **Returns:**

        A `SampleResult`.
        """
        sde = score.sde
        t_start = sde.t1 if t_start is None else t_start
        t_end = sde.t0 if t_end is None else t_end
        check_times(sde, t_start, t_end)
        t_start, t_end = jnp.asarray(t_start, jnp.float32), jnp.asarray(t_end, jnp.float32)
        key_init, key_path, key_obs, key_first = jr.split(key, 4)
        shape = start_shape(shape, x_start)
        if x_start is None:
            x = _terminal_sample(sde, key_init, shape)
        else:
            x = jnp.asarray(x_start, jnp.float32)
        tau_start, tau_end = -t_start, -t_end
        terms, solver, stepping = self.build(score, key_path, x, tau_start, tau_end)
        if getattr(solver, "evaluates_step_end", not isinstance(solver, diffrax.Euler)):
            check_score_defined(sde, t_end, f"{type(self).__name__} with {type(solver).__name__}")
        variables = stepping.variables
        if observation is not None:
            if not stepping.fixed:
                raise ValueError(
                    "conditional sampling by replacement needs a fixed-step sampler (`num_steps`)."
                )
            if not isinstance(variables, ReversedTime):
                raise ValueError(
                    "conditional sampling by replacement needs the variables (t, x) "
                    f"(`variables=ReversedTime()`), not {type(variables).__name__}."
                )
            observation.check(x)
            if getattr(solver, "scan_kind", "") is None:
                # What diffrax.ForwardMode does to a bare RK solver, done before wrapping it.
                solver = eqx.tree_at(lambda s: s.scan_kind, solver, "lax", is_leaf=lambda v: v is None)
            solver = ReplacementSolver(solver, observation, sde, key_obs)
            x = observation.insert_noisy(sde, key_first, t_start, x)
        if score.self_conditioning:
            if not stepping.fixed:
                raise ValueError(
                    f"{type(self).__name__} with adaptive steps cannot feed a self-conditioned score "
                    "its previous estimate of x0 (a rejected step would change it); use fixed steps "
                    "(`num_steps`)."
                )
            if not isinstance(variables, ReversedTime):
                raise ValueError(
                    f"{type(self).__name__} in the variables {type(variables).__name__} cannot feed a "
                    "self-conditioned score its previous estimate of x0; use `variables=ReversedTime()`."
                )
            solver = SelfConditioningSolver(solver, score)
        if save_ts is not None:
            to_time = jax.vmap(lambda t: variables.time(sde, t))
            saveat = diffrax.SaveAt(ts=to_time(jnp.asarray(save_ts, jnp.float32)), t1=True)
        elif chain:
            saveat = diffrax.SaveAt(steps=True)
        else:
            saveat = diffrax.SaveAt(t1=True)
        if score.self_conditioning:  # the last estimate of x0, for the final denoising step
            saveat = diffrax.SaveAt(subs=saveat.subs, solver_state=True)
        solution = diffrax.diffeqsolve(
            terms,
            solver,
            variables.time(sde, t_start),
            variables.time(sde, t_end),
            stepping.dt0,
            variables.to_state(sde, t_start, x),
            saveat=saveat,
            stepsize_controller=stepping.controller,
            max_steps=stepping.max_steps,
            adjoint=stepping.adjoint,
            throw=throw,
        )
        num_steps = jnp.asarray(solution.stats["num_steps"], jnp.int32)
        evaluations = self.evaluations(solver, num_steps)
        if save_ts is not None:
            out, ts, states = solution.ys[-1], jnp.asarray(save_ts, jnp.float32), solution.ys[:-1]
        elif chain:
            # With steps=True, unused slots are inf; the last finite entry is the final state.
            accepted = jnp.asarray(solution.stats["num_accepted_steps"], jnp.int32)
            out = solution.ys[-1] if stepping.fixed else solution.ys[jnp.maximum(accepted - 1, 0)]
            finite = jnp.isfinite(solution.ts)
            to_t = jax.vmap(lambda u: variables.inverse_time(sde, u, t_end, t_start))
            ts = jnp.where(finite, to_t(jnp.where(finite, solution.ts, -1.0)), -solution.ts)
            states = solution.ys
        else:
            out, ts, states = solution.ys[-1], None, None
        out = variables.from_state(sde, t_end, out)
        if states is not None and not isinstance(variables, ReversedTime):
            back = jax.vmap(lambda t, y: variables.from_state(sde, t, y))(ts, states)
            states = jnp.where(jnp.isfinite(states), back, states)
        if self.denoise:
            estimate = solution.solver_state[1] if score.self_conditioning else None
            out = score.denoise(t_end, out, estimate)
            evaluations = evaluations + 1
        if observation is not None:
            out = observation.insert(out, observation.values)
        return SampleResult(out, evaluations, num_steps, ts, states, solution.result)


def check_times(sde, t_start, t_end) -> None:
    """Raise a `ValueError` unless $t_0 \\le$ `t_end` $<$ `t_start` $\\le t_1$ of `sde`, where the
    times are concrete (traced times are the caller's to check); float32 round-off of the end
    points is allowed."""
    values = (t_start, t_end, sde.t0, sde.t1)
    if any(isinstance(v, jax.core.Tracer) for v in values):
        return
    t_start, t_end, t0, t1 = (float(v) for v in values)
    slack = 1e-6 * max(1.0, abs(t0), abs(t1))
    if not (t0 - slack <= t_end < t_start <= t1 + slack):
        raise ValueError(
            f"the sampler integrates from `t_start` down to `t_end` within the SDE's [t0, t1] = [{t0}, {t1}]: "
            f"need t0 <= t_end < t_start <= t1, got t_start = {t_start}, t_end = {t_end}."
        )


def in_reverse_time(vector_field):
    """$dX/d\tau$ at $\tau$ from a vector field $dX/dt$ (`(t, x, cond) -> ...`): $-v(-\tau, x)$."""

    def reversed_field(tau, x, args):
        # `args`: the estimate of $x_0$ a self-conditioned score is given (`None` otherwise).
        return -vector_field(-tau, x, args)

    return reversed_field


def rk_evaluations(solver: diffrax.AbstractSolver, num_steps: Int[Array, ""]) -> Int[Array, ""]:
    """Vector-field evaluations of a diffrax Runge–Kutta or stochastic RK solve.

    An explicit RK method with $s$ stages costs $s$ evaluations per attempted step, or $s - 1$ plus
    one initial evaluation if it is first-same-as-last (Tsit5, Dopri5: the first stage is kept
    across rejected steps); Euler costs 1; diffrax's SRK methods (ShARK, SRA1) evaluate the drift
    once per stage. Checked against a counter in the tests.
    """
    while isinstance(solver, (ReplacementSolver, SelfConditioningSolver)):
        solver = solver.solver
    if isinstance(solver, diffrax.Euler):
        return num_steps
    tableau = getattr(solver, "tableau", None)
    if tableau is None:
        raise ValueError(f"cannot count the network evaluations of solver {type(solver).__name__}.")
    stages = len(tableau.b_sol)
    if getattr(tableau, "fsal", False):
        return (stages - 1) * num_steps + 1
    return stages * num_steps


