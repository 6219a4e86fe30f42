"""Numerical properties of the samplers: convergence orders, DDIM against the ODE, chains."""

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from test_samplers import compiled, gaussian_oracle

import sdeflow
from sdeflow import samplers
from sdeflow.parameterisation import Epsilon


LOG_SNR = samplers.LogSNRSpacing()


def _score(n=16, model=None):
    oracle = gaussian_oracle(n)
    return oracle, samplers.PreconditionedScore(oracle if model is None else model, oracle.sde, Epsilon())


def test_fixed_step_ode_convergence_orders():
    # Fixed terminal state; reference: Tsit5 at tight tolerance. Steps equal in log-SNR.
    oracle, score = _score(16)
    x1 = oracle.sde.terminal_sample(jr.key(0), (1, 16))

    def solve(sampler):
        return compiled(lambda x: sampler.sample(score, jr.key(1), x_start=x).samples, x1)(x1)

    reference = solve(samplers.ProbabilityFlow(rtol=1e-7, atol=1e-7))

    def errors(make):
        out = []
        for steps in (16, 32, 64):
            y = solve(make(steps))
            out.append(float(jnp.sqrt(jnp.mean((y - reference) ** 2))))
        return np.array(out)

    euler = errors(lambda k: samplers.ProbabilityFlow(diffrax.Euler(), k, spacing=LOG_SNR))
    heun = errors(lambda k: samplers.ProbabilityFlow(diffrax.Heun(), k, spacing=LOG_SNR))
    ddim = errors(lambda k: samplers.DDIM(k, spacing=LOG_SNR))
    # Observed orders log2(e_k / e_2k) (measured: Euler 1.2, 1.1; Heun 1.94, 1.98; DDIM 1.0, 1.0).
    assert np.all((np.log2(euler[:-1] / euler[1:]) > 0.8) & (np.log2(euler[:-1] / euler[1:]) < 1.5)), euler
    assert np.all((np.log2(heun[:-1] / heun[1:]) > 1.7) & (np.log2(heun[:-1] / heun[1:]) < 2.3)), heun
    # DDIM solves the same probability-flow ODE: first order, converging to its solution.
    assert np.all((np.log2(ddim[:-1] / ddim[1:]) > 0.8) & (np.log2(ddim[:-1] / ddim[1:]) < 1.3)), ddim
    assert ddim[-1] < 0.02


def test_ddim_is_deterministic():
    oracle, score = _score(16)
    x1 = oracle.sde.terminal_sample(jr.key(0), (1, 16))
    keys = jr.split(jr.key(1), 2)

    def run(sampler):
        fn = jax.vmap(lambda k: sampler.sample(score, k, x_start=x1).samples)
        return np.asarray(compiled(fn, keys)(keys))

    a, b = run(samplers.DDIM(20))
    assert np.array_equal(a, b)
    # Stochastic samplers do depend on the key.
    c, d = run(samplers.EulerMaruyama(20))
    assert np.max(np.abs(c - d)) > 1e-3


def test_chain_and_save_ts():
    _, score = _score(16)
    sampler = samplers.EulerMaruyama(12)
    full = sampler.sample(score, jr.key(0), (1, 16), chain=True)
    assert full.chain.shape == (12, 1, 16) and full.ts.shape == (12,)
    assert np.allclose(full.chain[-1], full.samples) and np.all(np.diff(np.asarray(full.ts)) < 0)
    assert np.isclose(float(full.ts[-1]), score.sde.t0)
    # The same key with save_ts gives the same path: save at two of the step times.
    ts = full.ts[jnp.array([3, 7])]
    saved = sampler.sample(score, jr.key(0), (1, 16), save_ts=ts)
    assert np.allclose(saved.chain, full.chain[jnp.array([3, 7])], atol=1e-6)
    assert np.allclose(saved.samples, full.samples, atol=1e-6)
    # Adaptive steps: the chain holds the accepted steps, then inf padding up to max_steps.
    adaptive = samplers.ProbabilityFlow(max_steps=64).sample(score, jr.key(0), (1, 16), chain=True)
    finite = np.all(np.isfinite(np.asarray(adaptive.chain)), axis=(1, 2))
    assert adaptive.chain.shape == (64, 1, 16) and 0 < finite.sum() <= int(adaptive.num_steps)
    assert np.array_equal(np.asarray(adaptive.chain)[finite.sum() - 1], np.asarray(adaptive.samples))


