"""Denoising losses: optimal denoisers of Gaussian data, weightings, time sampling, the ELBO."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdeflow
from sdeflow.losses import (
    AntitheticTimeSampling,
    CameronMartinNorm,
    InterpolatedNorm,
    L1Norm,
    L2Norm,
    LikelihoodWeighting,
    P2Weighting,
    ResolutionConsistency,
    SimpleWeighting,
    StratifiedTimeSampling,
    UniformTimeSampling,
    dsm_loss,
    perturb_batch,
    vdm_elbo,
    vdm_terms,
)
from sdeflow.parameterisation import Score, V, X0
from sdeflow.priors import Matern
from sdeflow.sde import OUBridge, VPSDE


GRID = (9,)
PRIOR = Matern(1, s=1.0, tau=3.0)
DATA = Matern(1, s=1.5, tau=8.0, variance=0.5)  # the data's covariance D, diagonal in Fourier
MU = 0.3 * jnp.cos(2 * jnp.pi * sdeflow.coordinates(GRID))


def _optimal_eps(sde, t, x):
    """E[eps | x_t] for x0 ~ N(mu, D): per mode s lambda / (m^2 d + s^2 lambda) (x_t - E x_t)."""
    m, s = sde.marginal(t)
    lam, d = PRIOR.eigenvalues(GRID), DATA.eigenvalues(GRID)
    gain = jnp.where(lam > 0, s * lam / (m**2 * d + s**2 * lam), 0.0)
    y = x - sde.mean(t, MU)
    return sdeflow.inverse_fourier(gain * sdeflow.fourier(y), GRID)


def _data(key, batch):
    return jax.vmap(lambda k: DATA.sample(k, (1, *GRID)) + MU)(jr.split(key, batch))


def _vertex(per_sample_losses):
    """The minimiser of alpha -> E L(alpha) from per-sample losses at alpha = 0.8, 1, 1.2 (the loss is
    exactly quadratic in alpha), with its delta-method standard error."""
    l0, l1, l2 = (np.asarray(x, np.float64) for x in per_sample_losses)
    curv = (l0 - 2 * l1 + l2) / 0.08  # d^2L/dalpha^2 per sample
    slope = (l2 - l0) / 0.4  # dL/dalpha at 1 per sample
    shift = -slope.mean() / curv.mean()
    se = np.std(slope + shift * curv) / math.sqrt(slope.size) / curv.mean()
    return 1 + shift, se


@pytest.mark.parametrize("weighting", [SimpleWeighting(), LikelihoodWeighting(), P2Weighting(p2_gamma=0.5, p2_k=2.0)],
                         ids=["simple", "likelihood", "p2"])
def test_loss_is_minimised_by_the_optimal_denoiser(weighting, getkey):
    """The loss along alpha * (optimal epsilon) is a parabola with its minimum at alpha = 1, within 4
    standard errors (common random numbers, 4096 samples), and the standard error is below 0.05 so
    that a denoiser off by 10% would fail."""
    sde = VPSDE(PRIOR, t0=1e-2)
    x0 = _data(getkey(), 4096)
    keys = jr.split(getkey(), x0.shape[0])

    def per_sample(alpha):
        model = lambda t, x: alpha * _optimal_eps(sde, t, x)
        return jax.vmap(lambda x, k: dsm_loss(model, sde, x[None], k, weighting=weighting))(x0, keys)

    vertex, se = _vertex([per_sample(a) for a in (0.8, 1.0, 1.2)])
    assert se < 0.05, se
    assert abs(vertex - 1) < 4 * se + 1e-3, (vertex, se)


@pytest.mark.parametrize("kind", [X0(), V(), Score()], ids=["x0", "v", "score"])
def test_parameterisations_share_one_objective(kind, getkey):
    """A model predicting `kind` is scored exactly as the epsilon model it stands for, so the optimal
    denoiser above is optimal in every parameterisation."""
    sde = VPSDE(PRIOR, t0=1e-2)
    x0 = _data(getkey(), 64)
    key = getkey()
    eps_model = lambda t, x: 0.9 * _optimal_eps(sde, t, x) + 0.05 * x

    def kind_model(t, x):
        m, s = sde.marginal(t)
        return kind.from_epsilon(eps_model(t, x), x, m, s)

    for weighting in (SimpleWeighting(), LikelihoodWeighting(), P2Weighting()):
        reference = dsm_loss(eps_model, sde, x0, key, weighting=weighting)
        ours = dsm_loss(kind_model, sde, x0, key, parameterisation=kind, weighting=weighting)
        np.testing.assert_allclose(ours, reference, rtol=2e-4)


def test_ou_bridge_optimal_denoiser(getkey):
    """The same with the offset b(t) of an OU bridge toward a target."""
    sde = OUBridge(PRIOR, target=jnp.sin(4 * jnp.pi * sdeflow.coordinates(GRID)), theta=2.0, eta=2.0)
    x0 = _data(getkey(), 4096)
    keys = jr.split(getkey(), x0.shape[0])

    def per_sample(a):
        one = lambda x, k: dsm_loss(lambda t, y: a * _optimal_eps(sde, t, y), sde, x[None], k)
        return jax.vmap(one)(x0, keys)

    vertex, se = _vertex([per_sample(a) for a in (0.8, 1.0, 1.2)])
    assert se < 0.05 and abs(vertex - 1) < 4 * se + 1e-3, (vertex, se)


def test_minimum_value_is_the_posterior_variance(getkey):
    """At the optimum the simple loss is E_t sum_k lambda_k m^2 d_k / (m^2 d_k + s^2 lambda_k)."""
    sde = VPSDE(PRIOR)
    x0 = _data(getkey(), 8192)
    optimal = lambda t, x: _optimal_eps(sde, t, x)
    loss = float(dsm_loss(optimal, sde, x0, getkey(), time_sampling=StratifiedTimeSampling()))
    lam, d = PRIOR.eigenvalues(GRID), DATA.eigenvalues(GRID)
    mult = jnp.where(jnp.arange(lam.shape[-1]) == 0, 1.0, 2.0)

    def posterior(t):
        m, s = sde.marginal(t)
        return jnp.sum(mult * lam * m**2 * d / (m**2 * d + s**2 * lam))

    ts = jnp.linspace(sde.t0, sde.t1, 2001)
    exact = float(jnp.mean(jax.vmap(posterior)(ts)))
    assert abs(loss / exact - 1) < 0.03, (loss, exact)


@pytest.mark.parametrize("grid", [(8, 8), (9, 7)])
def test_interpolated_norm_weighs_each_mode_by_a_power_of_the_eigenvalue_ratio(grid, getkey):
    """$r = 0$ is the L2 norm exactly (Nyquist bins included); on a single Fourier mode $k$ the
    norm is $(\\lambda_{\\max} / \\lambda_k)^r$ times its L2 norm; $r = 1$ is the Cameron-Martin norm
    times $\\lambda_{\\max}$ on fields in the charged modes; and a prior sample's expected square is
    $\\sum_k \\lambda_{\\max}^r \\lambda_k^{1 - r}$."""
    prior = Matern(2, s=2.0, tau=6.0)
    sde = VPSDE(prior)
    v = jr.normal(getkey(), (2, *grid))
    np.testing.assert_allclose(InterpolatedNorm(0.0).squared(sde, v), L2Norm().squared(sde, v), rtol=1e-6)
    lam = prior.eigenvalues(grid)
    top = float(jnp.max(lam))
    x = sdeflow.coordinates(grid)
    for k in [(0, 1), (2, 1), (-3, 2)]:
        mode = jnp.cos(2 * jnp.pi * (k[0] * x[0] + k[1] * x[1]))[None]
        lam_k = float(prior.sqrt_spectrum((jnp.asarray(k[0]), jnp.asarray(k[1]))) ** 2)
        for r in (0.25, 0.7):
            np.testing.assert_allclose(InterpolatedNorm(r).squared(sde, mode),
                                       (top / lam_k) ** r * L2Norm().squared(sde, mode), rtol=1e-4)
    charged = prior.apply(v)
    np.testing.assert_allclose(InterpolatedNorm(1.0).squared(sde, charged),
                               top * CameronMartinNorm().squared(sde, charged), rtol=1e-4)
    r = 0.3
    eps = jax.vmap(lambda key: prior.sample(key, (1, *grid)))(jr.split(getkey(), 4000))
    empirical = float(jnp.mean(jax.vmap(lambda e: InterpolatedNorm(r).squared(sde, e))(eps)))
    counts = jnp.where(jnp.arange(lam.shape[-1]) == 0, 1.0, 2.0)  # rfft holds k and -k once
    if grid[-1] % 2 == 0:
        counts = counts.at[-1].set(1.0)
    expected = float(jnp.sum(counts * jnp.where(lam > 0, top**r * lam ** (1 - r), 0.0)))
    assert abs(empirical - expected) < 0.05 * expected, (empirical, expected)
    with pytest.raises(ValueError, match="`power` must be in"):
        InterpolatedNorm(1.5)


def test_interpolated_norm_gives_a_learned_prior_no_gradient(getkey):
    """Its weights come from the prior but are the loss's choice: a learned prior's parameters get
    no gradient from it (they would otherwise shrink the loss by reweighting the modes)."""
    from sdeflow.priors import SpectralMultiplier

    prior = SpectralMultiplier(Matern(2, s=2.0, tau=3.0), modes=3)
    v = jr.normal(getkey(), (1, 12, 12))
    grad = eqx.filter_grad(lambda p: InterpolatedNorm(0.4).squared(VPSDE(p), v))(prior)
    assert float(jnp.max(jnp.abs(grad.log_weights))) == 0.0
    # the same prior does receive a gradient through the Cameron-Martin norm, the likelihood's
    grad_cm = eqx.filter_grad(lambda p: CameronMartinNorm().squared(VPSDE(p), v))(prior)
    assert float(jnp.max(jnp.abs(grad_cm.log_weights))) > 0.0


def _uniform_on(t, t0, t1):
    """Whether draws `t` fit the uniform law on [t0, t1]: the fraction below each decile within 5
    standard errors of it."""
    u = (np.asarray(t, np.float64) - t0) / (t1 - t0)
    p = np.linspace(0.1, 0.9, 9)
    below = np.mean(u[:, None] < p, axis=0)
    return bool(np.all((u >= 0) & (u <= 1)) and np.all(np.abs(below - p) < 5 * np.sqrt(p * (1 - p) / len(u))))


def test_time_sampling(getkey):
    """Stratified: one time in each stratum, in random order; antithetic: pairs $t, t_0 + t_1 - t$;
    all three uniform on $[t_0, t_1]$ in law (deciles of many draws)."""
    t = StratifiedTimeSampling()(getkey(), 64, 0.1, 0.9)
    strata = np.floor((np.asarray(t) - 0.1) / 0.8 * 64).astype(int)
    assert sorted(strata.tolist()) == list(range(64))
    assert strata.tolist() != list(range(64))  # permuted: the first examples are not the earliest times
    t = AntitheticTimeSampling()(getkey(), 64, 0.1, 0.9)
    np.testing.assert_allclose(np.asarray(t[32:]), 1.0 - np.asarray(t[:32]), atol=1e-6)
    for sampling in (UniformTimeSampling(), AntitheticTimeSampling(), StratifiedTimeSampling()):
        many = np.concatenate([np.asarray(sampling(getkey(), 1000, 0.1, 0.9)) for _ in range(10)])
        assert _uniform_on(many, 0.1, 0.9), type(sampling).__name__
    assert not _uniform_on(np.full(10000, 0.5), 0.1, 0.9)  # the check tells a constant apart
    with pytest.raises(ValueError, match="`batch` must be a positive integer, got -1"):
        UniformTimeSampling()(getkey(), -1, 0.0, 1.0)
    with pytest.raises(ValueError, match="non-empty batch"):  # an empty batch's mean was NaN
        dsm_loss(lambda t, x: x, VPSDE(PRIOR), jnp.zeros((0, 1, *GRID)), getkey())


def test_norms(getkey):
    """The L2 norm is the mean over points summed over channels; the Cameron-Martin norm is the
    prior's, and the loss measures the error in the norm it is given."""
    sde = VPSDE(PRIOR)
    v = jr.normal(getkey(), (2, *GRID))
    np.testing.assert_allclose(L2Norm().squared(sde, v), jnp.sum(jnp.mean(v**2, axis=1)), rtol=1e-6)
    np.testing.assert_allclose(CameronMartinNorm().squared(sde, v), PRIOR.cameron_martin_norm2(v), rtol=1e-6)
    x0, key = _data(getkey(), 8), getkey()
    model = lambda t, x: 0.5 * x
    assert dsm_loss(model, sde, x0, key) == dsm_loss(model, sde, x0, key, norm=L2Norm())
    assert dsm_loss(model, sde, x0, key, norm=CameronMartinNorm()) > dsm_loss(model, sde, x0, key)
    # The L1 loss: the mean absolute error of epsilon (not squared), with the same time weights.
    np.testing.assert_allclose(L1Norm().squared(sde, v), jnp.sum(jnp.mean(jnp.abs(v), axis=1)), rtol=1e-6)
    k_t, k_n, _ = jr.split(key, 3)
    t = StratifiedTimeSampling()(k_t, 8, sde.t0, sde.t1)
    x_t, eps, _, _, _ = sdeflow.losses.perturb_batch(sde, k_n, t, x0)
    expected = jnp.mean(jnp.sum(jnp.mean(jnp.abs(0.5 * x_t - eps), axis=(2,)), axis=1))
    np.testing.assert_allclose(dsm_loss(model, sde, x0, key, norm=L1Norm()), expected, rtol=1e-5)


