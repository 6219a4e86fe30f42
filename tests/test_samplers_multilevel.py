"""`MultilevelSampler`: coarse-to-fine sampling is exact for data band-limited to the coarse grid.

The oracle test of `test_samplers.py` (2000 samples) with data whose covariance and mean live on
the modes $|k| < 8$ of the coarse 16-grid: fed the exact score, the sampler that runs on the 16-grid
down to $t_s = 0.3$ (140 Euler–Maruyama steps) and on the target grid below (60 steps) must give
the law of Euler–Maruyama with 200 steps on the target grid throughout (the same step 0.005 near
$t_0$). On the data modes both must match the exact law (each mode's variance within 15%, their
mean within 5%, as in `test_samplers.py`). The modes without data end with the variance
$s(t_0)^2 \\lambda_k \\approx 10^{-4} \\lambda_k$, which a step of 0.005 does not resolve (Euler–Maruyama
leaves about 10 times that at any grid), so there the two samplers are compared with each other:
within 20% per mode (the ratio of two sample variances has a relative standard deviation of
4.5%). A negative control shows what the band limit buys: for data with content beyond the coarse
modes the same sampler loses that content.
"""

from typing import ClassVar

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from test_samplers import draw_samples, mode_variance_ratios

import sdeflow
from sdeflow import samplers
from sdeflow.priors import AbstractPrior, Matern
from sdeflow.sde import VPSDE


COARSE = 16
SWITCH = 0.3


class BandLimited(AbstractPrior):
    """A Matérn covariance cut to the modes $|k| <$ `cutoff` (a degenerate data covariance)."""

    inner: Matern
    cutoff: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    degenerate: ClassVar[bool] = True
    trace_class: ClassVar[bool] = True

    def __init__(self, inner: Matern, cutoff: int):
        self.inner, self.cutoff, self.dim = inner, cutoff, inner.dim

    def sqrt_spectrum(self, k):
        inside = jnp.ones((), bool)
        for k_i in k:
            inside = inside & (jnp.abs(k_i) < self.cutoff)
        return jnp.where(inside, self.inner.sqrt_spectrum(k), 0.0)

    def trace(self):
        k = jnp.arange(-self.cutoff + 1, self.cutoff)
        return jnp.sum(self.sqrt_spectrum((k,)) ** 2)

    def min_grid(self):
        return (2 * self.cutoff,)


class ByGrid(eqx.Module):
    """The exact epsilon of the same data law on the coarse grid and on the target grid."""

    coarse: samplers.GaussianOracle
    fine: samplers.GaussianOracle

    def __call__(self, t, x):
        return self.coarse(t, x) if x.shape == self.coarse.mean.shape else self.fine(t, x)


