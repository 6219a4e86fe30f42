"""The probability-flow likelihood against the exact log-density of diffused Gaussian data."""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from test_samplers import compiled

import sdeflow
from sdeflow import likelihood, samplers
from sdeflow.parameterisation import Epsilon, V
from sdeflow.priors import Laplacian, Matern
from sdeflow.sde import OUBridge, VESDE, VPSDE


def _oracle(grid, kind="vp"):
    """Gaussian data under a VP SDE; or a VE SDE (its terminal law wide, s(1) = 50), or an
    Ornstein-Uhlenbeck bridge toward a target away from zero (terminal law off the origin)."""
    d = len(grid)
    prior = Matern(d, 1.5 if d == 1 else 2.0, 2 * np.pi)
    x = sdeflow.coordinates(grid)
    if kind == "vp":
        sde = VPSDE(prior)
    elif kind == "ve":
        sde = VESDE(prior, 0.01, 50.0)
    mean = jnp.sin(2 * jnp.pi * x[:1]) + 0.3 * jnp.cos(2 * jnp.pi * x[-1:])
    if kind == "bridge":  # data around its target, as the target is meant to be
        target = 1.5 + 0.8 * jnp.cos(2 * jnp.pi * x[:1])
        sde = OUBridge(prior, target=target, theta=4.0, eta=2.0 ** 1.5)
        mean = mean + target
    return samplers.GaussianOracle(sde, mean, Matern(d, 2.0, 8.0, variance=0.2))


@pytest.mark.parametrize("grid, kind", [((9,), "vp"), ((6, 6), "vp"), ((9,), "ve"), ((9,), "bridge")])
def test_exact_trace_matches_exact_log_density(grid, kind):
    """The probability-flow log-likelihood with the exact trace is the exact log-density, for
    terminal laws with s(1) far from 1 (VE) and with an offset (the bridge's target): the terminal
    density's Jacobian and shift count."""
    oracle = _oracle(grid, kind)
    score = samplers.PreconditionedScore(oracle, oracle.sde, Epsilon())
    x = oracle.sample(jr.key(3), oracle.sde.t0)
    exact = float(oracle.log_density(oracle.sde.t0, x))
    result = compiled(lambda u: likelihood.log_likelihood(score, u, trace="exact"), x)(x)
    # Within 0.6% (measured: 0.05-0.38%); the terminal law neglects m(1)^2 = 4e-5 of the data's law. The
    # bridge's terminal law centred at (1 - m(1)) x* instead of x* is 0.96% off.
    assert abs(float(result.log_likelihood) - exact) < 0.006 * abs(exact), (float(result.log_likelihood), exact)
    assert float(result.stderr) == 0.0
    assert result.grid == grid and result.dimensions == likelihood.model_dimensions(x.shape)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_within_its_stated_error(probe):
    oracle = _oracle((9,))
    score = samplers.PreconditionedScore(oracle, oracle.sde, Epsilon())
    x = oracle.sample(jr.key(3), oracle.sde.t0)
    exact = float(oracle.log_density(oracle.sde.t0, x))
    keys = jr.split(jr.key(1), 32)
    run = jax.vmap(lambda k: likelihood.log_likelihood(score, x, k, num_probes=8, probe=probe))
    result = compiled(run, keys)(keys)
    values, stderr = np.asarray(result.log_likelihood), np.asarray(result.stderr)
    # Each estimate within 4 of its own standard errors (7 degrees of freedom: allow 4.5 + slack).
    assert np.mean(np.abs(values - exact) < 4.5 * stderr) > 0.9
    # The stated error is the real spread of the estimates (to the accuracy 32 repeats give).
    assert 0.6 < np.std(values) / np.mean(stderr) < 1.6
    # And the mean of the 32 estimates is within 4 standard errors of the exact value.
    assert abs(np.mean(values) - exact) < 4 * np.std(values) / math.sqrt(32)


def test_likelihood_does_not_depend_on_the_parameterisation():
    oracle = _oracle((9,))
    sde = oracle.sde
    x = oracle.sample(jr.key(4), sde.t0)

    def as_v(t, u):
        m, s = sde.marginal(t)
        return V().from_epsilon(oracle(t, u), u, m, s)

    eps = samplers.PreconditionedScore(oracle, sde, Epsilon())
    v = samplers.PreconditionedScore(as_v, sde, V())
    a = likelihood.log_likelihood(eps, x, trace="exact")
    b = likelihood.log_likelihood(v, x, trace="exact")
    assert np.allclose(a.log_likelihood, b.log_likelihood, rtol=1e-4)


def test_bits_per_dim_and_dimensions():
    assert likelihood.model_dimensions((1, 28, 28)) == 27 * 27
    assert likelihood.model_dimensions((3, 9, 8)) == 3 * 9 * 7
    ll = jnp.asarray(-1000.0)
    assert np.isclose(likelihood.bits_per_dim(ll, 729), 1000 / 729 / math.log(2))
    # 8-bit data in [-1, 1]: bin width 1/127.5 adds log2(127.5) = 6.994 bits.
    assert np.isclose(
        likelihood.bits_per_dim(ll, 729, bin_width=1 / 127.5) - likelihood.bits_per_dim(ll, 729),
        math.log2(127.5),
    )
    x = jnp.round((jr.uniform(jr.key(0), (1, 32, 32)) * 255)) / 127.5 - 1
    deq = likelihood.uniform_dequantise(jr.key(1), x)
    assert np.all((deq >= x) & (deq < x + 1 / 127.5))
    # uniform within the bin: the offset in bins has mean 1/2 and variance 1/12 (1024 points)
    offset = np.asarray((deq - x) * 127.5, np.float64)
    assert abs(offset.mean() - 0.5) < 5 * math.sqrt(1 / 12 / offset.size)
    assert abs(offset.var() - 1 / 12) < 0.01
    with pytest.raises(ValueError, match="at least 2 `levels`"):
        likelihood.uniform_dequantise(jr.key(1), x, levels=1)


def test_degenerate_prior_and_bad_options_raise():
    sde = VPSDE(Laplacian(1, 1.5))
    score = samplers.PreconditionedScore(lambda t, u: u, sde, Epsilon())
    with pytest.raises(ValueError, match="degenerate"):
        likelihood.log_likelihood(score, jnp.zeros((1, 8)), jr.key(0))
    # a fixed schedule with t0 = 0: the ODE starts where the score divides by s(0) = 0
    at_zero = samplers.PreconditionedScore(lambda t, u: u, VPSDE(Matern(1, 1.0), t0=0.0), Epsilon())
    with pytest.raises(ValueError, match=r"probability-flow ODE evaluates the score at t = 0.0, where s\(t\) = 0.0"):
        likelihood.log_likelihood(at_zero, jnp.zeros((1, 9)), jr.key(0))
    oracle_score = samplers.PreconditionedScore(_oracle((9,)), _oracle((9,)).sde, Epsilon())
    with pytest.raises(ValueError, match="trace"):
        likelihood.log_likelihood(oracle_score, jnp.zeros((1, 9)), trace="approximate")
    with pytest.raises(ValueError, match="key"):
        likelihood.log_likelihood(oracle_score, jnp.zeros((1, 9)))
    with pytest.raises(ValueError, match="`rtol` must be a positive finite number"):
        likelihood.log_likelihood(oracle_score, jnp.zeros((1, 9)), trace="exact", rtol=-1.0)