def test_weightings():
    sde = VPSDE(PRIOR)
    t = jnp.asarray(0.4)
    np.testing.assert_allclose(LikelihoodWeighting()(sde, t), sde.gamma_derivative(t))
    snr = jnp.exp(-sde.gamma(t))
    np.testing.assert_allclose(P2Weighting(p2_gamma=1.0, p2_k=1.0)(sde, t), 1 / (1 + snr), rtol=1e-6)
    np.testing.assert_allclose(P2Weighting(p2_gamma=0.0)(sde, t), 1.0)


def test_self_conditioning_hook(getkey):
    """A self-conditioned model gets 2c channels: zeros with rate 0, and with rate 1 its own detached
    x0 estimate from a first pass. The model below predicts epsilon = x_t + cond, so the estimate
    x0 = (x_t - s eps) / m is known and the loss can be checked in closed form."""
    sde = VPSDE(PRIOR)
    x0 = _data(getkey(), 8)
    key = jr.key(3)
    model = lambda t, x: x[:1] + x[1:]
    with_zeros = dsm_loss(model, sde, x0, key, self_conditioning=0.0)
    plain = dsm_loss(lambda t, x: x, sde, x0, key)
    np.testing.assert_allclose(with_zeros, plain, rtol=1e-6)

    def expected(t, x):  # the second pass with cond = the first pass's x0 estimate
        m, s = sde.marginal(t)
        estimate = (x - s * x) / m
        return x + estimate

    with_estimate = dsm_loss(model, sde, x0, key, self_conditioning=1.0)
    np.testing.assert_allclose(with_estimate, dsm_loss(expected, sde, x0, key), rtol=1e-5)
    # With probability 1/2 a coin per example picks the estimate or zeros: on a batch of 64 the loss
    # is strictly between the two (a network that reads its extra channels sees both).
    x0 = _data(getkey(), 64)
    zeros, half, ones = (dsm_loss(model, sde, x0, key, self_conditioning=p) for p in (0.0, 0.5, 1.0))
    assert min(zeros, ones) < half < max(zeros, ones) and abs(ones - zeros) > 1e-3
    with pytest.raises(ValueError, match="self_conditioning"):
        dsm_loss(model, sde, x0, key, self_conditioning=2.0)


