"""Gaussian priors with covariance diagonal in Fourier."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sdeflow
from sdeflow.priors import (
    BandLimited,
    Combined,
    Laplacian,
    Matern,
    RadialMultiplier,
    SpectralMultiplier,
    WhiteNoise,
    lattice_trace,
)
from helpers import max_abs


# one compiled program per prior and grid, where eager calls compile every operation on its own
_sqrt_spectrum = eqx.filter_jit(lambda prior, ks: prior.sqrt_spectrum(ks))
_sample = eqx.filter_jit(lambda prior, key, shape: prior.sample(key, shape))


def _full_eigenvalues(prior, grid):
    """lambda_k on the full fft layout (every mode once), NumPy float64, zero off the kept modes."""
    ks = np.meshgrid(*[sdeflow.integer_frequencies(n) for n in grid], indexing="ij")
    lam = np.asarray(_sqrt_spectrum(prior, tuple(jnp.asarray(k) for k in ks)), np.float64) ** 2
    kept = np.all([2 * np.abs(k) < n for k, n in zip(ks, grid)], axis=0)
    return np.where(kept, lam, 0.0), ks


def _pointwise_variance(prior, grid):
    """The exact pointwise variance on a grid: the sum of the kept eigenvalues over all modes."""
    return float(np.sum(_full_eigenvalues(prior, grid)[0]))


def test_matern_pointwise_variance_converges_to_trace(getkey):
    """Empirical pointwise variance at n = 32..256 matches the kept-eigenvalue sum within 3% (and
    within 4 Monte Carlo standard deviations), and the sums increase to tr C = variance."""
    prior = Matern(2, s=2.0, tau=40.0, variance=1.5)
    batch = 256
    sums = []
    for n in (32, 64, 128, 256):
        exact = _pointwise_variance(prior, (n, n))
        lam = _full_eigenvalues(prior, (n, n))[0]
        # (1/N) sum_j u_j^2 = sum_k lambda_k |xi_k|^2 with |xi_k|^2 ~ Exp(1) shared by k and -k:
        # its variance is about 2 sum_k lambda_k^2 per sample.
        mc_std = math.sqrt(2 * np.sum(lam**2) / batch)
        keys = jax.random.split(getkey(), batch)
        mean_square = jax.lax.map(lambda k: jnp.mean(prior.sample(k, (1, n, n)) ** 2), keys, batch_size=32)
        empirical = float(jnp.mean(mean_square))
        assert abs(empirical - exact) < 4 * mc_std, (n, empirical, exact, mc_std)
        assert abs(empirical - exact) < 0.03 * exact, (n, empirical, exact)
        sums.append(exact)
    gaps = [1.5 - s for s in sums]
    assert all(g > 0 for g in gaps) and all(b < 0.3 * a for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 0.005 * 1.5 and abs(float(prior.trace()) - 1.5) < 1e-6


@pytest.mark.parametrize("n", [16, 15])
def test_restricted_sample_is_the_coarse_sample(n, getkey):
    """Same key: the 2n-sample restricted to n has exactly the n-sample's kept Fourier coefficients
    (and differs only in the even grid's Nyquist bin, which the n-grid prior leaves empty)."""
    prior = Matern(2, s=1.5, tau=5.0)
    key = getkey()
    fine = _sample(prior, key, (2, 2 * n, 2 * n + 1))
    coarse = _sample(prior, key, (2, n, n))
    restricted = sdeflow.restrict(fine, (n, n))
    kept = sdeflow.kept_modes((n, n))
    diff = jnp.where(kept, sdeflow.fourier(restricted) - sdeflow.fourier(coarse), 0.0)
    assert float(jnp.max(jnp.abs(diff))) < 1e-6
    if n % 2:
        assert max_abs(restricted, coarse) < 1e-5


@pytest.mark.parametrize("grid", [(6, 7), (16,), (5, 4, 6)])
def test_fourier_coefficient_covariance_matches_eigenvalues(grid, getkey):
    """E[u_k conj(u_j)] = lambda_k delta_kj and E[u_k u_k] = 0 for k != -k (circular), by Monte Carlo.
    In 3-D the conjugate pairs of the k_3 = 0 plane are the ones to get right."""
    s = 1.5 if len(grid) < 3 else 2.0  # trace class: s > d / 2
    prior = Combined(Matern(len(grid), s=s, tau=2.0), Laplacian(len(grid), s=s), 1.0, 0.5)
    batch = 4000
    keys = jax.random.split(getkey(), batch)
    u_hat = jax.vmap(lambda k: sdeflow.fourier(prior.sample(k, (1, *grid)))[0])(keys)
    u_hat = u_hat.reshape(batch, -1)
    lam = prior.eigenvalues(grid).reshape(-1)
    second = np.asarray(jnp.einsum("bi,bj->ij", u_hat, jnp.conj(u_hat)) / batch)
    # |xi|^2 ~ Exp(1): the relative Monte Carlo std of a diagonal entry is 1/sqrt(batch).
    diag = np.real(np.diag(second))
    kept = np.asarray(lam) > 0
    rel = np.abs(diag[kept] / np.asarray(lam)[kept] - 1)
    assert rel.max() < 5 / math.sqrt(batch), rel.max()
    assert np.all(diag[~kept] < 1e-10)
    scale = np.sqrt(np.outer(np.asarray(lam), np.asarray(lam)))
    off = np.abs(second - np.diag(np.diag(second)))[np.ix_(kept, kept)] / scale[np.ix_(kept, kept)]
    # Off-diagonal: the rfft layout's pairs are independent (k and -k are never both stored
    # except on the k_d = 0 plane, where they are conjugates: E[u_k conj(u_-k)] = E[u_k^2] = 0).
    assert off.max() < 5 / math.sqrt(batch), off.max()


def _dense_log_density(prior, u):
    """log N(u; 0, Sigma) with Sigma_jl = sum_kept lambda_k e^{2 pi i k (x_j - x_l)}, as a
    (pseudo-)density on the range of Sigma, in float64."""
    grid = u.shape[1:]
    lam, ks = _full_eigenvalues(prior, grid)
    x = np.stack(np.meshgrid(*[np.arange(n) / n for n in grid], indexing="ij")).reshape(len(grid), -1)
    k = np.stack([kk.reshape(-1) for kk in ks])
    phase = np.exp(2j * np.pi * (k.T @ x))  # (modes, points)
    sigma = np.real(phase.conj().T @ (lam.reshape(-1, 1) * phase))
    evals, evecs = np.linalg.eigh(sigma)
    keep = evals > 1e-9 * evals.max()
    total = 0.0
    for channel in np.asarray(u, np.float64).reshape(u.shape[0], -1):
        proj = evecs[:, keep].T @ channel
        total += -0.5 * np.sum(proj**2 / evals[keep]) - 0.5 * np.sum(np.log(2 * np.pi * evals[keep]))
    return total


@pytest.mark.parametrize("grid", [(5, 7), (6, 4), (9,)])
@pytest.mark.parametrize(
    "make",
    [
        lambda d: Matern(d, s=1.5, tau=3.0, variance=0.7),
        lambda d: SpectralMultiplier(Matern(d, s=2.0, tau=2.0), 1, jnp.arange(3.0 ** (d - 1) * 2).reshape((3,) * (d - 1) + (2,)) * 0.1),
        lambda d: Combined(Laplacian(d, s=1.2), Matern(d, s=1.5, tau=1.0), 2.0, 0.3),
        lambda d: WhiteNoise(d, 0.5),
    ],
)
def test_log_density_matches_dense_gaussian(grid, make, getkey):
    prior = make(len(grid))
    u = prior.sample(getkey(), (2, *grid))
    ours = float(prior.log_density(u))
    dense = _dense_log_density(prior, u)
    assert abs(ours - dense) < 1e-4 * max(1.0, abs(dense)), (ours, dense)


def test_operators_compose(getkey):
    prior = Matern(2, s=2.0, tau=4.0)
    u = jax.random.normal(getkey(), (2, 9, 8))
    # Remove what the grid does not keep (the Nyquist bin of the even axis).
    u = sdeflow.inverse_fourier(jnp.where(sdeflow.kept_modes((9, 8)), sdeflow.fourier(u), 0), (9, 8))
    assert max_abs(prior.apply_sqrt(prior.apply_sqrt(u)), prior.apply(u)) < 1e-6
    assert max_abs(prior.apply_inv_sqrt(prior.apply_sqrt(u)), u) < 1e-4
    # C is self-adjoint and positive in the grid inner product.
    v = jax.random.normal(getkey(), (2, 9, 8))
    assert abs(float(jnp.vdot(prior.apply(u), v) - jnp.vdot(u, prior.apply(v)))) < 1e-5
    assert float(jnp.vdot(u, prior.apply(u))) > 0


def _matern_sum_by_poisson(dim: int, s: float, tau: float) -> float:
    """$\\sum_{k \\in Z^d} (\\tau^2 + 4\\pi^2|k|^2)^{-s}$ as the sum of its Fourier transform over the
    lattice (Poisson summation), whose terms $K_{s-d/2}(\\tau|n|)$ fall off exponentially."""
    import itertools

    from scipy.special import gamma, kv

    nu = s - dim / 2
    total = math.pi ** (dim / 2) * gamma(nu) / gamma(s)  # n = 0: the integral
    for n in itertools.product(range(-12, 13), repeat=dim):
        r = math.sqrt(sum(x * x for x in n))
        if r:
            total += (2 * math.pi) ** (dim / 2) * 2 ** (1 - s) / gamma(s) * (tau * r) ** nu * kv(nu, tau * r)
    return total * tau ** (dim - 2 * s) / (2 * math.pi) ** dim


@pytest.mark.parametrize("dim, s, tau", [(2, 1.1, 2 * math.pi), (2, 2.0, 8 * math.pi), (3, 1.6, 2 * math.pi),
                                         (3, 2.0, 8 * math.pi)])
def test_lattice_sums_against_poisson_summation(dim, s, tau):
    """The box summed and the tail integrated outside its cube: within 1e-6 in 2-D and 1e-5 in 3-D of
    the exact sum (integrating the tail outside the ball of the box's volume instead, as before, was
    off by 7.6e-4 at d = 2, s = 1.1 and by 2.4e-3 at d = 3, s = 1.6). Matérn priors are normalised by
    this sum, so their trace is the variance asked for."""
    exact = _matern_sum_by_poisson(dim, s, tau)
    got = sdeflow.priors.radial_lattice_sum(lambda k2: (tau**2 + 4 * math.pi**2 * k2) ** -s, dim, 2 * s)
    assert abs(got / exact - 1) < (1e-6 if dim == 2 else 1e-5)
    prior = Matern(dim, s=s, tau=tau, variance=2.0)
    np.testing.assert_allclose(prior.scale * exact, 2.0, rtol=1e-5)


def test_the_trace_of_band_limited_spectra_is_their_finite_sum():
    """A combination of band-limited priors has no tail: its trace is the sum over the largest band
    (it was NaN, the far tail's decay read off zeros)."""
    comb = Combined(BandLimited(Matern(2, s=2.0), 9), BandLimited(Matern(2, s=3.0), 5), 0.5, 2.0)
    k = jnp.arange(-9, 10)
    brute = np.sum(np.asarray(comb.sqrt_spectrum((k[:, None], k[None, :])), np.float64) ** 2)
    np.testing.assert_allclose(float(comb.trace()), brute, rtol=1e-5)


def test_traces_against_closed_forms():
    # 1D Laplacian: sum_{k != 0} (4 pi^2 k^2)^-s = 2 zeta(2s) / (2 pi)^(2s); s = 1 gives 1/12.
    lap = Laplacian(1, s=1.0, variance=2.0)
    np.testing.assert_allclose(lap.scale, 2.0 * 12.0, rtol=1e-8)
    lap2 = Laplacian(1, s=2.0)
    zeta4 = math.pi**4 / 90
    np.testing.assert_allclose(lap2.scale, 1.0 / (2 * zeta4 / (2 * math.pi) ** 4), rtol=1e-8)
    # Normalisation: the traces summed independently (in JAX, float32) equal the chosen variance.
    for prior in (Matern(2, s=1.3, tau=1.0, variance=3.0), Laplacian(2, s=2.0), Matern(3, s=2.0)):
        assert abs(float(lattice_trace(prior.sqrt_spectrum, prior.dim)) / float(prior.trace()) - 1) < 1e-3
    # Combined: brute force in float64 over a long 1D lattice.
    a, b = Matern(1, s=1.0, tau=2.0), Laplacian(1, s=1.5)
    comb = Combined(a, b, 0.5, 2.0)
    k = jnp.arange(-200000, 200001)
    brute = np.sum(np.asarray(comb.sqrt_spectrum((k,)), np.float64) ** 2)
    assert abs(float(comb.trace()) / brute - 1) < 1e-3
    assert math.isinf(float(WhiteNoise(2).trace()))


def test_white_noise_variance_grows_with_resolution():
    """Not trace class: the pointwise variance is the number of kept modes."""
    for n in (8, 9, 32):
        assert abs(_pointwise_variance(WhiteNoise(2), (n, n)) - (2 * ((n - 1) // 2) + 1) ** 2) < 1e-6


def test_spectral_multiplier_fit_recovers_spectrum(getkey):
    truth = Matern(2, s=2.5, tau=6.0, variance=2.0)
    tail = Matern(2, s=2.0, tau=3.0)
    batch = 1000
    keys = jax.random.split(getkey(), batch)
    data = jax.vmap(lambda k: truth.sample(k, (1, 12, 12)) + 0.3)(keys)
    fitted = SpectralMultiplier.fit(data, tail, modes=3)
    k = (jnp.arange(-3, 4)[:, None], jnp.arange(0, 4)[None, :])
    ratio = fitted.sqrt_spectrum(k) ** 2 / truth.sqrt_spectrum(k) ** 2
    # Each fitted eigenvalue averages `batch` Exp(1) draws (two for pairs folded together).
    assert float(jnp.max(jnp.abs(ratio - 1))) < 5 / math.sqrt(batch)
    far = (jnp.array([7]), jnp.array([2]))
    assert max_abs(fitted.sqrt_spectrum(far), tail.sqrt_spectrum(far)) < 1e-9
    # Its trace, fitted block and tail, is the lattice sum of its spectrum (~2.3 here: the tail's
    # trace alone, 1, would be far off).
    assert abs(float(fitted.trace()) / float(lattice_trace(fitted.sqrt_spectrum, 2)) - 1) < 1e-3
    # Unfitted, it is its tail; and the weights are trainable through the log-density.
    init = SpectralMultiplier(tail, modes=3)
    key = getkey()
    assert max_abs(init.sample(key, (1, 12, 12)), tail.sample(key, (1, 12, 12))) < 1e-6
    assert abs(float(init.trace()) - 1.0) < 1e-5
    grad = eqx.filter_grad(lambda p: p.log_density(data[0]))(init)
    assert float(jnp.sum(jnp.abs(grad.log_weights))) > 0


def test_bad_input_raises_naming_the_argument(getkey):
    with pytest.raises(ValueError, match="`s` must exceed d/2"):
        Matern(2, s=1.0)
    with pytest.raises(ValueError, match="`s` must exceed d/2"):
        Laplacian(1, s=0.5)
    with pytest.raises(ValueError, match="`variance`"):
        Matern(1, s=1.0, variance=-1.0)
    with pytest.raises(ValueError, match="`tau`"):
        Matern(1, s=1.0, tau=0.0)
    with pytest.raises(ValueError, match="`dim`"):
        Matern(4, s=3.0)
    # a smoothness whose normalising scale overflows float32 (the samples were inf or NaN)
    with pytest.raises(ValueError, match="s = 25.0 makes the spectrum overflow float32"):
        Matern(1, s=25.0)
    with pytest.raises(ValueError, match="overflow float32"):
        Laplacian(1, s=40.0)
    assert bool(jnp.all(jnp.isfinite(Matern(1, s=12.0).sample(getkey(), (1, 32)))))
    # the lattice sums behind the normalisations: the torus's dimensions, and convergent tails only
    with pytest.raises(ValueError, match="`dim` must be 1, 2 or 3"):
        sdeflow.priors.radial_lattice_sum(lambda k2: (1 + k2) ** -2.0, 4, 4.0)
    with pytest.raises(ValueError, match="`decay` must exceed `dim` = 2"):
        sdeflow.priors.radial_lattice_sum(lambda k2: (1 + k2) ** -0.5, 2, 1.0)
    with pytest.raises(ValueError, match="`dim` must be 1, 2 or 3"):
        sdeflow.priors.lattice_trace(lambda k: 1.0, 4)
    prior = Matern(2, s=2.0)
    with pytest.raises(ValueError, match="`shape`"):
        prior.sample(getkey(), (8, 8))
    with pytest.raises(ValueError, match="spatial axes"):
        prior.apply(jnp.zeros((1, 8)))
    with pytest.raises(ValueError, match="smaller than the grid"):
        SpectralMultiplier(prior, modes=8).sample(getkey(), (1, 16, 16))
    with pytest.raises(ValueError, match="degenerate"):
        Laplacian(2, s=2.0).log_density(jnp.zeros((1, 8, 8)))
    # The check other modules call (the likelihood) before using C^(-1): Laplacian's mean mode has
    # eigenvalue zero; adding a Matern makes every eigenvalue positive.
    with pytest.raises(ValueError, match="degenerate .* so the density does not exist"):
        Laplacian(2, s=2.0).require_non_degenerate("the density")
    Combined(Laplacian(2, s=2.0), Matern(2, s=2.0)).require_non_degenerate("the density")
    with pytest.raises(ValueError, match="different dimensions"):
        Combined(Matern(1, s=1.0), Matern(2, s=2.0))


def _fitted_radial(key, radius=4, batch=400):
    """A radial multiplier fitted to draws of a known Matern prior (plus a constant), and the truth."""
    truth = Matern(2, s=2.5, tau=6.0, variance=2.0)
    data = jax.vmap(lambda k: truth.sample(k, (1, 24, 24)) + 0.3)(jax.random.split(key, batch))
    return RadialMultiplier.fit(data, Matern(2, s=2.5, tau=6.0), radius), truth, data


def _prior_options(key):
    """One prior of every option of the `prior` config group (white noise apart), as built."""
    fitted = _fitted_radial(key, batch=100)[0]
    return {
        "matern": Matern(2, s=1.5, tau=3.0, variance=0.7),
        "laplacian": Laplacian(2, s=2.0),
        "fno": fitted,
        "combined": Combined(Laplacian(2, s=2.0), Matern(2, s=2.0, tau=6.0), 1.0, 0.1),
        "combined_fno": Combined(fitted, Matern(2, s=1.5), 1.0, 0.2),
        "band_limited": BandLimited(Matern(2, s=2.0), 9),
    }


def test_every_prior_option_has_a_converging_pointwise_variance(getkey):
    """For every trace-class option: the exact pointwise variance on the n-grid (the kept
    eigenvalues' sum) increases with n = 16..128 towards tr C, which is finite, the gap shrinking
    geometrically; by Monte Carlo at n = 32 a sample's mean square matches it (white noise, which
    diverges, is `test_white_noise_variance_grows_with_resolution`)."""
    for name, prior in _prior_options(getkey()).items():
        trace = float(prior.trace())
        assert prior.trace_class and math.isfinite(trace) and trace > 0, name
        sums = [_pointwise_variance(prior, (n, n)) for n in (16, 32, 64, 128)]
        gaps = [trace - v for v in sums]
        assert all(g > -1e-5 * trace for g in gaps), (name, gaps)
        assert all(b <= 0.6 * a + 1e-6 * trace for a, b in zip(gaps, gaps[1:])), (name, gaps)
        assert gaps[-1] < 0.02 * trace, (name, gaps, trace)
        if name == "combined_fno":  # the sampler draws with that variance (one option: compiling is slow)
            lam = _full_eigenvalues(prior, (32, 32))[0]
            keys = jax.random.split(getkey(), 128)
            mean_square = eqx.filter_jit(jax.vmap(lambda k: jnp.mean(prior.sample(k, (1, 32, 32)) ** 2)))(keys)
            mc_std = math.sqrt(2 * np.sum(lam**2) / 128)
            assert abs(float(jnp.mean(mean_square)) - sums[1]) < 4 * mc_std + 1e-6, name


def test_radial_multiplier_fit_is_the_maximum_likelihood_estimate(getkey):
    """Each shell's fitted variance is the mean power of the data's modes in it (the MLE), close to
    the truth's mean eigenvalue over the shell; the tail's amplitude is the truth's; the fit is
    deterministic; and it is the maximum of the Gaussian log-likelihood: moving any weight lowers it."""
    fitted, truth, data = _fitted_radial(getkey(), radius=4, batch=400)
    again = RadialMultiplier.fit(data, Matern(2, s=2.5, tau=6.0), 4)
    assert np.array_equal(np.asarray(fitted.log_weights), np.asarray(again.log_weights))
    ks = np.meshgrid(np.arange(-12, 12), np.arange(-12, 12), indexing="ij")
    shell = np.round(np.sqrt(ks[0] ** 2 + ks[1] ** 2))
    lam_true = np.asarray(truth.sqrt_spectrum((jnp.asarray(ks[0]), jnp.asarray(ks[1]))), np.float64) ** 2
    for r in range(5):
        in_shell = shell == r
        expected = lam_true[in_shell].mean()
        modes = int(in_shell.sum())
        # each mode's power averages 400 Exp(1) draws (the pairs k, -k are one draw)
        tolerance = 5 * math.sqrt(2.0 / (400 * max(modes, 1)))
        assert abs(math.exp(2 * float(fitted.log_weights[r])) / expected - 1) < max(tolerance, 0.02) + 1 / 400, r
    assert abs(fitted.tail.variance / truth.variance - 1) < 0.03
    centred = data - jnp.mean(data, axis=0)

    @jax.jit
    def mean_log_likelihood(log_weights):
        prior = RadialMultiplier(fitted.tail, 4, log_weights)
        return jnp.mean(jax.vmap(prior.log_density)(centred))

    grad = jax.grad(mean_log_likelihood)(fitted.log_weights)
    assert float(jnp.max(jnp.abs(grad))) < 1e-2 * float(jnp.max(jnp.abs(jax.grad(mean_log_likelihood)(fitted.log_weights + 0.2))))
    for r in range(5):
        for step in (-0.1, 0.1):
            assert float(mean_log_likelihood(fitted.log_weights.at[r].add(step))) < float(mean_log_likelihood(fitted.log_weights))


def test_radial_multiplier_is_defined_on_every_grid_and_learnable(getkey):
    """Any grid, also one smaller than the shells: the same key gives the same function restricted;
    the weights get gradients when learnable, none when frozen."""
    prior = RadialMultiplier(Matern(2, s=2.0), radius=6)
    key = getkey()
    fine, coarse = prior.sample(key, (1, 17, 17)), prior.sample(key, (1, 5, 5))
    assert max_abs(sdeflow.restrict(fine, (5, 5)), coarse) < 1e-5
    u = prior.sample(getkey(), (1, 9, 9))
    grad = eqx.filter_grad(lambda p: p.log_density(u))(prior)
    assert float(jnp.sum(jnp.abs(grad.log_weights))) > 0
    frozen = RadialMultiplier(Matern(2, s=2.0), radius=6, learnable=False)
    assert float(jnp.sum(jnp.abs(eqx.filter_grad(lambda p: p.log_density(u))(frozen).log_weights))) == 0
    with pytest.raises(ValueError, match="`radius`"):
        RadialMultiplier(Matern(2, s=2.0), radius=-1)
    with pytest.raises(ValueError, match="at least 9 points per axis"):
        RadialMultiplier.fit(jnp.zeros((4, 1, 8, 8)), Matern(2, s=2.0), 4)


def test_band_limited_prior_is_degenerate_and_exact_on_every_grid(getkey):
    prior = BandLimited(Matern(2, s=2.0, tau=3.0), 7)
    assert prior.degenerate and abs(float(prior.trace()) - _pointwise_variance(prior, (7, 7))) < 1e-6
    assert abs(_pointwise_variance(prior, (64, 64)) - _pointwise_variance(prior, (7, 7))) < 1e-6
    key = getkey()
    assert max_abs(sdeflow.prolong(prior.sample(key, (1, 7, 7)), (20, 20)), prior.sample(key, (1, 20, 20))) < 1e-5
