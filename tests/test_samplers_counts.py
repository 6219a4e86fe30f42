"""Evaluation counts, the jit structure, the noise law, the adaptive SDE solver and bad input."""

import importlib

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from test_samplers import compiled, gaussian_oracle

import sdeflow
from sdeflow import samplers
from sdeflow.parameterisation import Epsilon
from sdeflow.priors import Matern


def _score(n=16, model=None):
    oracle = gaussian_oracle(n)
    return oracle, samplers.PreconditionedScore(oracle if model is None else model, oracle.sde, Epsilon())


def test_evaluation_counts_match_a_counter():
    oracle, _ = _score(8)
    calls = [0]

    def bump():
        calls[0] += 1

    def model(t, x):
        jax.debug.callback(bump, ordered=True)
        return oracle(t, x)

    _, score = _score(8, model)
    cases = [
        (samplers.EulerMaruyama(10), 10),
        (samplers.ReverseSDE(diffrax.ShARK(), 6), 12),
        (samplers.ProbabilityFlow(diffrax.Heun(), 7, denoise=True), 15),
        (samplers.ProbabilityFlow(), None),  # adaptive, FSAL: 6 per attempted step + 1
        (samplers.DDIM(9), 9),
        (samplers.PredictorCorrector(5, corrector_steps=2), 15),
    ]
    for sampler, expected in cases:
        calls[0] = 0
        result = compiled(lambda k: sampler.sample(score, k, (1, 8)), jr.key(0))(jr.key(0))
        jax.effects_barrier()
        assert int(result.num_evaluations) == calls[0], (sampler, calls[0])
        if expected is not None:
            assert calls[0] == expected, sampler
        else:
            assert calls[0] == 6 * int(result.num_steps) + 1


def test_no_loop_unrolled_under_jit():
    _, score = _score(8)

    def count(jaxpr):
        total = 0
        for eqn in jaxpr.eqns:
            total += 1
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        total += count(sub.jaxpr)
                    elif hasattr(sub, "eqns"):
                        total += count(sub)
        return total

    def size(sampler):
        return count(jax.make_jaxpr(lambda k: sampler.sample(score, k, (1, 8)).samples)(jr.key(0)).jaxpr)

    for make in (samplers.EulerMaruyama, samplers.DDIM, samplers.PredictorCorrector):
        assert size(make(num_steps=5)) == size(make(num_steps=500)), make


def test_noise_has_the_prior_law(getkey):
    # sqrt(N) C^{1/2} applied to unit point noise has the per-mode variances of prior.sample.
    prior = Matern(2, 2.0, 2 * np.pi)
    z = jr.normal(getkey(), (4000, 1, 12, 12))
    noise = jax.vmap(lambda w: prior.from_white_noise(w))(z)
    draws = jax.vmap(lambda k: prior.sample(k, (1, 12, 12)))(jr.split(getkey(), 4000))
    lam = np.asarray(prior.eigenvalues((12, 12)))
    kept = lam > 0
    for u in (noise, draws):
        power = np.mean(np.abs(np.asarray(jax.vmap(sdeflow.fourier)(u))[:, 0]) ** 2, 0)
        ratio = power[kept] / lam[kept]
        assert abs(np.mean(ratio) - 1) < 0.02 and np.all(np.abs(ratio - 1) < 0.15)