def test_vdm_elbo_matches_its_closed_form_and_bounds_the_likelihood(getkey):
    """For Gaussian data and the optimal denoiser, per mode with SNR r = m^2/s^2:
    diffusion = 1/2 log((r0 d + lam) / (r1 d + lam)), reconstruction = 1/2 + 1/2 log(2 pi N lam / r0),
    prior = r1 x_k^2 / (2 lam). The Monte Carlo ELBO matches this within 4 standard errors, and the
    closed form lies above the exact -log p(x0), by less than 0.05 nats."""
    sde = VPSDE(PRIOR, t0=1e-2)
    x0 = _data(getkey(), 4096)
    model = lambda t, x: _optimal_eps(sde, t, x)
    per_sample = jax.vmap(lambda x, k: vdm_elbo(model, sde, x[None], k)[0])(x0, jr.split(getkey(), 4096))
    estimate, se = float(jnp.mean(per_sample)), float(jnp.std(per_sample)) / math.sqrt(4096)

    lam, d = (np.asarray(p.eigenvalues(GRID), np.float64) for p in (PRIOR, DATA))
    mult = np.where(np.arange(lam.size) == 0, 1.0, 2.0)
    (m0, s0), (m1, s1) = (map(float, sde.marginal(t)) for t in (sde.t0, sde.t1))
    r0, r1 = (m0 / s0) ** 2, (m1 / s1) ** 2
    n_points = GRID[0]
    x_hat2 = np.mean(np.abs(np.asarray(jax.vmap(sdeflow.fourier)(x0)[:, 0])) ** 2, axis=0)
    closed = np.sum(
        mult * (0.5 * np.log((r0 * d + lam) / (r1 * d + lam)) + 0.5 + 0.5 * np.log(2 * np.pi * n_points * lam / r0)
                + r1 * x_hat2 / (2 * lam))
    )
    assert abs(estimate - closed) < 4 * se, (estimate, closed, se)
    exact = -float(jnp.mean(jax.vmap(lambda x: DATA.log_density(x - MU))(x0)))
    assert 0 <= closed - exact < 0.05, (closed, exact)


