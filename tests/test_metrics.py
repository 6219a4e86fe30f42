"""Tests of sdeflow.metrics against closed forms."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import sdeflow
from sdeflow import metrics


def _gaussian_energy_distance(m1, s1, m2, s2):
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| for X ~ N(m1, s1^2), Y ~ N(m2, s2^2), in closed form."""
    mu, sigma = m1 - m2, math.sqrt(s1**2 + s2**2)
    folded = sigma * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * sigma**2)) + mu * (
        1 - 2 * scipy.stats.norm.cdf(-mu / sigma)
    )
    return 2 * folded - 2 * s1 / math.sqrt(math.pi) - 2 * s2 / math.sqrt(math.pi)


def test_energy_distance_of_gaussians_matches_closed_form(getkey):
    n = 10_000
    x = 0.0 + 1.0 * jr.normal(getkey(), (n, 1))
    y = 1.0 + 1.5 * jr.normal(getkey(), (n, 1))
    exact = _gaussian_energy_distance(0.0, 1.0, 1.0, 1.5)  # 0.4874
    estimate = float(metrics.riesz_mmd(x, y, block_size=2048))
    # The estimate's standard deviation at n = 10,000 is 0.011 here (measured over seeds): 4 sigma.
    assert abs(estimate - exact) < 0.045, (estimate, exact)
    # Same law: the unbiased estimate is centred on zero (its std is O(1/n), about 1e-4 here).
    z = jr.normal(getkey(), (n, 1))
    assert abs(float(metrics.riesz_mmd(x, z, block_size=2048))) < 2e-3


def test_energy_distance_uses_l2_norm_of_fields(getkey):
    # Band-limited fields on an odd grid and their prolongation: same functions, same distance.
    x = jr.normal(getkey(), (40, 2, 9))
    y = jr.normal(getkey(), (30, 2, 9)) * 1.3 + 0.2
    fine = jax.vmap(lambda v: sdeflow.prolong(v, (27,)))
    coarse_value = metrics.riesz_mmd(x, y)
    fine_value = metrics.riesz_mmd(fine(x), fine(y))
    assert np.allclose(coarse_value, fine_value, rtol=1e-4)
    # A pair of constant fields c and 0: the distance is the L2(T) norm |c| (mean over points).
    a = jnp.stack([jnp.full((1, 16), 3.0), jnp.full((1, 16), 3.0)])
    b = jnp.zeros((2, 1, 16))
    assert np.allclose(metrics.riesz_mmd(a, b), 2 * 3.0, rtol=1e-6)


def test_frechet_distance_of_gaussians_closed_form(getkey):
    d = 6
    q, _ = jnp.linalg.qr(jr.normal(getkey(), (d, d)))
    a = jnp.linspace(0.5, 3.0, d)
    b = jnp.linspace(2.0, 0.1, d)
    mean1, mean2 = jr.normal(getkey(), (d,)), jr.normal(getkey(), (d,))
    cov1, cov2 = (q * a) @ q.T, (q * b) @ q.T  # commuting: closed form sum (sqrt a - sqrt b)^2
    exact = jnp.sum((mean1 - mean2) ** 2) + jnp.sum((jnp.sqrt(a) - jnp.sqrt(b)) ** 2)
    value = metrics.gaussian_frechet_distance(mean1, cov1, mean2, cov2)
    assert np.allclose(value, exact, rtol=1e-4)
    # Non-commuting covariances against SciPy's matrix square root in float64.
    r = np.asarray(jr.normal(getkey(), (d, d)), np.float64)
    cov3 = r @ r.T + 0.1 * np.eye(d)
    c1 = np.asarray(cov1, np.float64)
    ref = (
        np.sum((np.asarray(mean1) - np.asarray(mean2)) ** 2)
        + np.trace(c1)
        + np.trace(cov3)
        - 2 * np.trace(scipy.linalg.sqrtm(c1 @ cov3)).real
    )
    value = metrics.gaussian_frechet_distance(mean1, cov1, mean2, jnp.asarray(cov3, jnp.float32))
    assert np.allclose(value, ref, rtol=1e-3)


def test_frechet_distance_of_sets(getkey):
    x = jr.normal(getkey(), (500, 8)) @ jr.normal(getkey(), (8, 8)) + 2.0
    mean, cov = metrics.feature_statistics(x, block_size=64)
    assert np.allclose(mean, np.mean(np.asarray(x), 0), atol=1e-4)
    assert np.allclose(cov, np.cov(np.asarray(x), rowvar=False), rtol=1e-3, atol=1e-4)
    # Identical sets: zero up to float32 round-off relative to the trace.
    assert float(metrics.frechet_distance(x, x)) < 1e-4 * float(jnp.trace(cov))
    # A shift by v changes only the mean term: d^2 = |v|^2.
    v = jnp.arange(8.0) / 4
    assert np.allclose(metrics.frechet_distance(x, x + v), jnp.sum(v**2), rtol=1e-3)