def band_limited_oracle(n: int) -> samplers.GaussianOracle:
    sde = VPSDE(Matern(1, 1.5, 2 * np.pi))
    x = sdeflow.coordinates((n,))
    mean = jnp.sin(2 * jnp.pi * x) + 0.5 * jnp.cos(4 * jnp.pi * x)
    return samplers.GaussianOracle(sde, mean, BandLimited(Matern(1, 2.0, 8.0, variance=0.5), COARSE // 2))


def multilevel(coarse_steps: int = 140, fine_steps: int = 60) -> samplers.MultilevelSampler:
    return samplers.MultilevelSampler(
        samplers.EulerMaruyama(coarse_steps), samplers.EulerMaruyama(fine_steps), (COARSE,), SWITCH
    )


def check_same_law(score, oracle, n: int):
    """The multilevel sampler and Euler–Maruyama on the `n`-grid give the same law (see above)."""
    x = np.asarray(draw_samples(score, multilevel(), n).samples)
    direct = np.asarray(draw_samples(score, samplers.EulerMaruyama(200), n).samples)
    data = np.arange(n // 2 + 1)[np.asarray(sdeflow.kept_modes((n,)))] < COARSE // 2
    for samples in (x, direct):
        ratio = mode_variance_ratios(samples, oracle)[data]
        assert np.all(np.abs(ratio - 1) < 0.15) and abs(np.mean(ratio) - 1) < 0.05, ratio
        v = np.asarray(oracle.variances(oracle.sde.t0, (n,)))
        stderr = np.sqrt(np.sum(np.where(np.asarray(sdeflow.kept_modes((n,))), 2 * v, 0.0)) / x.shape[0])
        assert np.max(np.abs(samples.mean(0) - np.asarray(oracle.marginal_mean(oracle.sde.t0)))) < 5 * stderr
    between = mode_variance_ratios(x, oracle) / mode_variance_ratios(direct, oracle)
    assert np.all(np.abs(between - 1) < 0.2), between


@pytest.mark.parametrize("n", [32, 33])
def test_multilevel_reproduces_band_limited_law(n):
    oracle = band_limited_oracle(n)
    check_same_law(samplers.PreconditionedScore(ByGrid(band_limited_oracle(COARSE), oracle), oracle.sde),
                   oracle, n)


def test_multilevel_on_the_coarse_grid_runs_both_phases_there():
    oracle = band_limited_oracle(COARSE)
    score = samplers.PreconditionedScore(oracle, oracle.sde)
    check_same_law(score, oracle, COARSE)
    result = multilevel(30, 20).sample(score, jr.key(0), (1, COARSE))
    assert int(result.num_evaluations) == 50 and int(result.num_steps) == 50


def test_multilevel_misses_content_beyond_the_coarse_modes():
    """Negative control: data with a Matérn covariance rougher than the prior's (s = 0.75 against
    1.5) on every mode. Beyond the coarse modes it outweighs the noise at $t_s$; those modes start
    there without it, and the reverse dynamics do not restore it."""
    n = 32

    def rough(grid: int) -> samplers.GaussianOracle:
        return samplers.GaussianOracle(VPSDE(Matern(1, 1.5, 2 * np.pi)), jnp.zeros((1, grid)),
                                       Matern(1, 0.75, 2 * np.pi))

    fine = rough(n)
    score = samplers.PreconditionedScore(ByGrid(rough(COARSE), fine), fine.sde)
    ratio = mode_variance_ratios(np.asarray(draw_samples(score, multilevel(), n).samples), fine)
    k = np.arange(ratio.shape[0])
    assert np.all(np.abs(ratio[k < COARSE // 2] - 1) < 0.15), ratio
    assert np.max(ratio[k >= COARSE // 2]) < 0.5, ratio


def test_a_given_start_is_restricted_to_the_coarse_grid_and_carried_through_both_phases():
    """`x_start`: on the coarse grid itself the sampler is the coarse phase from `x_start` down to
    t_s and the fine phase from there; on a finer grid the start's modes beyond the coarse grid's
    play no part (the coarse phase starts from its restriction)."""
    oracle = ByGrid(band_limited_oracle(COARSE), band_limited_oracle(32))
    score = samplers.PreconditionedScore(oracle, oracle.fine.sde)
    flow = samplers.ProbabilityFlow(diffrax.Euler(), 6)  # deterministic from its start
    sampler = samplers.MultilevelSampler(flow, flow, (COARSE,), 0.4)
    key = jr.key(3)
    x = oracle.fine.sde.terminal_sample(jr.key(4), (1, COARSE))
    by_hand = flow.sample(score, key, x_start=flow.sample(score, key, x_start=x, t_end=0.4).samples,
                          t_start=0.4).samples
    np.testing.assert_allclose(sampler.sample(score, key, x_start=x).samples, by_hand, rtol=0, atol=1e-5)
    fine_start = sdeflow.resample(x, (32,))
    high = jnp.cos(2 * jnp.pi * 12 * sdeflow.coordinates((32,)))  # (1, 32): a mode only the 32-grid holds
    one, two, other = (sampler.sample(score, key, x_start=start).samples
                       for start in (fine_start, fine_start + high, 2 * fine_start))
    np.testing.assert_allclose(one, two, rtol=0, atol=1e-5)
    assert float(jnp.max(jnp.abs(one - other))) > 0.1


def test_multilevel_rejects_bad_settings():
    oracle = band_limited_oracle(32)
    score = samplers.PreconditionedScore(oracle, oracle.sde)
    em = samplers.EulerMaruyama(10)
    with pytest.raises(ValueError, match="must not denoise"):
        samplers.MultilevelSampler(samplers.EulerMaruyama(10, denoise=True), em, (16,), 0.3)
    with pytest.raises(ValueError, match="at least the coarse grid"):
        samplers.MultilevelSampler(em, em, (16,), 0.3).sample(score, jr.key(0), (1, 8))
    with pytest.raises(ValueError, match="strictly between"):
        samplers.MultilevelSampler(em, em, (16,), 1.5).sample(score, jr.key(0), (1, 32))
    with pytest.raises(ValueError, match="below `switch_time`"):
        samplers.MultilevelSampler(em, em, (16,), 0.3).sample(score, jr.key(0), (1, 32), t_end=0.5)


def test_new_modes_of_a_bridge_are_drawn_around_its_target():
    """At the switch, the modes the fine grid adds come from the forward law at t_s of data at the
    SDE's reference point, as its terminal law does: for a bridge its target, whose fine modes they
    then hold on average (the forward mean from data without those modes, (1 - m) of them, is 0.39
    off: a target fitted to the data's mean holds the data's own fine modes)."""
    from sdeflow.sde import OUBridge

    x = sdeflow.coordinates((32,))
    target = 1.0 + jnp.cos(2 * jnp.pi * 12 * x)  # a mode only the 32-grid holds (|k| = 12 >= 8)
    sde = OUBridge(Matern(1, 1.5, 2 * np.pi), target=target, theta=1.0, eta=2.0)
    em = samplers.EulerMaruyama(4)
    sampler = samplers.MultilevelSampler(em, em, (16,), 0.5)
    draws = np.stack([np.asarray(sampler._new_modes(sde, k, (1, 32))) for k in jr.split(jr.key(0), 400)])
    fine = np.asarray(jnp.cos(2 * jnp.pi * 12 * x))
    assert np.max(np.abs(draws.mean(0) - fine)) < 0.1  # the target's fine mode, not (1 - m) of it (0.39 off)