def test_adaptive_stochastic_runge_kutta_reproduces_gaussian_law():
    # ShARK with a PID controller and a Brownian tree. The batch is carried as 2000 channels of one
    # field (the law acts per channel), so all samples share the adaptive steps.
    oracle = gaussian_oracle(16)
    batch = samplers.GaussianOracle(oracle.sde, jnp.tile(oracle.mean, (2000, 1)), oracle.covariance)
    score = samplers.PreconditionedScore(batch, oracle.sde, Epsilon())
    sampler = samplers.ReverseSDE(diffrax.ShARK(), None, rtol=1e-2, atol=1e-2)
    # Compiled with LLVM's optimisations (the suite turns them off to compile faster): the Brownian
    # tree's many small draws run ~8x slower without them (20 s against 2.4 s on 2 cores).
    run = jax.jit(lambda k: sampler.sample(score, k, (2000, 16))).lower(jr.key(3))
    result = run.compile({"xla_backend_optimization_level": 2})(jr.key(3))
    assert int(result.num_evaluations) == 2 * int(result.num_steps)
    coefficients = np.fft.rfft(np.asarray(result.samples), axis=-1) / 16
    kept = np.asarray(sdeflow.kept_modes((16,)))
    ratio = (np.var(coefficients, 0) / np.where(kept, oracle.variances(oracle.sde.t0, (16,)), 1.0))[kept]
    assert np.all(np.abs(ratio - 1) < 0.15) and abs(np.mean(ratio) - 1) < 0.05, ratio


def test_bad_configuration_raises():
    with pytest.raises(TypeError, match="spacing"):
        samplers.DDIM(10, spacing="cosine")
    with pytest.raises(ValueError, match="num_steps"):
        samplers.DDIM(0)
    with pytest.raises(ValueError, match="error estimate"):
        samplers.ProbabilityFlow(diffrax.Euler(), None)
    with pytest.raises(TypeError, match="parameterisation"):
        samplers.PreconditionedScore(lambda t, x: x, gaussian_oracle(8).sde, "noise")


class _AnyGrid(eqx.Module):
    """A noise estimate on any grid (the oracles know one grid only), for the coarse-to-fine sampler."""

    def __call__(self, t, x):
        return 0.5 * x


def _callbacks(fn, *args) -> int:
    """Host callbacks in the compiled program of `fn` (what keeps it out of JAX's persistent cache)."""
    return jax.jit(fn).lower(*args).as_text().count("callback")


def test_fixed_steps_match_diffrax_step_to_without_host_callbacks(monkeypatch):
    # StepToGrid steps to the same times as diffrax.StepTo, so the samples agree to float32's
    # rounding (XLA may fold constants through StepToGrid's times that StepTo's checks hide from
    # it), in every variables and spacing, from t1 or a later start, with one step or several
    # (StepTo checks at run time that the grid ends where the solve does); with throw=False the
    # program holds no host callback (StepTo's two checks add four, the solve's throw two).
    from sdeflow.samplers import base

    _, score = _score(8)
    key = jr.key(3)
    cases = [
        (samplers.PredictorCorrector(6, corrector_steps=1), None),
        (samplers.ProbabilityFlow(diffrax.Euler(), 1, variables=samplers.NoiseLevel(),
                                  spacing=samplers.LogSNRSpacing()), 0.3),
        (samplers.ProbabilityFlow(diffrax.Heun(), 3, variables=samplers.LogNoiseLevel()), None),
    ]

    def draw(sampler, t_start, throw=True):
        return lambda k: sampler.sample(score, k, (1, 8), t_start=t_start, throw=throw).samples

    ours = [compiled(draw(*case), key)(key) for case in cases]
    for case in cases:
        assert _callbacks(draw(*case, throw=False), key) == 0, case
        assert _callbacks(draw(*case), key) > 0  # throw=True: the solve's check at run time
    for make in (samplers.EulerMaruyama, samplers.DDIM):
        assert _callbacks(lambda k: make(5).sample(score, k, (1, 8), throw=False).samples, key) == 0, make
    observed = samplers.Inpainting(jnp.arange(8)[None] < 4, jnp.zeros((1, 8)))  # conditional sampling
    assert _callbacks(lambda k: cases[0][0].sample(score, k, (1, 8), observation=observed, throw=False).samples,
                      key) == 0
    coarse_to_fine = samplers.MultilevelSampler(samplers.EulerMaruyama(4), samplers.EulerMaruyama(4), (4,), 0.3)
    any_grid = samplers.PreconditionedScore(_AnyGrid(), score.sde, Epsilon())
    assert _callbacks(lambda k: coarse_to_fine.sample(any_grid, k, (1, 8), throw=False).samples, key) == 0

    def with_step_to(*args, **kwargs):
        stepping = base.fixed_stepping(*args, **kwargs)
        return eqx.tree_at(lambda s: s.controller, stepping, diffrax.StepTo(stepping.controller.ts))

    for module in ("predictor_corrector", "probability_flow"):  # the modules (the package re-exports a function)
        monkeypatch.setattr(importlib.import_module(f"sdeflow.samplers.{module}"), "fixed_stepping", with_step_to)
    theirs = [compiled(draw(*case), key)(key) for case in cases]
    assert _callbacks(draw(*cases[0], throw=False), key) > 0  # StepTo's checks
    for case, a, b in zip(cases, ours, theirs):  # measured: equal, and 1.2e-7 apart (|x| ~ 1)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6, err_msg=str(case))
        assert np.std(np.asarray(a)) > 0.1
    with pytest.raises(ValueError, match="strictly increasing or decreasing"):
        samplers.StepToGrid(jnp.array([0.0, 0.5, 0.4, 1.0]))