def test_noise_level_variables():
    # In y = (x - b)/m against sigma = s/m the probability-flow ODE is dy/dsigma = eps: Euler's method
    # there is DDIM exactly, and every variables choice solves the same ODE.
    oracle, score = _score(16)
    x1 = oracle.sde.terminal_sample(jr.key(0), (1, 16))

    def solve(sampler, t_end=None):
        return compiled(lambda x: sampler.sample(score, jr.key(1), x_start=x, t_end=t_end).samples, x1)(x1)

    for steps in (10,):
        sigma = samplers.NoiseLevel()
        euler = solve(samplers.ProbabilityFlow(diffrax.Euler(), steps, spacing=LOG_SNR, variables=sigma))
        ddim = solve(samplers.DDIM(steps, spacing=LOG_SNR))
        assert float(jnp.max(jnp.abs(euler - ddim))) < 2e-5  # measured 1.8e-6 (|x| ~ 1.6)
        # In log sigma, Euler is a different first-order method: not DDIM.
        log_sigma = samplers.LogNoiseLevel()
        log_euler = solve(samplers.ProbabilityFlow(diffrax.Euler(), steps, spacing=LOG_SNR, variables=log_sigma))
        assert float(jnp.max(jnp.abs(log_euler - ddim))) > 1e-2
    reference = solve(samplers.ProbabilityFlow(rtol=1e-7, atol=1e-7))
    for variables in (samplers.NoiseLevel(), samplers.LogNoiseLevel()):
        y = solve(samplers.ProbabilityFlow(rtol=1e-6, atol=1e-6, variables=variables))
        assert float(jnp.sqrt(jnp.mean((y - reference) ** 2))) < 1e-4  # measured ~1e-5 at 1e-5
    # Stopping early: the same solution at the intermediate time.
    t_mid = 0.3
    mid_t, mid_sigma = (solve(samplers.ProbabilityFlow(rtol=1e-6, atol=1e-6, variables=v), t_mid)
                        for v in (samplers.ReversedTime(), samplers.NoiseLevel()))
    assert float(jnp.max(jnp.abs(mid_t - mid_sigma))) < 1e-3


def test_noise_level_variables_chain_and_conditioning():
    _, score = _score(16)
    sampler = samplers.ProbabilityFlow(max_steps=64, variables=samplers.NoiseLevel())
    result = sampler.sample(score, jr.key(0), (1, 16), chain=True)
    ts, chain = np.asarray(result.ts), np.asarray(result.chain)
    finite = np.isfinite(ts)
    k = finite.sum()
    assert 0 < k <= int(result.num_steps) and np.all(np.isfinite(chain[:k])) and np.all(~np.isfinite(chain[k:]))
    # Times map back to t (decreasing, ending at t0) and states back to x.
    assert np.all(np.diff(ts[:k]) < 0) and abs(ts[k - 1] - score.sde.t0) < 1e-5
    assert np.allclose(chain[k - 1], np.asarray(result.samples), atol=1e-6)
    observation = samplers.Inpainting(jnp.ones((1, 16), bool), jnp.zeros((1, 16)))
    with pytest.raises(ValueError, match="variables"):
        samplers.ProbabilityFlow(diffrax.Heun(), 10, variables=samplers.NoiseLevel()).sample(
            score, jr.key(0), (1, 16), observation=observation)
    with pytest.raises(TypeError, match="variables"):
        samplers.ProbabilityFlow(variables="x")


