"""Conditional sampling: inpainting and super-resolution by replacement, and editing (SDEdit)."""

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
from sdeflow.priors import Matern
from sdeflow.sde import VPSDE


def _oracle_2d(n):
    sde = VPSDE(Matern(2, 2.0, 2 * np.pi))
    xy = sdeflow.coordinates((n, n))
    mean = jnp.sin(2 * jnp.pi * xy[:1]) * jnp.cos(2 * jnp.pi * xy[1:])
    return samplers.GaussianOracle(sde, mean, Matern(2, 2.5, 8.0, variance=0.5))


def _batch(sampler, score, shape, count, **kwargs):
    keys = jr.split(jr.key(7), count)
    return compiled(jax.vmap(lambda k: sampler.sample(score, k, shape, **kwargs)), keys)(keys)


@pytest.mark.parametrize(
    "sampler, per_step",
    [(samplers.EulerMaruyama(50), 1), (samplers.DDIM(30), 1), (samplers.ReverseSDE(diffrax.ShARK(), 20), 2)],
    ids=["euler_maruyama", "ddim", "shark"],
)
def test_inpainting_keeps_observed_values(sampler, per_step):
    oracle = gaussian_oracle(16)
    score = samplers.PreconditionedScore(oracle, oracle.sde, Epsilon())
    observed = oracle.sample(jr.key(1), oracle.sde.t0)
    mask = (jnp.arange(16) < 6)[None]
    result = _batch(sampler, score, (1, 16), 64, observation=samplers.Inpainting(mask, observed))
    x = np.asarray(result.samples)[:, 0]
    assert np.array_equal(x[:, :6], np.broadcast_to(np.asarray(observed)[0, :6], (64, 6)))
    assert np.all(np.isfinite(x)) and np.min(np.std(x[:, 6:], 0)) > 1e-2  # the rest is random
    assert np.all(np.asarray(result.num_evaluations) == per_step * sampler.num_steps)