def test_second_moments_stay_within_their_stated_memory():
    # feature_statistics and vendi_score promise memory O(D^2 + block_size D): a block's second
    # moment is one matmul, not block_size outer products (4.3 GB for 1024 fields on the 32-grid).
    n, grid = 4096, 16  # D = 256 < n, so vendi_score accumulates Z^T Z too
    fields = jax.ShapeDtypeStruct((n, 1, grid, grid), jnp.float32)
    d, block = grid**2, 1024  # the default block_size
    bound = 4 * (n * d + 4 * d**2 + 2 * block * d)  # a copy of the set, a few D x D and block x D arrays
    for fn in (metrics.feature_statistics, metrics.vendi_score):
        memory = jax.jit(fn).lower(fields).compile().memory_analysis()
        assert memory.temp_size_in_bytes < bound, (fn.__name__, memory.temp_size_in_bytes, bound)


def test_frechet_standard_error_matches_the_spread_over_fresh_sets():
    # The bootstrap over one set of n samples estimates the standard deviation of the distance over
    # independent sets of n samples from the same law (Monte Carlo here), against a fixed reference.
    rng = np.random.default_rng(0)
    d, n = 8, 200
    scale = np.linspace(0.5, 1.5, d)
    shift = np.full(d, 0.35)
    y = rng.normal(size=(4000, d)).astype(np.float32)

    def draw():
        return (rng.normal(size=(n, d)) * scale + shift).astype(np.float32)

    spread = np.std([float(metrics.frechet_distance(draw(), y)) for _ in range(200)], ddof=1)
    estimates = [metrics.frechet_standard_error(draw(), y, resamples=200, seed=i) for i in range(4)]
    assert 0.75 < np.mean(estimates) / spread < 1.25, (estimates, spread)
    # Four times the samples: half the error.
    big = (rng.normal(size=(4 * n, d)) * scale + shift).astype(np.float32)
    ratio = metrics.frechet_standard_error(big, y, resamples=200) / np.mean(estimates)
    assert 0.35 < ratio < 0.65, ratio
    with pytest.raises(ValueError, match="resamples"):
        metrics.frechet_standard_error(big, y, resamples=1)
    with pytest.raises(ValueError, match="trailing shape"):
        metrics.frechet_standard_error(big, y[:, :3])
    with pytest.raises(ValueError, match="two samples"):
        metrics.frechet_standard_error(big[:1], y)


@pytest.mark.parametrize("kernel", ["cosine", "rbf"])
def test_vendi_identical_and_orthogonal(kernel):
    same = jnp.tile(jnp.array([[1.0, 2.0, -1.0]]), (20, 1))  # n > D: covariance path for cosine
    assert np.allclose(metrics.vendi_score(same, kernel=kernel), 1.0, atol=1e-4)
    ortho = 10.0 * jnp.eye(7)  # 7 mutually orthogonal samples (far apart for rbf)
    assert np.allclose(metrics.vendi_score(ortho, kernel=kernel, bandwidth=1.0), 7.0, rtol=1e-4)


def test_vendi_rbf_kernel_between_two_points():
    """Two points at distance d with bandwidth h: $K/n$ has eigenvalues $(1 \\pm k)/2$ with
    $k = \\exp(-d^2 / 2h^2)$, so the score is $\\exp(H((1 + k)/2, (1 - k)/2))$; at d = h, k = e^{-1/2}."""
    for d, h in ((1.0, 1.0), (3.0, 2.0), (0.5, 1.5)):
        x = jnp.array([[0.0, 0.0], [d, 0.0]])
        k = math.exp(-d**2 / (2 * h**2))
        p = np.array([(1 + k) / 2, (1 - k) / 2])
        expected = math.exp(-float(np.sum(p * np.log(p))))
        assert np.isclose(float(metrics.vendi_score(x, kernel="rbf", bandwidth=h)), expected, rtol=1e-4), (d, h)


def test_vendi_repeated_orthogonal_both_paths():
    # k orthogonal directions, each repeated r times: K/n has k eigenvalues 1/k, so the score is k.
    basis = jnp.eye(4)
    big = jnp.repeat(basis, 3, axis=0)  # n = 12 > D = 4: feature-covariance path
    small = jnp.repeat(jnp.eye(8)[:4], 2, axis=0)  # n = 8 <= D = 8: Gram path
    assert np.allclose(metrics.vendi_score(big, block_size=5), 4.0, rtol=1e-4)
    assert np.allclose(metrics.vendi_score(small), 4.0, rtol=1e-4)


def test_sliced_wasserstein_of_shift(getkey):
    x = jr.normal(getkey(), (300, 1))
    assert np.allclose(metrics.sliced_wasserstein(getkey(), x, x + 0.7, num_projections=4), 0.7, rtol=1e-5)
    # Fields shifted by the constant c: |v|_{L2} = c, so SW_2^2 = c^2 / D in D = 16 dimensions.
    f = jr.normal(getkey(), (200, 1, 16))
    sw = float(metrics.sliced_wasserstein(getkey(), f, f + 2.0, num_projections=4096))
    # (theta . v)^2 D / |v|^2 has mean 1 and variance about 2: relative std of SW about 1.1%.
    assert abs(sw - 2.0 / 4.0) < 0.05 * 0.5, sw


