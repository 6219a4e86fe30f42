"""Variational diffusion: the ELBO with a learned schedule on Gaussian data with the exact score,
its invariance to the schedule between fixed end points, the variance-reducing gradient, the
learned schedule under optimiser steps, the discretised decoder and the Fourier features."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import nets
import sdeflow
from sdeflow.losses import DiscretisedDecoder, vdm_elbo, vdm_terms
from sdeflow.priors import Matern
from sdeflow.sde import LearnedSchedule, VPSDE

GRID = (9,)  # odd: every mode is kept, so the model's law is that of all the point values
PRIOR = Matern(1, s=1.0, tau=3.0)
DATA = Matern(1, s=1.5, tau=8.0, variance=0.5)  # the data's covariance D, diagonal in Fourier
MU = 0.3 * jnp.cos(2 * jnp.pi * sdeflow.coordinates(GRID))
COUNT = 2048


class ExactEpsilon(eqx.Module):
    """$E[\\epsilon | x_t]$ for $x_0 \\sim N(\\mu, D)$ under `sde`, per mode
    $s \\lambda / (m^2 d + s^2 \\lambda) (x_t - m \\mu)$; `weight` (1) gives the network a parameter.
    No gradient reaches the schedule through it: it is the network, the schedule is apart."""

    sde: VPSDE
    weight: jax.Array = eqx.field(default_factory=lambda: jnp.ones(()))

    def __call__(self, t, x):
        m, s = jax.lax.stop_gradient(self.sde.marginal(t))
        lam, d = PRIOR.eigenvalues(GRID), DATA.eigenvalues(GRID)
        gain = s * lam / (m**2 * d + s**2 * lam)
        return self.weight * sdeflow.inverse_fourier(gain * sdeflow.fourier(x - m * MU), GRID)


def _data(key, count=COUNT):
    return jax.vmap(lambda k: DATA.sample(k, (1, *GRID)) + MU)(jr.split(key, count))


def _sde(schedule):
    return VPSDE(PRIOR, schedule, t0=0.0)


@eqx.filter_jit
def _per_example(schedule, x0, key, **kwargs):
    """The ELBO's terms of each example with the exact score of `schedule`'s SDE (one time each)."""
    sde = _sde(schedule)
    return jax.vmap(lambda x, k: vdm_terms(ExactEpsilon(sde), sde, x[None], k, **kwargs))(x0, jr.split(key, len(x0)))


def _bent(key):
    """A learned schedule (end points -8, 6 fixed) far from the initial near-linear one: most of
    its rise is a steep step near t = 0.2."""
    s = LearnedSchedule(-8.0, 6.0, learn_endpoints=False, hidden=8, key=key)
    w2 = jnp.stack([jnp.full((8,), 20.0), 6.0 + 0.1 * s.w2[1]])
    return eqx.tree_at(lambda s: (s.w1, s.w2, s.w3), s, (jnp.array([0.5413, 0.0]), w2, jnp.full((8,), 5.0)))


def test_elbo_with_the_exact_score_is_the_exact_likelihood_up_to_the_decoder(getkey):
    """With the exact score the ELBO is $-\\log p(x_0)$ but for the decoder's discretisation at
    $\\gamma_0$ and the prior's mismatch at $\\gamma_1$: at $\\gamma_0 = -12$, $\\gamma_1 = 10$ it matches
    the exact Gaussian log-density within 4 standard errors and 2e-3 nats per example, and at
    $\\gamma_0 = -3$ it lies clearly above (the gap is the decoder's)."""
    x0, key = _data(getkey()), getkey()
    exact = -np.asarray(jax.vmap(lambda x: DATA.log_density(x - MU))(x0), np.float64)
    gaps = {}
    for g0 in (-12.0, -3.0):
        schedule = LearnedSchedule(g0, 10.0, learn_endpoints=False, hidden=8, key=getkey())
        terms = _per_example(schedule, x0, key)
        diff = np.asarray(sum(terms.values()), np.float64)[:, 0] - exact
        gaps[g0] = (diff.mean(), diff.std() / math.sqrt(COUNT))
    mean, se = gaps[-12.0]
    assert abs(mean) < 4 * se + 2e-3, gaps
    assert gaps[-3.0][0] > gaps[-12.0][0] + 0.1 + 4 * gaps[-3.0][1], gaps


def test_diffusion_term_does_not_depend_on_the_schedule_between_its_end_points(getkey):
    """Two schedules with the same end points but very different shapes: with the exact score the
    diffusion term has the same expectation (within 4 combined standard errors), though the
    per-example variances differ."""
    near_linear = LearnedSchedule(-8.0, 6.0, learn_endpoints=False, hidden=8, key=getkey())
    bent = _bent(getkey())
    assert abs(float(near_linear.gamma(0.5) - bent.gamma(0.5))) > 1.0
    x0 = _data(getkey())
    stats = []
    for schedule in (near_linear, bent):
        d = np.asarray(_per_example(schedule, x0, getkey())["diffusion"], np.float64)[:, 0]
        stats.append((d.mean(), d.std() / math.sqrt(COUNT), d.var()))
    (m1, se1, v1), (m2, se2, v2) = stats
    assert abs(m1 - m2) < 4 * math.hypot(se1, se2), stats
    assert max(v1, v2) > 1.5 * min(v1, v2), stats


def test_variance_reducing_gradient(getkey):
    """The gradient with `variance_reduction`: the same loss value; the network's and the end
    points' gradients are the ELBO's, the shape's that of the batch mean of $L_{diff}^2$; and a
    few Adam steps on it alone lower the variance of the diffusion term's estimate."""
    learned = LearnedSchedule(-8.0, 6.0, learn_endpoints=True, hidden=8, key=getkey())
    x0, key = _data(getkey(), 16), getkey()

    def elbo(parts, vr):
        sde = _sde(parts[1])
        return vdm_elbo(ExactEpsilon(sde, parts[0]), sde, x0, key, variance_reduction=vr)[0]

    def squared(parts):
        sde = _sde(parts[1])
        return jnp.mean(vdm_terms(ExactEpsilon(sde, parts[0]), sde, x0, key)["diffusion"] ** 2)

    parts = (jnp.asarray(0.9), learned)

    @eqx.filter_jit
    def gradients(parts):
        return (eqx.filter_value_and_grad(lambda p: elbo(p, False))(parts),
                eqx.filter_value_and_grad(lambda p: elbo(p, True))(parts), eqx.filter_grad(squared)(parts))

    (plain, g_plain), (reduced, g_reduced), g_square = gradients(parts)
    np.testing.assert_allclose(reduced, plain, rtol=1e-5)
    np.testing.assert_allclose(g_reduced[0], g_plain[0], rtol=1e-4)
    for name in ("gamma_start", "gamma_gap"):
        np.testing.assert_allclose(getattr(g_reduced[1], name), getattr(g_plain[1], name), rtol=1e-4)
    for name in ("w1", "w2", "w3"):
        expected = getattr(g_square[1], name)  # (float32 sums of large squares: to 1e-3 of the largest entry)
        np.testing.assert_allclose(getattr(g_reduced[1], name), expected, atol=1e-3 * float(jnp.max(jnp.abs(expected))))
        assert not np.allclose(getattr(g_plain[1], name), expected, atol=1e-2 * float(jnp.max(jnp.abs(expected))))

    # Descending it from a bent schedule (end points fixed) lowers the estimate's variance.
    schedule = _bent(getkey())
    optimiser = optax.adam(0.1)
    params, static = eqx.partition(schedule, eqx.is_inexact_array)
    state = optimiser.init(params)

    @jax.jit
    def step(params, state, key):
        def loss(params):
            sde = _sde(eqx.combine(params, static))
            return vdm_elbo(ExactEpsilon(sde), sde, _data(key, 32), jr.fold_in(key, 1), variance_reduction=True)[0]

        updates, state = optimiser.update(jax.grad(loss)(params), state)
        return optax.apply_updates(params, updates), state

    x_check, key_check = _data(getkey(), 512), getkey()
    before = float(jnp.var(_per_example(schedule, x_check, key_check)["diffusion"]))
    for key in jr.split(getkey(), 20):
        params, state = step(params, state, key)
    after = float(jnp.var(_per_example(eqx.combine(params, static), x_check, key_check)["diffusion"]))
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("learn", [False, True], ids=["fixed_ends", "learned_ends"])
def test_learned_schedule_stays_monotone_after_any_step(learn, getkey):
    """After AdamW steps of learning rate 1 (weight decay 0.5) and 1000 along random directions,
    the schedule is finite and increasing, and fixed end points are exactly those it was given."""
    ts = jnp.linspace(0.0, 1.0, 257)
    for lr, decay in ((1.0, 0.5), (1000.0, 0.0)):
        schedule = LearnedSchedule(-7.0, 5.0, learn_endpoints=learn, hidden=16, key=getkey())
        params, static = eqx.partition(schedule, eqx.is_inexact_array)
        optimiser = optax.adamw(lr, weight_decay=decay)
        state = optimiser.init(params)

        @jax.jit
        def step(params, state, key):
            signs = jr.rademacher(key, ts.shape, jnp.float32)
            grads = jax.grad(lambda p: jnp.sum(signs * jax.vmap(eqx.combine(p, static).gamma)(ts)))(params)
            updates, state = optimiser.update(grads, state, params)
            params = optax.apply_updates(params, updates)
            return params, state, jax.vmap(eqx.combine(params, static).gamma)(ts)

        for key in jr.split(getkey(), 5):
            params, state, gamma = step(params, state, key)
            trained = eqx.combine(params, static)
            assert bool(jnp.all(jnp.isfinite(gamma))) and bool(jnp.all(jnp.diff(gamma) >= 0)), (lr, gamma)
            assert float(gamma[-1]) > float(gamma[0])
            np.testing.assert_allclose([gamma[0], gamma[-1]], trained.endpoints(), rtol=1e-5, atol=1e-4)
            if not learn:
                np.testing.assert_allclose(trained.endpoints(), [-7.0, 5.0], rtol=1e-6)


def test_discretised_decoder_is_a_distribution_over_the_levels(getkey):
    """The decoder's probabilities over the 256 values sum to one at every point; its term is minus
    the log-probability of the observed levels, near 0 for a small $\\sigma_0$ and large for a wide
    one; values off the levels are taken at the nearest level."""
    decoder = DiscretisedDecoder()
    schedule = LearnedSchedule(-14.0, 6.0, learn_endpoints=False, hidden=8, key=getkey())
    sde = _sde(schedule)  # sigma_0 = e^-7 sigma_C: a tenth of a bin
    levels = jr.randint(getkey(), (3, 1, *GRID), 0, 256)
    x0 = levels.astype(jnp.float32) * (2 / 255) - 1
    z = jax.vmap(lambda x, k: sde.perturb(k, sde.t0, x)[0])(x0, jr.split(getkey(), 3))
    log_probabilities = jax.jit(jax.vmap(lambda v: decoder.log_probabilities(sde, v)))
    reconstruction = eqx.filter_jit(decoder.reconstruction)
    log_p = log_probabilities(z)
    assert log_p.shape == (3, 1, *GRID, 256)
    np.testing.assert_allclose(jnp.sum(jnp.exp(log_p), axis=-1), 1.0, atol=1e-5)
    key = getkey()
    recon = reconstruction(sde, x0, key)
    z_used = jax.vmap(lambda x, k: sde.perturb(k, sde.t0, x)[0])(x0, jr.split(key, 3))
    observed = jnp.take_along_axis(log_probabilities(z_used),
                                   levels[..., None], axis=-1)
    np.testing.assert_allclose(recon, -jnp.sum(observed, axis=(1, 2, 3)), rtol=1e-5)
    assert float(jnp.max(recon)) < 0.05 * GRID[0]  # the observed level is almost sure
    np.testing.assert_allclose(reconstruction(sde, x0 + 0.3 / 255, key), recon, rtol=1e-6, atol=1e-5)
    wide = _sde(LearnedSchedule(-1.0, 6.0, learn_endpoints=False, hidden=8, key=getkey()))
    assert float(jnp.min(reconstruction(wide, x0, key))) > 2.0 * GRID[0]


def test_discretised_decoder_written_out(getkey):
    """The decoder's log-probabilities by hand: $y = (z - b_0) / m_0$ and the logits
    $-(y - v_j)^2 / 2\\sigma^2$ over the 256 levels, $\\sigma^2 = (s_0 / m_0)^2$ times the prior's
    pointwise variance on the grid (every mode of the full spectrum once), normalised over $j$.
    A bridge at $t_0 = 0.3$ has $m_0 = 0.74$ and an offset $b_0 = (1 - m_0) x^*$, so that dropping
    the centring or counting the rfft layout's modes once each changes the result."""
    from sdeflow.sde import OUBridge

    target = 0.4 + 0.2 * jnp.sin(2 * jnp.pi * sdeflow.coordinates(GRID))
    sde = OUBridge(PRIOR, target=target, theta=1.0, eta=0.1, t0=0.3)
    m0, s0 = (float(v) for v in sde.marginal(sde.t0))
    b0 = np.asarray(sde.mean(sde.t0, jnp.zeros((1, *GRID))), np.float64)
    k = sdeflow.integer_frequencies(GRID[0])
    pointwise = float(np.sum(np.asarray(PRIOR.sqrt_spectrum((jnp.asarray(k),)), np.float64) ** 2))
    variance = (s0 / m0) ** 2 * pointwise
    z = np.asarray(jr.uniform(getkey(), (1, *GRID), minval=-1.0, maxval=1.0), np.float64)
    values = np.linspace(-1.0, 1.0, 256)
    logits = -0.5 * ((z - b0) / m0 - values[:, None, None]) ** 2 / variance
    expected = logits - np.log(np.sum(np.exp(logits - logits.max(0)), axis=0)) - logits.max(0)
    got = DiscretisedDecoder().log_probabilities(sde, jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(np.moveaxis(np.asarray(got), -1, 0), expected, rtol=1e-4, atol=1e-3)


def test_fourier_features_are_pointwise_on_every_grid(getkey):
    """sin/cos(2^k pi u) of the values: restricting the features of a 32-grid field to the 16-grid
    points gives the features of the restricted field; an FNO with them takes them in, its batched
    path equal to the vmapped one."""
    u = jr.normal(getkey(), (2, 1, 32, 32))
    features = nets.value_fourier_features(u, [6, 7], axis=1)
    assert features.shape == (2, 5, 32, 32)
    expected = [u[:, 0]] + [f(2.0**k * jnp.pi * u[:, 0]) for f in (jnp.sin, jnp.cos) for k in (6, 7)]
    np.testing.assert_allclose(features, jnp.stack(expected, axis=1), atol=1e-5)
    # integer values get the same features as their float values (not angles scaled by an integer pi)
    ints = jnp.arange(-3, 3).reshape(1, 1, 6)
    np.testing.assert_allclose(nets.value_fourier_features(ints, [0, 1], axis=1),
                               nets.value_fourier_features(ints.astype(jnp.float32), [0, 1], axis=1), atol=1e-6)
    np.testing.assert_allclose(features[..., ::2, ::2], nets.value_fourier_features(u[..., ::2, ::2], [6, 7], axis=1))
    net = nets.FNO(1, 1, width=8, modes=3, depth=1, groups=4, fourier_features=[6, 7], key=getkey())
    assert net.lift.in_channels == 5 + 4  # 1 + 2 x 2 value features, 4 periodic coordinates
    t, x = jnp.array([0.2, 0.7]), u[..., ::2, ::2]
    batched = eqx.filter_jit(lambda net, t, x: net.batched(t, x))(net, t, x)
    np.testing.assert_allclose(batched, eqx.filter_jit(lambda net, t, x: jax.vmap(net)(t, x))(net, t, x), atol=1e-5)


def test_a_fixed_schedule_without_noise_at_t0_is_refused(getkey):
    """With a fixed schedule and t0 = 0, s(t0) = 0 and the decoder's term was -inf or NaN: the
    ELBO says why (which the evaluation reports instead of failing); a learned schedule's gamma(0)
    is finite, and a trained (traced) one is not judged."""
    sde = VPSDE(Matern(1, 1.5), t0=0.0)
    with pytest.raises(ValueError, match="needs noise at t0"):
        vdm_terms(lambda t, x: 0 * x, sde, jnp.zeros((2, 1, 8)), getkey())
    assert "needs noise at t0" in sdeflow.losses.elbo_undefined(sde)
    assert sdeflow.losses.elbo_undefined(VPSDE(Matern(1, 1.5))) is None
    learned = VPSDE(Matern(1, 1.5), LearnedSchedule(key=getkey()), t0=0.0)
    assert sdeflow.losses.elbo_undefined(learned) is None
    assert jax.jit(lambda sde: sdeflow.losses.elbo_undefined(sde) is None)(learned)
