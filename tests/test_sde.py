"""Forward SDEs: closed-form marginals against diffrax simulations, schedules."""

import math

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdeflow
from sdeflow.priors import Matern
from sdeflow.sde import (
    CosineSchedule,
    LearnedSchedule,
    LinearSchedule,
    OUBridge,
    SubVPSDE,
    VESDE,
    VPSDE,
)


GRID = (8,)
PRIOR = Matern(1, s=1.0, tau=4.0)
_X0 = jnp.sin(2 * jnp.pi * sdeflow.coordinates(GRID))  # (1, 8)


def _sdes():
    return {
        "vp-linear": VPSDE(PRIOR, LinearSchedule(0.1, 20.0)),
        "vp-cosine": VPSDE(PRIOR, CosineSchedule(), t1=0.99),
        "subvp": SubVPSDE(PRIOR, LinearSchedule(0.1, 20.0)),
        "ve": VESDE(PRIOR, sigma_min=0.01, sigma_max=5.0),
        "ou-bridge": OUBridge(PRIOR, target=0.5 * jnp.cos(2 * jnp.pi * sdeflow.coordinates((5,))), theta=3.0, eta=2.0),
    }


@pytest.mark.parametrize("name", list(_sdes()))
def test_marginal_matches_euler_maruyama(name, getkey):
    """Start from the exact marginal at t0, simulate with diffrax Euler–Maruyama to t = 0.6, and
    compare the mean (pointwise) and the variance of each Fourier mode with N(m x0 + b, s^2 C).

    Monte Carlo tolerance: 5 standard errors (mean: s sqrt(tr_n C / B); mode variances: relative
    sqrt(2 / B)), plus the O(dt) bias of Euler–Maruyama with 400 steps."""
    sde = _sdes()[name]
    batch, steps, t_end = 2000, 400, 0.6
    x0 = _X0

    def simulate(key):
        k_start, k_bm = jr.split(key)
        x_start, _ = sde.perturb(k_start, sde.t0, x0)
        bm = diffrax.UnsafeBrownianPath(shape=x0.shape, key=k_bm)
        sol = diffrax.diffeqsolve(
            sde.forward_terms(bm), diffrax.Euler(), sde.t0, t_end, (t_end - sde.t0) / steps, x_start,
            saveat=diffrax.SaveAt(t1=True), max_steps=steps + 1, adjoint=diffrax.ForwardMode(),
        )
        return sol.ys[0]

    xs = jax.jit(jax.vmap(simulate))(jr.split(getkey(), batch))
    m, s = sde.marginal(t_end)
    mean = sde.mean(t_end, x0)
    pointwise_var = float(np.sum(PRIOR.eigenvalues(GRID) * np.where(np.arange(5) == 0, 1, 2)))
    se_mean = float(s) * math.sqrt(pointwise_var / batch)
    assert float(jnp.max(jnp.abs(jnp.mean(xs, 0) - mean))) < 5 * se_mean + 0.01 * float(jnp.max(jnp.abs(mean)))
    modes = jax.vmap(sdeflow.fourier)(xs - mean)[:, 0]
    var = jnp.mean(jnp.abs(modes) ** 2, axis=0)
    expected = s**2 * PRIOR.eigenvalues(GRID)
    kept = expected > 0
    rel = jnp.abs(var[kept] / expected[kept] - 1)
    assert float(jnp.max(rel)) < 5 * math.sqrt(2 / batch) + 0.02, (name, rel)


