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
    score = samplers.PreconditionedScore(oracle, oracle.sde, "epsilon")
    observed = oracle.sample(jr.key(1), oracle.sde.t0)
    mask = (jnp.arange(16) < 6)[None]
    result = _batch(sampler, score, (1, 16), 64, observation=samplers.Inpainting(mask, observed))
    x = np.asarray(result.samples)[:, 0]
    assert np.array_equal(x[:, :6], np.broadcast_to(np.asarray(observed)[0, :6], (64, 6)))
    assert np.all(np.isfinite(x)) and np.min(np.std(x[:, 6:], 0)) > 1e-2  # the rest is random
    assert np.all(np.asarray(result.num_evaluations) == per_step * sampler.num_steps)


def test_inpainting_on_a_2d_grid():
    oracle = _oracle_2d(8)
    score = samplers.PreconditionedScore(oracle, oracle.sde, "epsilon")
    observed = oracle.sample(jr.key(2), oracle.sde.t0)
    mask = jr.bernoulli(jr.key(3), 0.3, (1, 8, 8))
    result = _batch(samplers.EulerMaruyama(40), score, (1, 8, 8), 16, observation=samplers.Inpainting(mask, observed))
    x = np.asarray(result.samples)
    m = np.broadcast_to(np.asarray(mask), x.shape)
    assert np.array_equal(x[m], np.broadcast_to(np.asarray(observed), x.shape)[m])


@pytest.mark.parametrize("coarse, fine", [((8, 8), (16, 16)), ((9,), (27,))])
def test_super_resolution_restricts_to_the_coarse_field(coarse, fine):
    oracle = _oracle_2d(fine[0]) if len(fine) == 2 else gaussian_oracle(fine[0])
    score = samplers.PreconditionedScore(oracle, oracle.sde, "epsilon")
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
    score = samplers.PreconditionedScore(oracle, oracle.sde, "epsilon")
    x0 = oracle.sample(jr.key(5), oracle.sde.t0)
    sampler = samplers.DDIM(20)
    keys = jr.split(jr.key(6), 64)

    def distance(t_start):
        run = jax.vmap(lambda k: samplers.edit(sampler, score, k, x0, t_start))
        result = compiled(run, keys)(keys)
        assert np.all(np.asarray(result.num_evaluations) == 20)
        return float(jnp.mean(jnp.sqrt(jnp.mean((result.samples - x0) ** 2, axis=(1, 2)))))

    near, far = distance(0.05), distance(1.0)
    # From t = 0.05 (s = 0.15) the edit keeps the field; from t1 it is an independent sample.
    assert near < 0.25 * far, (near, far)


def test_conditional_sampling_rejects_bad_input():
    oracle = gaussian_oracle(16)
    score = samplers.PreconditionedScore(oracle, oracle.sde, "epsilon")
    observation = samplers.Inpainting(jnp.ones((1, 16), bool), jnp.zeros((1, 16)))
    with pytest.raises(ValueError, match="fixed-step"):
        samplers.ProbabilityFlow().sample(score, jr.key(0), (1, 16), observation=observation)
    with pytest.raises(ValueError, match="reuses its last stage"):
        samplers.ProbabilityFlow(diffrax.Tsit5(), 10).sample(score, jr.key(0), (1, 16), observation=observation)
    with pytest.raises(ValueError, match="same shape"):
        samplers.Inpainting(jnp.ones((1, 8), bool), jnp.zeros((1, 16)))
    with pytest.raises(ValueError, match="at least as fine"):
        samplers.SuperResolution(jnp.zeros((1, 16)), (8,))
