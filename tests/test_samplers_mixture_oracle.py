"""The exact score of a Gaussian mixture diffused by an SDE (`GaussianMixtureOracle`)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sdeflow
from sdeflow.priors import BandLimited, Laplacian, Matern
from sdeflow.samplers import GaussianMixtureOracle
from sdeflow.sde import VPSDE
from helpers import max_abs


def _means(grid, amplitude=0.6):
    """Two low-mode means: cos(2 pi x_1) and sin(2 pi x_last) (+ a constant on the second)."""
    axes = np.meshgrid(*[np.arange(n) / n for n in grid], indexing="ij")
    first = amplitude * np.cos(2 * np.pi * axes[0])
    second = amplitude * np.sin(2 * np.pi * axes[-1]) + 0.2
    return jnp.asarray(np.stack([first, second])[:, None], jnp.float32)


def _oracle(grid, degenerate):
    d = len(grid)
    if degenerate:  # no variance on the mean mode of the prior, and none beyond 3 modes in the data
        sde = VPSDE(Laplacian(d, s=1.5))
        covariance = BandLimited(Matern(d, s=2.0, tau=3.0, variance=0.3), 5)
    else:
        sde = VPSDE(Matern(d, s=1.5, tau=4.0))
        covariance = Matern(d, s=2.0, tau=3.0, variance=0.3)
    return GaussianMixtureOracle(sde, jnp.array([0.3, 0.7]), _means(grid), covariance)


def _dense_mixture_log_density(oracle, t, x):
    """The mixture's log-density from dense point-value covariances (float64, eigh)."""
    grid = x.shape[1:]
    n = math.prod(grid)
    ks = np.meshgrid(*[sdeflow.integer_frequencies(m) for m in grid], indexing="ij")
    kept = np.all([2 * np.abs(k) < m for k, m in zip(ks, grid)], axis=0)
    k_tuple = tuple(jnp.asarray(k) for k in ks)
    m, s = (float(v) for v in oracle.sde.marginal(t))
    lam = m**2 * np.asarray(oracle.covariance.sqrt_spectrum(k_tuple), np.float64) ** 2
    lam = lam + s**2 * np.asarray(oracle.sde.prior.sqrt_spectrum(k_tuple), np.float64) ** 2
    lam = np.where(kept, lam, 0.0).reshape(-1)
    pts = np.stack(np.meshgrid(*[np.arange(m_) / m_ for m_ in grid], indexing="ij")).reshape(len(grid), -1)
    phase = np.exp(2j * np.pi * (np.stack([k.reshape(-1) for k in ks]).T @ pts))
    sigma = n * np.real(phase.conj().T @ (lam[:, None] * phase)) / n  # eigenvalues N lambda_k
    evals, evecs = np.linalg.eigh(sigma)
    keep = evals > 1e-9 * evals.max()
    terms = []
    for w, mu in zip(np.asarray(oracle.weights), np.asarray(oracle.means_on(grid))):
        d = (np.asarray(x, np.float64) - m * mu.astype(np.float64)).reshape(-1)
        proj = evecs[:, keep].T @ d
        terms.append(np.log(w) - 0.5 * np.sum(proj**2 / evals[keep]) - 0.5 * np.sum(np.log(2 * np.pi * evals[keep])))
    return float(np.logaddexp.reduce(terms))


@pytest.mark.parametrize("degenerate", [False, True])
@pytest.mark.parametrize("grid", [(6, 5), (9,)])
def test_score_is_the_gradient_of_the_log_density(grid, degenerate, getkey):
    """C grad log p_t by autodiff of the exact log-density (the L^2 gradient is N times the
    gradient in the point values) equals the closed form, at several times; the responsibilities
    are not saturated, so both components count; the log-density matches a dense computation."""
    oracle = _oracle(grid, degenerate)
    n = math.prod(grid)
    for t in (0.05, 0.3):
        x, _ = oracle.sample(getkey(), t, grid)
        grad = jax.grad(lambda y: oracle.log_density(t, y))(x)
        by_autodiff = oracle.sde.prior.apply(n * grad)
        closed = oracle.score(t, x)
        scale = float(jnp.max(jnp.abs(closed)))
        assert scale > 0 and max_abs(closed, by_autodiff) < 1e-4 * scale, (t, max_abs(closed, by_autodiff), scale)
        if not degenerate and t == 0.3:
            dense = _dense_mixture_log_density(oracle, t, x)
            assert abs(float(oracle.log_density(t, x)) - dense) < 1e-4 * max(1.0, abs(dense))
    # Between the components' means the posterior is mixed at a late time.
    r = oracle.responsibilities(0.8, 0.5 * (oracle.means_on(grid)[0] + oracle.means_on(grid)[1]))
    assert 0.05 < float(r[0]) < 0.95 and abs(float(jnp.sum(r)) - 1) < 1e-6


@pytest.mark.parametrize("degenerate", [False, True])
def test_score_is_consistent_across_grids(degenerate, getkey):
    """A band-limited x (drawn on the 9-grid) given on the 9- and 16-grids has the same
    score on each: the finer grids' scores restrict to the coarse one and vanish on the modes the
    coarse grid does not hold (the means are the same low-mode functions everywhere)."""
    oracle = _oracle((9, 9), degenerate)
    for t in (0.3,):
        x, _ = oracle.sample(getkey(), t, (9, 9))
        coarse = oracle.score(t, x)
        for n in (16,):
            fine = oracle.score(t, sdeflow.prolong(x, (n, n)))
            assert max_abs(sdeflow.restrict(fine, (9, 9)), coarse) < 1e-5
            assert max_abs(fine, sdeflow.prolong(coarse, (n, n))) < 1e-5
        r9 = oracle.responsibilities(t, x)
        r16 = oracle.responsibilities(t, sdeflow.prolong(x, (16, 16)))
        assert max_abs(r9, r16) < 1e-5


def test_sample_has_the_mixture_weights(getkey):
    """At t = t0 the exact draws come from the components in proportion to the weights, and each
    draw lies nearer its own mean."""
    oracle = _oracle((8, 8), False)
    keys = jax.random.split(getkey(), 2000)
    x, j = jax.vmap(lambda k: oracle.sample(k, 1e-3, (8, 8)))(keys)
    frac = float(jnp.mean(j == 0))
    assert abs(frac - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 2000)
    means = oracle.means_on((8, 8))
    nearer = jnp.argmin(jnp.sum((x[:, None] - means[None]) ** 2, axis=(2, 3, 4)), axis=1)
    assert float(jnp.mean(nearer == j)) > 0.95


def test_bad_input_raises(getkey):
    sde = VPSDE(Matern(2, s=2.0))
    cov = Matern(2, s=2.0)
    means = jnp.zeros((2, 1, 8, 8))
    with pytest.raises(ValueError, match="`weights` must sum to one"):
        GaussianMixtureOracle(sde, jnp.array([0.5, 0.6]), means, cov)
    with pytest.raises(ValueError, match="`means` must have shape"):
        GaussianMixtureOracle(sde, jnp.array([0.5, 0.5]), means[0], cov)
    with pytest.raises(ValueError, match="`covariance`"):
        GaussianMixtureOracle(sde, jnp.array([0.5, 0.5]), means, Matern(1, s=1.0))