@pytest.mark.parametrize("name", list(_sdes()))
def test_drift_and_diffusion_agree_with_marginal(name):
    """d/dt m = f m and d/dt s^2 = 2 f s^2 + g^2: the coefficients are those of the marginal."""
    sde = _sdes()[name]
    for t in (0.05, 0.3, 0.7):
        t = jnp.asarray(t)
        dm = jax.jvp(lambda t: sde.marginal(t)[0], (t,), (jnp.ones(()),))[1]
        ds2 = jax.jvp(lambda t: sde.marginal(t)[1] ** 2, (t,), (jnp.ones(()),))[1]
        m, s = sde.marginal(t)
        f, g = sde.drift_coefficient(t), sde.diffusion(t)
        np.testing.assert_allclose(dm, f * m, rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(ds2, 2 * f * s**2 + g**2, rtol=2e-3, atol=1e-5)


def test_cosine_schedule_rate_is_finite_and_non_negative_up_to_one():
    """beta of the cosine schedule falls to 0 at t = 1 (not below: g = sqrt(beta) there)."""
    sde = VPSDE(PRIOR, CosineSchedule())
    ts = jnp.concatenate([jnp.linspace(0.0, 1.0, 101), jnp.array([0.9999, 0.99999])])
    beta = jax.vmap(sde.schedule.beta)(ts)
    assert bool(jnp.all(beta >= 0)) and bool(jnp.all(jnp.isfinite(jax.vmap(sde.diffusion)(ts))))
    assert float(sde.schedule.beta(1.0)) == 0.0


def test_vp_preserves_variance_and_schedules():
    for schedule in (LinearSchedule(), CosineSchedule(), LearnedSchedule(key=jr.key(0))):
        sde = VPSDE(PRIOR, schedule)
        ts = jnp.linspace(0.01, 0.99, 50)
        m, s = jax.vmap(sde.marginal)(ts)
        np.testing.assert_allclose(m**2 + s**2, 1.0, atol=1e-5)
        gamma = jax.vmap(schedule.gamma)(ts)
        assert bool(jnp.all(jnp.diff(gamma) > 0)), type(schedule).__name__
        np.testing.assert_allclose(jax.vmap(sde.gamma)(ts), gamma, rtol=1e-4, atol=1e-4)
    # Cosine (Nichol and Dhariwal): m^2 = min + (1 - min) cos^2(pi/2 (t + s)/(1 + s)) / cos^2(pi/2 s/(1 + s)).
    sde = VPSDE(PRIOR, CosineSchedule(offset=0.008, min_alpha_bar=1e-5))
    for t in (0.25, 0.5, 0.9):
        alpha_bar = math.cos(math.pi / 2 * (t + 0.008) / 1.008) ** 2 / math.cos(math.pi / 2 * 0.008 / 1.008) ** 2
        np.testing.assert_allclose(sde.marginal(t)[0] ** 2, 1e-5 + (1 - 1e-5) * alpha_bar, rtol=1e-5)
    # Linear: B(t) = beta_min t + (beta_max - beta_min) t^2 / 2 and m^2 = exp(-B).
    sde = VPSDE(PRIOR, LinearSchedule(0.1, 20.0))
    m, _ = sde.marginal(0.5)
    np.testing.assert_allclose(m**2, math.exp(-(0.05 + 19.9 / 8)), rtol=1e-5)


def test_learned_schedule_endpoints_fixed_or_learned():
    import equinox as eqx

    for learn in (True, False):
        sched = LearnedSchedule(-10.0, 4.0, learn_endpoints=learn, key=jr.key(1))
        np.testing.assert_allclose([sched.gamma(0.0), sched.gamma(1.0)], [-10.0, 4.0], atol=1e-4)
        grads = eqx.filter_grad(lambda s: s.gamma(0.3))(sched)
        assert (float(jnp.abs(grads.gamma_gap)) > 0) == learn
        assert float(jnp.sum(jnp.abs(grads.w2))) > 0


def test_ou_bridge_target_is_a_function():
    """The target given on a 5-grid is used as the same function on any grid; the law at t1 from
    0 is centred at (1 - m) x*, the terminal law at x* itself, and the drift pulls toward x*."""
    sde = _sdes()["ou-bridge"]
    x = jnp.zeros((1, 16))
    target16 = 0.5 * jnp.cos(2 * jnp.pi * sdeflow.coordinates((16,)))
    m, s = sde.marginal(1.0)
    np.testing.assert_allclose(sde.mean(1.0, x), (1 - m) * target16, atol=1e-6)
    np.testing.assert_allclose(sde.drift(0.2, target16), 0.0, atol=1e-6)
    np.testing.assert_allclose(sde.terminal_mean(x), target16, atol=1e-6)


def test_samplers_start_from_the_bridge_terminal_law_centred_on_its_target():
    """`terminal_sample` and the samplers' own start draw N(x*, s(1)^2 C): over 4000 draws their
    mean is x* within 4 standard errors, far from the law from zero's centre (1 - m(1)) x*."""
    from sdeflow.samplers.base import _terminal_sample

    target = 3.0 + jnp.cos(2 * jnp.pi * sdeflow.coordinates((16,)))
    sde = OUBridge(PRIOR, target=target, theta=1.0, eta=2.0)
    m, s = sde.marginal(sde.t1)
    bound = 4 * float(s) * float(jnp.sqrt(PRIOR.trace() / 4000))  # tr C bounds the grid variance
    assert float(jnp.min(m * target)) > 5 * bound  # the two centres are far apart
    keys = jr.split(jr.key(0), 4000)
    for draw in (sde.terminal_sample, lambda k, shape: _terminal_sample(sde, k, shape)):
        draws = jax.vmap(lambda k, draw=draw: draw(k, (1, 16)))(keys)
        assert float(jnp.max(jnp.abs(draws.mean(0) - target))) < bound


def test_terminal_law_of_the_other_sdes_is_their_law_from_zero():
    """VP, VE and sub-VP end at N(b(t1), s(t1)^2 C) with b = 0: `terminal_mean` is zero and
    `terminal_sample` is `perturb` from zero with the same key."""
    x = jnp.ones((1, *GRID))
    for name, sde in _sdes().items():
        if name == "ou-bridge":
            continue
        np.testing.assert_array_equal(sde.terminal_mean(x), np.zeros_like(x))
        key = jr.key(1)
        np.testing.assert_allclose(sde.terminal_sample(key, x.shape), sde.perturb(key, sde.t1, 0 * x)[0], atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="t0"):
        VPSDE(PRIOR, t0=0.5, t1=0.1)
    with pytest.raises(ValueError, match="beta_min"):
        LinearSchedule(-1.0, 2.0)
    with pytest.raises(ValueError, match="sigma_max"):
        VESDE(PRIOR, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="theta"):
        OUBridge(PRIOR, target=jnp.zeros((1, 4)), theta=-1.0)
    with pytest.raises(ValueError, match="channels"):
        OUBridge(PRIOR, target=jnp.zeros((2, 4))).mean(0.5, jnp.zeros((1, 4)))
    # The cosine schedule ends at t = 1: past it alpha_bar grows again, g(t) is NaN and the
    # likelihood weighting negative, so an SDE there is refused (a linear one goes on).
    for sde in (VPSDE, SubVPSDE):
        with pytest.raises(ValueError, match=r"`t1` = 1.5 is past the end of CosineSchedule"):
            sde(PRIOR, CosineSchedule(), t1=1.5)
        assert sde(PRIOR, CosineSchedule(), t1=1.0).t1 == 1.0 and sde(PRIOR, LinearSchedule(), t1=1.5).t1 == 1.5