def test_ddim_eta_zero_is_deterministic_and_eta_one_is_ancestral():
    """`eta=0` does not depend on the noise key; `eta=1` has the marginal of the ancestral (DDPM)
    sampler fed the exact score, computed here per Fourier mode from the forward process's
    posterior $q(x_1 | x_0^{noisy}, x_0)$ (mean $(\\tau^2 m_1 \\hat x_0 + a s_1^2 x_0^{noisy}) / s_0^2$,
    variance $s_1^2 \\tau^2 / s_0^2$, $a = m_0 / m_1$, $\\tau^2 = s_0^2 - a^2 s_1^2$), for several step
    counts. Few steps make it differ from the data law and from `eta=0`, beyond Monte-Carlo error."""
    oracle, score = _score(16)
    sde, n, count = oracle.sde, 16, 2000
    x1 = oracle.sde.terminal_sample(jr.key(0), (1, n))
    keys = jr.split(jr.key(1), 2)
    fn = jax.vmap(lambda k: samplers.DDIM(5, eta=0.0).sample(score, k, x_start=x1).samples)
    a, b = np.asarray(compiled(fn, keys)(keys))
    np.testing.assert_array_equal(a, b)
    fn = jax.vmap(lambda k: samplers.DDIM(5, eta=0.5).sample(score, k, x_start=x1).samples)
    a, b = np.asarray(compiled(fn, keys)(keys))
    assert np.max(np.abs(a - b)) > 1e-3

    lam = np.asarray(sde.prior.eigenvalues((n,)), np.float64)
    data = np.asarray(oracle.covariance.eigenvalues((n,)), np.float64)
    kept = np.asarray(sdeflow.kept_modes((n,)))
    for steps in (3, 8):
        ts = np.asarray(samplers.time_grid(sde, steps, sde.t1, sde.t0, samplers.UniformSpacing()), np.float64)
        variance = {}
        for eta in (0.0, 1.0):
            m, s = (np.asarray(v, np.float64) for v in sde.marginal(ts[0]))
            v = m**2 * data + s**2 * lam  # the law at t1
            for t0, t1 in zip(ts[:-1], ts[1:]):
                m0, s0 = (float(c) for c in sde.marginal(t0))
                m1, s1 = (float(c) for c in sde.marginal(t1))
                total = m0**2 * data + s0**2 * lam
                h = m0 * data / np.where(total > 0, total, 1.0)  # x0_hat = h (x - mean), per mode
                a_, tau2 = m0 / m1, s0**2 - (m0 / m1) ** 2 * s1**2
                if eta == 1.0:
                    gain, noise = (tau2 * m1 * h + a_ * s1**2) / s0**2, s1**2 * tau2 / s0**2
                else:  # x1 = m1 x0_hat + s1 eps_hat, eps_hat = (x - m0 x0_hat) / s0
                    gain, noise = m1 * h + s1 * (1 - m0 * h) / s0, 0.0
                v = gain**2 * v + noise * lam
            variance[eta] = v[kept]
        keys = jr.split(jr.key(steps), count)
        fn = jax.vmap(lambda k: samplers.DDIM(steps, eta=1.0).sample(score, k, (1, n)).samples)
        x = np.asarray(compiled(fn, keys)(keys))
        coefficients = np.fft.rfft(x[:, 0], axis=-1) / n
        sample_variance = np.mean(np.abs(coefficients - coefficients.mean(0)) ** 2, 0)[kept]
        ratio = sample_variance / variance[1.0]
        # per mode within 15% (MC sd 2.2-3.2%), on average within 3%
        assert np.all(np.abs(ratio - 1) < 0.15) and abs(np.mean(ratio) - 1) < 0.03, (steps, ratio)
        separation = variance[0.0] / variance[1.0]
        assert abs(np.mean(separation) - 1) > 0.1, (steps, separation)
    with pytest.raises(ValueError, match="eta"):
        samplers.DDIM(5, eta=1.5)


def test_ddim_clip_keeps_the_estimate_in_range_and_steps_consistently():
    """`clip=(lo, hi)`: a range wider than every estimate changes nothing; a network whose noise is
    off by a constant drives unclipped DDIM far out of the data's range while every clipped step
    lands on $m_1 \\mathrm{clip}(\\hat x_0) + s_1 (x_0 - m_0 \\mathrm{clip}(\\hat x_0)) / s_0$, written out
    here by hand."""
    oracle, score = _score(16)
    sde = oracle.sde
    x1 = sde.terminal_sample(jr.key(0), (1, 16))

    def solve(sampler, score):
        return np.asarray(compiled(lambda x: sampler.sample(score, jr.key(1), x_start=x).samples, x1)(x1))

    np.testing.assert_allclose(solve(samplers.DDIM(8, clip=(-1e6, 1e6)), score), solve(samplers.DDIM(8), score),
                               rtol=1e-6, atol=1e-6)
    wrong = samplers.PreconditionedScore(lambda t, x: oracle(t, x) + 3.0, sde, Epsilon())
    free = solve(samplers.DDIM(8), wrong)
    assert np.max(np.abs(free)) > 10.0
    clipped = solve(samplers.DDIM(8, clip=(-1.0, 1.0)), wrong)
    ts = np.asarray(samplers.time_grid(sde, 8, sde.t1, sde.t0, samplers.UniformSpacing()), np.float64)
    x = np.asarray(x1, np.float64)
    for t0, t1 in zip(ts[:-1], ts[1:]):
        m0, s0 = (float(c) for c in sde.marginal(t0))
        m1, s1 = (float(c) for c in sde.marginal(t1))
        eps = np.asarray(wrong.epsilon(t0, jnp.asarray(x, jnp.float32)), np.float64)
        x0 = np.clip((x - s0 * eps) / m0, -1.0, 1.0)
        x = m1 * x0 + s1 * (x - m0 * x0) / s0
    np.testing.assert_allclose(clipped, x, rtol=1e-4, atol=1e-4)
    assert np.max(np.abs(clipped)) < 1.5
    with pytest.raises(ValueError, match="clip"):
        samplers.DDIM(5, clip=(1.0, -1.0))