@pytest.mark.parametrize("grid, channels", [((9,), 1), ((8, 7), 2)], ids=["odd_1d", "even_2d_two_channels"])
def test_vdm_elbo_runs_under_jit(grid, channels, getkey):
    """The ELBO compiles (its dimension count depends on the static grid only) and equals the eager
    value, every term to float32 round-off; the reconstruction term, which holds the count, has its
    closed form $D/2 - \\log N(0; 0, C) + D \\log(s_0 / m_0)$ with $D$ the kept modes of every channel
    ($9$ on a 9-grid, $2 \\cdot 7 \\cdot 7 = 98$ for two channels on an 8x7 grid, Nyquist row dropped)."""
    prior = Matern(len(grid), s=1.5, tau=3.0)
    sde = VPSDE(prior, t0=1e-2)
    x0 = jax.vmap(lambda k: prior.sample(k, (channels, *grid)))(jr.split(getkey(), 8))
    key = getkey()
    model = lambda t, x: 0.5 * x
    eager_loss, eager_terms = vdm_elbo(model, sde, x0, key)
    jit_loss, jit_terms = eqx.filter_jit(vdm_elbo)(model, sde, x0, key)
    np.testing.assert_allclose(jit_loss, eager_loss, rtol=1e-5)
    for name in ("diffusion", "prior", "reconstruction"):
        np.testing.assert_allclose(jit_terms[name], eager_terms[name], rtol=1e-5)
    dims = channels * math.prod(n - (n % 2 == 0) for n in grid)
    m0, s0 = sde.marginal(sde.t0)
    closed = 0.5 * dims - prior.log_density(jnp.zeros((channels, *grid))) + dims * jnp.log(s0 / m0)
    np.testing.assert_allclose(jit_terms["reconstruction"], closed, rtol=1e-5)