def test_step_to_grid_ends_on_the_solves_end_point():
    # a grid that ends an ulp short of the solve's t1 still ends there, in as many steps: one step
    # or several (dy/dt = 1 from y = 0, so y(t1) = t1)
    term = diffrax.ODETerm(lambda t, y, args: jnp.ones_like(y))
    short = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
    for ts in ([0.0, short], [0.0, 0.5, short]):
        solution = diffrax.diffeqsolve(
            term, diffrax.Euler(), 0.0, 1.0, None, jnp.zeros(()), max_steps=len(ts) - 1, throw=False,
            stepsize_controller=samplers.StepToGrid(jnp.asarray(ts, jnp.float32)))
        assert bool(solution.result == diffrax.RESULTS.successful), ts
        assert float(solution.ts[-1]) == 1.0 and float(solution.ys[-1]) == 1.0, ts


def test_a_failed_solve_is_reported_by_its_result():
    # throw=False: an adaptive solve out of max_steps comes back marked, and check_results raises
    # diffrax's message on the host; a successful batch passes.
    _, score = _score(8)
    short = samplers.ProbabilityFlow(max_steps=2)
    keys = jr.split(jr.key(0), 3)
    failed = jax.jit(jax.vmap(lambda k: short.sample(score, k, (1, 8), throw=False)))(keys)
    assert np.all(np.asarray(failed.result == diffrax.RESULTS.max_steps_reached))
    with pytest.raises(RuntimeError, match=r"drawing failed for 3 of 3 samples: The maximum number of solver steps"):
        samplers.check_results(failed.result, "drawing")
    fine = jax.jit(jax.vmap(lambda k: samplers.ProbabilityFlow().sample(score, k, (1, 8), throw=False)))(keys)
    samplers.check_results(fine.result)
    # coarse to fine: a failure of either phase is the result's
    score = samplers.PreconditionedScore(_AnyGrid(), score.sde, Epsilon())
    for first, second in ((short, samplers.ProbabilityFlow()), (samplers.ProbabilityFlow(), short)):
        two = samplers.MultilevelSampler(first, second, (4,), 0.3)
        result = jax.jit(lambda k: two.sample(score, k, (1, 8), throw=False).result)(keys[0])
        with pytest.raises(RuntimeError, match="1 of 1 samples: The maximum number"):
            samplers.check_results(result)
    with pytest.raises(Exception, match="maximum number of solver steps"):  # throw=True: at run time
        jax.block_until_ready(jax.jit(lambda k: short.sample(score, k, (1, 8)).samples)(keys[0]))