def test_wasserstein_1d_unequal_sizes():
    a = jnp.array([1.0, 0.0])
    assert np.allclose(metrics.wasserstein_1d(a, jnp.array([0.0, 0.5, 1.0])), 1 / 12, rtol=1e-6)
    assert np.allclose(metrics.wasserstein_1d(a, jnp.array([0.0, 0.0, 1.0, 1.0])), 0.0, atol=1e-7)


def test_power_spectrum_single_mode():
    x = sdeflow.coordinates((16,))
    u = jnp.cos(2 * jnp.pi * 3 * x)[None]  # (1, c=1, 16): amplitude 1 at |k| = 3
    k, e = metrics.radial_power_spectrum(u)
    expected = np.zeros(k.shape[0])
    expected[3] = 0.5
    assert np.allclose(e, expected, atol=1e-6)
    xy = sdeflow.coordinates((16, 16))
    v = 2 * jnp.sin(2 * jnp.pi * (3 * xy[0] + 4 * xy[1]))[None, None]  # |k| = 5, mean square 2
    k, e = metrics.radial_power_spectrum(v)
    expected = np.zeros(k.shape[0])
    expected[5] = 2.0
    assert np.allclose(e, expected, atol=1e-5)


def test_power_spectrum_parseval_and_resolution(getkey):
    u = jr.normal(getkey(), (10, 2, 8, 6))
    _, e = metrics.radial_power_spectrum(u)
    assert np.allclose(jnp.sum(e), jnp.mean(jnp.sum(u**2, axis=1)), rtol=1e-5)
    # Band-limited fields (odd grid) and their prolongation have the same spectrum.
    v = jr.normal(getkey(), (10, 1, 9, 9))
    fine = jax.vmap(lambda w: sdeflow.prolong(w, (27, 27)))(v)
    _, ec = metrics.radial_power_spectrum(v)
    _, ef = metrics.radial_power_spectrum(fine)
    assert np.allclose(ef[: ec.shape[0]], ec, rtol=1e-4, atol=1e-6)
    assert np.allclose(ef[ec.shape[0] :], 0.0, atol=1e-6)
    assert float(metrics.power_spectrum_error(fine, v)) < 1e-4
    assert np.allclose(metrics.power_spectrum_error(2 * v, v), math.log(4.0), rtol=1e-5)


def test_block_batching_matches_unbatched(getkey):
    x = jr.normal(getkey(), (23, 1, 5))
    y = jr.normal(getkey(), (17, 1, 5)) + 0.3
    key = getkey()
    pairs = [
        (metrics.riesz_mmd(x, y, block_size=4), metrics.riesz_mmd(x, y, block_size=1000)),
        (
            metrics.vendi_score(x, block_size=3),
            metrics.vendi_score(x, block_size=1000),
        ),
        (
            metrics.sliced_wasserstein(key, x, y, num_projections=50, block_size=7),
            metrics.sliced_wasserstein(key, x, y, num_projections=50, block_size=1000),
        ),
        (metrics.frechet_distance(x, y, block_size=6), metrics.frechet_distance(x, y, block_size=1000)),
        (
            metrics.radial_power_spectrum(x, block_size=4)[1],
            metrics.radial_power_spectrum(x, block_size=1000)[1],
        ),
    ]
    # Absolute tolerance on the scale of the summands (order 1): the MMD is a difference of such
    # terms, so its own magnitude (about 0.02 here) is no measure of float32 round-off.
    for blocked, whole in pairs:
        assert np.allclose(blocked, whole, rtol=1e-5, atol=1e-5)
    # The unbatched U-statistic, written out directly.
    xv, yv = np.asarray(x).reshape(23, -1) / np.sqrt(5), np.asarray(y).reshape(17, -1) / np.sqrt(5)
    dist = lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=-1)
    direct = (
        2 * dist(xv, yv).mean()
        - dist(xv, xv).sum() / (23 * 22)
        - dist(yv, yv).sum() / (17 * 16)
    )
    assert np.allclose(metrics.riesz_mmd(x, y, block_size=4), direct, rtol=1e-4, atol=1e-6)


def test_bad_input_raises(getkey):
    x = jr.normal(getkey(), (5, 1, 8))
    with pytest.raises(ValueError, match="trailing shape"):
        metrics.riesz_mmd(x, jr.normal(getkey(), (5, 1, 9)))
    with pytest.raises(ValueError, match="block_size"):
        metrics.riesz_mmd(x, x, block_size=0)
    with pytest.raises(ValueError, match="kernel"):
        metrics.vendi_score(x, kernel="linear")
    with pytest.raises(ValueError, match="fields"):
        metrics.radial_power_spectrum(jnp.ones((5, 8)))