def _point_operator(multiplier, n):
    """The matrix on the point values of the 1-d `n`-grid of the Fourier multiplier `multiplier`
    (`rfftn` layout), restricted to the kept modes (float64). With `multiplier` the per-mode
    variances $v_k$ of a law, `n` times it is the covariance of the law's point values."""
    k = np.arange(n // 2 + 1)
    weights = np.where(k == 0, 1.0, 2.0) * np.asarray(sdeflow.kept_modes((n,)))  # k and -k
    lag = np.arange(n)[:, None] - np.arange(n)[None]
    multiplier = np.where(weights > 0, np.asarray(multiplier, np.float64), 0.0)
    return np.sum(weights * multiplier * np.cos(2 * np.pi * k * lag[..., None] / n), -1) / n


def _replacement_law(oracle, num_steps, mask, y, replace=True):
    """The exact mean and covariance (float64) of the Euler–Maruyama chain with replacement, fed the
    exact score of Gaussian data on the 1-d grid: every step is affine in the state plus Gaussian
    noise, $x \\leftarrow x + \\Delta\\tau\\, \\beta (x/2 + S (x - m \\mu))
    + \\sqrt\\beta\\, C^{1/2} \\Delta W$ with $S = -C \\Sigma_t^{-1}$ (VP SDE, $b = 0$), and
    replacement sets the observed points to $m(t) y + s(t) \\xi$, $\\xi \\sim N(0, C)$, independent
    of everything else. `replace=False` gives the law without replacement, which the test must be
    able to tell apart."""
    sde, n = oracle.sde, y.shape[-1]
    lam = np.asarray(sde.prior.eigenvalues((n,)), np.float64)
    prior = n * _point_operator(lam, n)
    mu, y = np.asarray(oracle.mean, np.float64)[0], np.asarray(y, np.float64)[0]
    both = mask[:, None] & mask[None]

    def marginal(t):
        return (float(v) for v in sde.marginal(jnp.float32(t)))

    def replaced(mean, cov, t):
        m, s = marginal(t)
        mean = np.where(mask, m * y, mean)
        cov = np.where(mask[:, None] | mask[None], 0.0, cov) + np.where(both, s**2 * prior, 0.0)
        return mean, cov

    ts = np.asarray(samplers.time_grid(sde, num_steps, jnp.float32(sde.t1), jnp.float32(sde.t0)))
    _, s1 = marginal(ts[0])
    mean, cov = np.zeros(n), s1**2 * prior
    if replace:
        mean, cov = replaced(mean, cov, ts[0])
    for t, t_next in zip(ts[:-1].astype(np.float64), ts[1:].astype(np.float64), strict=True):
        beta = float(sde.diffusion(jnp.float32(t))) ** 2
        m, _ = marginal(t)
        v = np.asarray(oracle.variances(jnp.float32(t), (n,)), np.float64)
        score = -_point_operator(lam / np.where(v > 0, v, 1.0), n)
        step = np.eye(n) + (t - t_next) * beta * (0.5 * np.eye(n) + score)
        mean = step @ mean - (t - t_next) * beta * score @ (m * mu)
        cov = step @ cov @ step.T + (t - t_next) * beta * prior
        if replace:
            mean, cov = replaced(mean, cov, t_next)
    return mean, cov


def test_inpainting_has_the_law_of_replacement():
    """The unobserved values have the law of the replacement chain, computed exactly in float64
    (`_replacement_law`): every point's mean within 5 standard errors and variance within 5
    standard deviations of a sample variance ($5 \\sqrt{2 / n}$ = 11% for n = 4000 samples).

    This is the law the scheme defines, not the exact Gaussian conditional of the data given the
    observed points: replacement (Song et al. 2021) is an approximation. With every other point of
    16 observed, its variances are about 190 times the conditional ones even with 1600 steps
    (and its means hundreds of standard errors away). Without the replacement the variances would
    be a sixth of the chain's, which the test checks it would catch."""
    n, num_samples, num_steps = 16, 4000, 100
    oracle = gaussian_oracle(n)
    score = samplers.PreconditionedScore(oracle, oracle.sde, Epsilon())
    y = oracle.sample(jr.key(1), oracle.sde.t0)
    mask = np.arange(n) % 2 == 0
    observation = samplers.Inpainting(jnp.asarray(mask)[None], y)
    result = _batch(samplers.EulerMaruyama(num_steps), score, (1, n), num_samples,
                    observation=observation)
    x = np.asarray(result.samples, np.float64)[:, 0, ~mask]
    mean, cov = _replacement_law(oracle, num_steps, mask, y)
    mean, var = mean[~mask], np.diag(cov)[~mask]
    se, var_tol = np.sqrt(var / num_samples), 5 * np.sqrt(2 / num_samples)

    def fits(sample_mean, sample_var):
        return (np.all(np.abs(sample_mean - mean) < 5 * se)
                and np.all(np.abs(sample_var / var - 1) < var_tol))

    assert fits(x.mean(0), x.var(0)), ((x.mean(0) - mean) / se, x.var(0) / var)
    free_mean, free_cov = _replacement_law(oracle, num_steps, mask, y, replace=False)
    assert not fits(free_mean[~mask], np.diag(free_cov)[~mask])


@pytest.mark.parametrize(
    "sampler",
    [samplers.EulerMaruyama(50), samplers.DDIM(30), samplers.PredictorCorrector(30)],
    ids=["euler_maruyama", "ddim", "predictor_corrector"],
)
def test_replacement_inserts_the_diffused_observation_after_every_step(sampler):
    """After each step to $t$ (the chain, before `sample` writes $y$ itself into the result), the
    observed points hold $m(t) y + s(t) \\xi$ with $\\xi \\sim N(0, C)$ drawn afresh: standardised
    by $s(t)$, their mean is zero at every step and point (within 5 standard errors, n = 2000),
    their variances at every step and point are those of $C$ (within $5 \\sqrt{2 / n}$ = 16%), their
    covariance pooled over the steps is $C$ (every entry within 5 standard errors) and consecutive
    steps are uncorrelated (within 5 standard errors of zero). A step that kept the solver's own
    values would have variances of the data's size, $10^4$ times $s(t_0)^2$, at the last steps."""
    n, num_samples, observed = 16, 2000, 6
    oracle = gaussian_oracle(n)
    sde = oracle.sde
    score = samplers.PreconditionedScore(oracle, sde, Epsilon())
    y = oracle.sample(jr.key(1), sde.t0)
    mask = (jnp.arange(n) < observed)[None]
    result = _batch(sampler, score, (1, n), num_samples, observation=samplers.Inpainting(mask, y),
                    chain=True)
    ts = np.asarray(result.ts[0])
    assert ts.shape == (sampler.num_steps,) and ts[-1] == np.float32(sde.t0)
    m, s = (np.asarray(v, np.float64) for v in jax.vmap(sde.marginal)(ts))
    chain = np.asarray(result.chain, np.float64)[:, :, 0, :observed]  # (samples, steps, points)
    z = (chain - m[:, None] * np.asarray(y, np.float64)[0, :observed]) / s[:, None]
    lam = np.asarray(sde.prior.eigenvalues((n,)), np.float64)
    prior = (n * _point_operator(lam, n))[:observed, :observed]
    sd = np.sqrt(np.diag(prior))
    assert np.all(np.abs(z.mean(0)) < 5 * sd / np.sqrt(num_samples)), z.mean(0) / sd
    ratio = z.var(0) / np.diag(prior)
    assert np.all(np.abs(ratio - 1) < 5 * np.sqrt(2 / num_samples)), ratio
    pooled = z.reshape(-1, observed)
    cov = pooled.T @ pooled / len(pooled)  # the mean is known: zero
    cov_se = np.sqrt((np.outer(sd**2, sd**2) + prior**2) / len(pooled))
    assert np.all(np.abs(cov - prior) < 5 * cov_se), (cov - prior) / cov_se
    lagged = np.einsum("bki,bkj->ij", z[:, 1:], z[:, :-1]) / (num_samples * (len(ts) - 1))
    lag_se = np.outer(sd, sd) / np.sqrt(num_samples * (len(ts) - 1))
    assert np.all(np.abs(lagged) < 5 * lag_se), lagged / lag_se


def test_inpainting_on_a_2d_grid():
    oracle = _oracle_2d(8)
    score = samplers.PreconditionedScore(oracle, oracle.sde, Epsilon())
    observed = oracle.sample(jr.key(2), oracle.sde.t0)
    mask = jr.bernoulli(jr.key(3), 0.3, (1, 8, 8))
    result = _batch(samplers.EulerMaruyama(40), score, (1, 8, 8), 16, observation=samplers.Inpainting(mask, observed))
    x = np.asarray(result.samples)
    m = np.broadcast_to(np.asarray(mask), x.shape)
    assert np.array_equal(x[m], np.broadcast_to(np.asarray(observed), x.shape)[m])


@pytest.mark.parametrize("coarse, fine", [((8, 8), (16, 16)), ((9,), (27,))])
def test_super_resolution_restricts_to_the_coarse_field(coarse, fine):
    oracle = _oracle_2d(fine[0]) if len(fine) == 2 else gaussian_oracle(fine[0])
    score = samplers.PreconditionedScore(oracle, oracle.sde, Epsilon())
    truth = oracle.sample(jr.key(4), oracle.sde.t0)
    low = sdeflow.restrict(truth, coarse)
    observation = samplers.SuperResolution(low, fine)
    result = _batch(samplers.EulerMaruyama(40), score, (1, *fine), 8, observation=observation)
    restricted = jax.vmap(lambda u: sdeflow.restrict(u, coarse))(result.samples)
    assert float(jnp.max(jnp.abs(restricted - low))) < 1e-5 * float(jnp.max(jnp.abs(low)))
    # The fine modes are drawn, not zero: samples differ beyond the coarse grid's frequencies.
    detail = result.samples - jax.vmap(lambda u: sdeflow.prolong(sdeflow.restrict(u, coarse), fine))(result.samples)
    assert float(jnp.min(jnp.std(detail, axis=0).mean())) > 1e-3


def test_edit_from_an_intermediate_time():
    oracle = gaussian_oracle(16)
    score = samplers.PreconditionedScore(oracle, oracle.sde, Epsilon())
    x0 = oracle.sample(jr.key(5), oracle.sde.t0)
    sampler = samplers.DDIM(20)
    keys = jr.split(jr.key(6), 64)

    def distance(t_start):
        run = jax.vmap(lambda k: samplers.edit(sampler, score, k, x0, t_start))
        result = compiled(run, keys)(keys)
        assert np.all(np.asarray(result.num_evaluations) == 20)
        spread = float(jnp.max(jnp.std(result.samples, axis=0)))
        return float(jnp.mean(jnp.sqrt(jnp.mean((result.samples - x0) ** 2, axis=(1, 2))))), spread

    (near, spread), (far, _) = distance(0.05), distance(1.0)
    # From t = 0.05 (s = 0.15) the edit keeps the field; from t1 it is an independent sample.
    assert near < 0.25 * far, (near, far)
    # DDIM is deterministic: the edits differ only by the forward noise to t_start, which must be drawn
    assert spread > 1e-3, spread


def test_conditional_sampling_rejects_bad_input():
    oracle = gaussian_oracle(16)
    score = samplers.PreconditionedScore(oracle, oracle.sde, Epsilon())
    observation = samplers.Inpainting(jnp.ones((1, 16), bool), jnp.zeros((1, 16)))
    with pytest.raises(ValueError, match="fixed-step"):
        samplers.ProbabilityFlow().sample(score, jr.key(0), (1, 16), observation=observation)
    with pytest.raises(ValueError, match="reuses its last stage"):
        samplers.ProbabilityFlow(diffrax.Tsit5(), 10).sample(score, jr.key(0), (1, 16), observation=observation)
    with pytest.raises(ValueError, match="same shape"):
        samplers.Inpainting(jnp.ones((1, 8), bool), jnp.zeros((1, 16)))
    with pytest.raises(ValueError, match="at least as fine"):
        samplers.SuperResolution(jnp.zeros((1, 16)), (8,))


def test_super_resolution_inserts_the_diffused_observation_after_every_step():
    """After each step to $t$ (the chain, before `sample` writes the observation itself into the
    result), the coarse modes of the state are those of $m(t) y + s(t) \\xi$, $\\xi \\sim N(0, C)$
    drawn afresh: standardised by $s(t)$, the deviation's Fourier coefficients on the coarse grid
    have mean zero (5 standard errors) and the prior's variances (within 10%, pooled over the 40
    steps of 1000 samples). A sampler that inserted another observation, or none, would leave
    deviations of the data's size, hundreds of times $s(t_0)$."""
    coarse, fine, num_samples = (9,), (27,), 1000
    oracle = gaussian_oracle(fine[0])
    sde = oracle.sde
    score = samplers.PreconditionedScore(oracle, sde, Epsilon())
    low = sdeflow.restrict(oracle.sample(jr.key(4), sde.t0), coarse)
    result = _batch(samplers.EulerMaruyama(40), score, (1, *fine), num_samples,
                    observation=samplers.SuperResolution(low, fine), chain=True)
    ts = np.asarray(result.ts[0])
    m, s = (np.asarray(v, np.float64) for v in jax.vmap(sde.marginal)(ts))
    restricted = np.asarray(jax.vmap(jax.vmap(lambda u: sdeflow.restrict(u, coarse)))(result.chain), np.float64)
    z = (restricted[:, :, 0] - m[:, None] * np.asarray(low, np.float64)[0]) / s[:, None]
    coefficients = np.fft.rfft(z, axis=-1) / coarse[0]  # (samples, steps, modes)
    lam = np.asarray(sde.prior.eigenvalues(coarse), np.float64)
    se = np.sqrt(lam / num_samples)
    assert np.all(np.abs(coefficients.mean(0)) < 5 * se), np.abs(coefficients.mean(0)) / se
    variance = np.mean(np.abs(coefficients) ** 2, axis=(0, 1))
    assert np.all(np.abs(variance / lam - 1) < 0.1), variance / lam