@pytest.mark.parametrize("times", [dict(t_start=5.0), dict(t_end=-0.5), dict(t_start=0.1, t_end=0.5)])
def test_times_outside_the_sde_or_the_wrong_way_round_are_refused(times):
    """Times beyond [t0, t1] gave NaN samples and t_end above t_start a meaningless one."""
    oracle = gaussian_oracle(8)
    score = samplers.PreconditionedScore(oracle, oracle.sde, Epsilon())
    with pytest.raises(ValueError, match="need t0 <= t_end < t_start <= t1"):
        samplers.EulerMaruyama(4).sample(score, jr.key(0), (1, 8), **times)
    if times.get("t_start", 1.0) > 1.0:  # an edit from beyond t1 likewise
        with pytest.raises(ValueError, match="need t0 <= t_end < t_start <= t1"):
            samplers.edit(samplers.DDIM(4), score, jr.key(0), jnp.zeros((1, 8)), times["t_start"])


def test_a_score_evaluated_where_the_noise_vanishes_is_refused():
    """A fixed schedule with t0 = 0 has s(0) = 0, and the score -eps / s there is inf: a solver that
    evaluates the end of its last step (Heun, Tsit5, ShARK) gave non-finite samples silently; one
    that evaluates the start of each step only still samples, to finite fields."""
    sde = sdeflow.sde.VPSDE(Matern(1, s=1.0), t0=0.0)
    score = samplers.PreconditionedScore(lambda t, x: x, sde, Epsilon())
    for sampler in (samplers.ProbabilityFlow(diffrax.Heun(), 4), samplers.ProbabilityFlow(),
                    samplers.ReverseSDE(diffrax.ShARK(), 4)):
        with pytest.raises(ValueError, match=r"evaluates the score at t = 0.0, where s\(t\) = 0.0"):
            sampler.sample(score, jr.key(0), (1, 8))
    for sampler in (samplers.EulerMaruyama(4), samplers.DDIM(4), samplers.PredictorCorrector(4),
                    samplers.ProbabilityFlow(diffrax.Euler(), 4)):
        assert bool(jnp.all(jnp.isfinite(sampler.sample(score, jr.key(0), (1, 8)).samples)))
    # stopping before t0 is allowed
    assert bool(jnp.all(jnp.isfinite(samplers.ProbabilityFlow(diffrax.Heun(), 4).sample(
        score, jr.key(0), (1, 8), t_end=0.01).samples)))


def test_adaptive_controls_and_step_counts_are_checked():
    """A negative tolerance accepted every step of an adaptive solve, and `max_steps` <= 0 or a
    grid of 0 steps failed deep inside diffrax or numpy."""
    with pytest.raises(ValueError, match="`rtol` must be a positive finite number, got -1.0"):
        samplers.ProbabilityFlow(rtol=-1.0, atol=0.0)
    with pytest.raises(ValueError, match="`atol` must be a positive finite number"):
        samplers.ReverseSDE(diffrax.ShARK(), None, atol=0.0)
    with pytest.raises(ValueError, match="`max_steps` must be a positive integer, got -5"):
        samplers.ProbabilityFlow(max_steps=-5)
    with pytest.raises(ValueError, match="`brownian_tol` must lie in \\(0, 1\\)"):
        samplers.ReverseSDE(diffrax.ShARK(), None, brownian_tol=0.0)
    # a fractional corrector count ran int(1.5) = 1 step silently (here the suite's type checks
    # refuse it first; without them the sampler's own check does)
    with pytest.raises(Exception, match="corrector_steps"):
        samplers.PredictorCorrector(4, corrector_steps=1.5)
    for steps in (-1, True):
        with pytest.raises(ValueError, match="`corrector_steps` must be an integer >= 0"):
            samplers.PredictorCorrector(4, corrector_steps=steps)
    assert samplers.PredictorCorrector(4, corrector_steps=0).corrector_steps == 0
    oracle = gaussian_oracle(8)
    with pytest.raises(ValueError, match="`num_steps` must be a positive integer, got 0"):
        samplers.time_grid(oracle.sde, 0, 1.0, 0.001)
