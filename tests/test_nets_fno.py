"""nets.FNO: batched path equals vmap, discretisation consistency, gradients, errors, config."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import nets
import sdeflow
from helpers import primitive_names


def band_limited(key, grid, kmax=2):
    """A random real trigonometric polynomial with |k_i| <= kmax, one channel, on `grid`."""
    x = sdeflow.coordinates(grid)
    ks = [(a, b) for a in range(-kmax, kmax + 1) for b in range(kmax + 1)]
    coef = 0.5 * jr.normal(key, (len(ks), 2))
    phases = [2 * jnp.pi * (a * x[0] + b * x[1]) for a, b in ks]
    u = sum(coef[i, 0] * jnp.cos(p) + coef[i, 1] * jnp.sin(p) for i, p in enumerate(phases))
    return u[None]


@pytest.mark.parametrize("dim,grid,norm,local", [(1, (17,), "group", False),
                                                 (2, (16, 15), None, True),
                                                 (3, (8, 9, 7), "group", False)])
def test_batched_equals_vmap_and_jit(dim, grid, norm, local, getkey):
    model = nets.FNO(2, 3, width=8, modes=2, depth=1, norm=norm, groups=4, projection=16,
                     time_features=8, time_dim=16, local=local, dim=dim, key=getkey())
    u = jr.normal(getkey(), (3, 2, *grid))
    t = jr.uniform(getkey(), (3,))
    expected = eqx.filter_jit(lambda m, t, u: jax.vmap(m)(t, u))(model, t, u)
    assert expected.shape == (3, 3, *grid)
    batched = eqx.filter_jit(model.batched)(t, u)
    scale = float(jnp.max(jnp.abs(expected)))
    assert float(jnp.max(jnp.abs(batched - expected))) <= 1e-5 * scale
    if dim == 1:  # the per-sample call is what vmap maps
        assert float(jnp.max(jnp.abs(model(t[1], u[1]) - expected[1]))) <= 1e-5 * scale


@pytest.mark.parametrize("dim,grid", [(1, (17,)), (2, (12, 11))])
def test_method_is_honoured_by_batched(dim, grid, getkey):
    """`method` picks the spectral convolution of both paths: with `"dft"` and with `"fft"`,
    `batched` equals `vmap` of the one-sample network to float32 round-off (relative 1e-5), the two
    methods (same key, so same weights) give the same network, and the jaxpr of each path holds an
    FFT exactly when `method="fft"`."""
    key = getkey()
    u = jr.normal(getkey(), (3, 2, *grid))
    t = jr.uniform(getkey(), (3,))
    outputs = {}
    for method in ("dft", "fft"):
        model = nets.FNO(2, 3, width=8, modes=3, depth=2, groups=4, projection=16, time_features=8,
                         time_dim=16, method=method, dim=dim, key=key)
        expected = eqx.filter_jit(lambda m, t, u: jax.vmap(m)(t, u))(model, t, u)
        got = eqx.filter_jit(lambda m, t, u: m.batched(t, u))(model, t, u)
        scale = float(jnp.max(jnp.abs(expected)))
        assert float(jnp.max(jnp.abs(got - expected))) <= 1e-5 * scale, method
        assert ("fft" in primitive_names(model.batched, t, u)) == (method == "fft")
        assert ("fft" in primitive_names(jax.vmap(model), t, u)) == (method == "fft")
        outputs[method] = got
    scale = float(jnp.max(jnp.abs(outputs["dft"])))
    assert float(jnp.max(jnp.abs(outputs["fft"] - outputs["dft"]))) <= 1e-5 * scale


def test_discretisation_consistency(getkey):
    """The same band-limited function at n and 2n gives the same output after restriction.

    Spectral convolutions, pointwise linear maps, biases and the time embedding map trigonometric
    polynomials of degree <= m to trigonometric polynomials; GELU and the GroupNorm statistics do
    not: they make every hidden field an analytic but not band-limited function, whose spectrum
    decays exponentially. On an n-grid its modes beyond n/2 alias, so the outputs at n and 2n
    differ by an amount that falls exponentially with n, down to float32 round-off. We check the
    decay and the round-off level at 128 vs 256 (inputs of degree 2, modes 4; relative max errors
    measured for three random models: 16: 4e-3..3e-2, 32: 8e-5..3e-3, 64: 7e-7..5e-5, 128: ~1e-6).
    """
    model = eqx.filter_jit(nets.FNO(1, 1, width=8, modes=4, depth=2, groups=4, projection=16,
                                    time_features=8, time_dim=16, key=getkey()))
    key = getkey()
    outs = {n: model(0.5, band_limited(key, (n, n))) for n in (16, 32, 64, 128)}
    scale = float(jnp.max(jnp.abs(outs[128])))
    err = {n: float(jnp.max(jnp.abs(sdeflow.restrict(outs[2 * n], (n, n)) - outs[n]))) / scale
           for n in (16, 32, 64)}
    assert err[32] < 0.2 * err[16] and err[64] < 0.2 * err[32]  # exponential decay of aliasing
    assert err[16] <= 0.1
    assert err[64] <= 1e-4  # measured 3e-5 here; ~1e-6 (round-off) at 128 vs 256


def test_gradients_reach_every_parameter(getkey):
    model = nets.FNO(1, 1, width=8, modes=3, depth=2, groups=4, projection=16, time_features=8,
                     time_dim=16, key=getkey())
    u = jr.normal(getkey(), (4, 1, 12, 12))
    t = jr.uniform(getkey(), (4,))

    @eqx.filter_jit
    def grads(model):
        return eqx.filter_grad(lambda m: jnp.mean((m.batched(t, u) - u) ** 2))(model)

    leaves = jax.tree.leaves(grads(model))
    assert len(leaves) == len(jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_errors(getkey):
    model = nets.FNO(1, 1, width=8, modes=5, depth=1, groups=4, key=getkey())
    with pytest.raises(ValueError, match=r"modes \(5, 5\) do not fit the input grid \(10, 10\)"):
        model(0.1, jnp.zeros((1, 10, 10)))
    with pytest.raises(ValueError, match="shape"):
        model(0.1, jnp.zeros((2, 16, 16)))
    with pytest.raises((ValueError, TypeError)):  # the type-check hook may catch it first
        model(jnp.zeros(3), jnp.zeros((1, 16, 16)))
    for kwargs, match in [(dict(groups=8, width=12), "groups"), (dict(norm="batch"), "norm"),
                          (dict(coordinates="polar"), "coordinates"), (dict(method="x"), "method"),
                          (dict(depth=0), "depth")]:
        with pytest.raises(ValueError, match=match):  # raised before any weight is drawn
            nets.FNO(1, 1, **({"width": 8, "modes": 3, "groups": 4} | kwargs), key=getkey())
    block = nets.FourierBlock(4, 4, (3, 3), 8, norm=None, groups=1, method="dft", key=getkey())
    with pytest.raises(ValueError, match=r"`emb` must be a time embedding of shape \(8,\)"):
        block(jnp.ones((4, 16, 16)), jnp.ones(5))
    with pytest.raises(ValueError, match="`out_grid` must be 2 positive sizes"):
        block(jnp.ones((4, 16, 16)), jnp.ones(8), (16,))


def test_defaults_instantiate_and_summary(getkey):
    # shapes only: the default network is not allocated (keeps the test fast)
    model = eqx.filter_eval_shape(lambda key: nets.FNO(1, 1, dim=2, key=key), getkey())
    assert isinstance(model, nets.FNO)
    expected = sum(x.size for x in jax.tree.leaves(model) if isinstance(x, jax.ShapeDtypeStruct))
    spectral = model.depth * 2 * (2 * 12 + 1) * 13 * model.width**2
    assert nets.count_parameters(model) == expected > spectral
    text = nets.summary(model)
    assert text.startswith("FNO(") and text.endswith(f"{expected:,} parameters")