def test_networks_batched_path_is_used_and_equal(getkey):
    """A network with a `batched` method is called once on the batch; the loss equals the vmap path."""

    class Net(eqx.Module):
        weight: jax.Array
        calls: list = eqx.field(static=True)

        def __call__(self, t, x):
            return self.weight * x * t

        def batched(self, t, x):
            self.calls.append(x.shape)
            return jnp.einsum("b,bcn->bcn", t, self.weight * x)

    net = Net(jnp.asarray(0.7), [])
    sde = VPSDE(PRIOR)
    x0, key = _data(getkey(), 16), getkey()
    for loss in (dsm_loss, lambda *a: vdm_elbo(*a)[0]):
        via_batched = loss(net, sde, x0, key)
        via_vmap = loss(lambda t, x: net(t, x), sde, x0, key)
        np.testing.assert_allclose(via_batched, via_vmap, rtol=1e-6)
    assert net.calls == [(16, 1, 9), (16, 1, 9)]


def test_resolution_consistency_penalises_what_changes_with_the_grid(getkey):
    """The penalty is zero for a network that is one operator on every grid (a spectral multiplier),
    and for one whose pointwise square aliases on the grid it is the weighted squared difference
    between its noise estimate on the grid and on the 2x grid restricted back, for the same
    (prolonged) input, over the batch's first examples: here computed by hand."""
    n = 16
    sde = VPSDE(Matern(1, s=1.0, tau=3.0))
    x0 = jax.vmap(lambda k: DATA.sample(k, (1, n)))(jr.split(getkey(), 8))
    key = jr.key(5)
    weighting = P2Weighting(p2_gamma=0.5, p2_k=1.0)
    penalty = ResolutionConsistency(0.5, examples=3)

    def smooth(t, x):  # the same operator on every grid
        return sdeflow.restrict(sdeflow.prolong(x, (3 * x.shape[1],)), x.shape[1:]) * t

    def rough(t, x):  # x^2 on the grid folds its modes beyond the Nyquist mode onto the kept ones
        return x + t * jnp.square(x)

    def loss(model, consistency):
        return dsm_loss(model, sde, x0, key, weighting=weighting, consistency=consistency)

    np.testing.assert_allclose(loss(smooth, penalty), loss(smooth, None), rtol=1e-6)
    # whatever the network predicts, with self-conditioning's extra channels, on more examples than the batch
    for kind in (X0(), V(), Score()):
        for options in ({}, {"self_conditioning": 0.5}):
            double = (lambda t, x: smooth(t, x[:1] + x[1:])) if options else smooth
            with_penalty = dsm_loss(double, sde, x0, key, parameterisation=kind,
                                    consistency=ResolutionConsistency(1.0, examples=20), **options)
            np.testing.assert_allclose(with_penalty, dsm_loss(double, sde, x0, key, parameterisation=kind, **options),
                                       rtol=1e-5)
    t_key, noise_key, _ = jr.split(key, 3)
    t = StratifiedTimeSampling()(t_key, 8, sde.t0, sde.t1)
    x_t = perturb_batch(sde, noise_key, t, x0)[0]
    by_hand = []
    for i in range(3):
        fine = sdeflow.resample(rough(t[i], sdeflow.resample(x_t[i], (2 * n,))), (n,))
        by_hand.append(weighting(sde, t[i]) * jnp.mean(jnp.square(rough(t[i], x_t[i]) - fine)))
    expected = 0.5 * float(jnp.mean(jnp.stack(by_hand)))
    got = float(loss(rough, penalty) - loss(rough, None))
    assert expected > 1e-5  # measured 1.6e-4, beside a loss of 1.8
    np.testing.assert_allclose(got, expected, rtol=1e-3)
    for bad in (dict(weight=-1.0), dict(weight=1.0, examples=0), dict(weight=1.0, factor=1)):
        with pytest.raises(ValueError):
            ResolutionConsistency(**bad)


def test_the_elbo_prior_term_measures_against_the_terminal_law():
    """The prior term is $KL(N(m_1 x_0 + b_1, s_1^2 C) \\| N(\\mu_1, s_1^2 C))$: $m_1^2 \\|x_0\\|_C^2 / (2 s_1^2)$
    for a VP SDE, $m_1^2 \\|x_0 - x^*\\|_C^2 / (2 s_1^2)$ for a bridge (its terminal law is centred at its
    target), so zero for data at the target."""
    target = 0.7 + jnp.sin(4 * jnp.pi * sdeflow.coordinates(GRID))
    bridge = OUBridge(PRIOR, target=target, theta=2.0, eta=2.0)
    x0 = jnp.stack([target, target + 0.3 * jnp.cos(2 * jnp.pi * sdeflow.coordinates(GRID)), 0 * target])
    model = lambda t, x: 0 * x
    for sde, centre in ((VPSDE(PRIOR), 0 * target), (bridge, target)):
        m1, s1 = sde.marginal(sde.t1)
        prior = vdm_terms(model, sde, x0, jr.key(0))["prior"]
        expected = [0.5 * m1**2 * PRIOR.cameron_martin_norm2(x - centre) / s1**2 for x in x0]
        np.testing.assert_allclose(prior, jnp.stack(expected), rtol=1e-5, atol=1e-8)
    assert float(vdm_terms(model, bridge, x0, jr.key(0))["prior"][0]) < 1e-8

