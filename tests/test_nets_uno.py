"""nets.UNO: any grid, discretisation consistency, gradients, skips, errors, config."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import nets
import sdeflow
from helpers import primitive_names


def _small(key, **kwargs):
    kwargs = {"width": 4, "modes": 8, "levels": (1, 0.5, 0.25, 0.5, 1),
              "multipliers": (1, 2, 2, 2, 1), "groups": 2, "projection": 8, "time_features": 8,
              "time_dim": 8} | kwargs
    return eqx.filter_jit(nets.UNO)(1, 1, **kwargs, key=key)  # one compile, not many eager ops


def test_levels_modes_and_skips(getkey):
    model = _small(getkey())
    assert model.block_modes == (4, 2, 2, 4)  # floor(8 * min(f_(i-1), f_i))
    assert [model._skip(i) for i in range(1, 5)] == [None, None, None, 1]
    assert nets.level_grid((32, 48), 0.25) == (8, 12)
    assert nets.level_grid((32, 48), 0.25, 16) == (4, 4) and nets.level_grid((32, 48), 1, 16) == (32, 48)
    assert nets.level_grid((32,), 0.001) == (1,)  # at least one point
    for fraction in (0, -0.5):
        with pytest.raises(ValueError, match="must be positive"):
            nets.level_grid((32, 48), fraction)
    assert [b.spectral.modes for b in model.blocks] == [(4, 4), (2, 2), (2, 2), (4, 4)]
    assert [b.spectral.in_channels for b in model.blocks] == [4, 8, 8, 8 + 8]  # + level 1 output


@pytest.mark.parametrize("dim,grid,norm,levels,local", [
    (2, (32, 24), "group", (1, 0.5, 0.25, 0.5, 1), False),
    (3, (8, 10, 7), None, (1, 0.5, 1), True),
])
def test_batched_spatial_major_equals_vmap(dim, grid, norm, levels, local, getkey):
    """`batched` (spatial-major layout, resampling as matmuls) is `vmap` of the one-sample
    network: outputs and weight gradients, on rectangular grids, with and without GroupNorm and
    the local path."""
    multipliers = (1, 2, 2, 2, 1)[: len(levels)]
    model = _small(getkey(), modes=6 if dim < 3 else 2, norm=norm, dim=dim, levels=levels,
                   multipliers=multipliers, local=local)
    u = jr.normal(getkey(), (3, 1, *grid))
    t = jr.uniform(getkey(), (3,))
    target = jr.normal(getkey(), (3, 1, *grid))

    def loss(m, batched):
        out = m.batched(t, u) if batched else jax.vmap(m)(t, u)
        return jnp.mean((out - target) ** 2), out

    (_, expected), g_vmap = eqx.filter_jit(eqx.filter_value_and_grad(
        lambda m: loss(m, False), has_aux=True))(model)
    (_, got), g_batched = eqx.filter_jit(eqx.filter_value_and_grad(
        lambda m: loss(m, True), has_aux=True))(model)
    assert float(jnp.max(jnp.abs(got - expected))) <= 1e-5 * float(jnp.max(jnp.abs(expected)))
    for a, b in zip(jax.tree.leaves(g_vmap), jax.tree.leaves(g_batched)):
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-4 * float(jnp.max(jnp.abs(a))) + 1e-7


def test_method_is_honoured_by_batched(getkey):
    """As for `FNO`: with `"dft"` and with `"fft"`, `batched` (down- and up-sampling spectral
    convolutions) equals `vmap` of the one-sample network to float32 round-off, the two methods
    give the same network, and the jaxpr of `batched` holds an FFT exactly when `method="fft"`."""
    key = getkey()
    u = jr.normal(getkey(), (3, 1, 16, 14))
    t = jr.uniform(getkey(), (3,))
    outputs = {}
    for method in ("dft", "fft"):
        model = _small(key, modes=6, levels=(1, 0.5, 1), multipliers=(1, 2, 1), method=method)
        expected = eqx.filter_jit(lambda m, t, u: jax.vmap(m)(t, u))(model, t, u)
        got = eqx.filter_jit(lambda m, t, u: m.batched(t, u))(model, t, u)
        scale = float(jnp.max(jnp.abs(expected)))
        assert float(jnp.max(jnp.abs(got - expected))) <= 1e-5 * scale, method
        assert ("fft" in primitive_names(model.batched, t, u)) == (method == "fft")
        outputs[method] = got
    scale = float(jnp.max(jnp.abs(outputs["dft"])))
    assert float(jnp.max(jnp.abs(outputs["fft"] - outputs["dft"]))) <= 1e-5 * scale


def test_discretisation_consistency(getkey):
    """n and 2n agree after restriction up to aliasing of the nonlinearities, which decays
    exponentially in n (see tests/test_nets_fno.py); measured relative errors 32 vs 64: 4e-4,
    64 vs 128: 2e-6 (levels 1, 1/2, 1)."""
    model = eqx.filter_jit(_small(getkey(), levels=(1, 0.5, 1), multipliers=(1, 2, 1), modes=8))
    x = {n: sdeflow.coordinates((n, n)) for n in (32, 64, 128)}
    outs = {n: model(0.3, (jnp.sin(2 * jnp.pi * (x[n][0] + 2 * x[n][1]))
                           + 0.5 * jnp.cos(4 * jnp.pi * x[n][0]))[None]) for n in x}
    scale = float(jnp.max(jnp.abs(outs[128])))
    err = {n: float(jnp.max(jnp.abs(sdeflow.restrict(outs[2 * n], (n, n)) - outs[n]))) / scale
           for n in (32, 64)}
    assert err[64] < 0.2 * err[32]
    assert err[32] <= 5e-3
    assert err[64] <= 5e-5


def test_gradients_reach_every_parameter(getkey):
    model = _small(getkey(), local=True)
    u = jr.normal(getkey(), (2, 1, 32, 32))
    grads = eqx.filter_jit(eqx.filter_grad(
        lambda m: jnp.mean((m.batched(jnp.array([0.2, 0.7]), u) - u) ** 2)))(model)
    leaves = jax.tree.leaves(grads)
    assert len(leaves) == len(jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_errors(getkey):
    with pytest.raises(ValueError, match="levels"):
        nets.UNO(1, 1, levels=(0.5, 1), multipliers=(1, 1), key=getkey())
    with pytest.raises(ValueError, match="multipliers"):
        nets.UNO(1, 1, levels=(1, 0.5, 1), multipliers=(1, 2), key=getkey())
    with pytest.raises(ValueError, match="`in_channels` must be a positive integer, got 0"):
        nets.UNO(0, 1, key=getkey())
    model = _small(getkey())
    with pytest.raises(ValueError, match=r"level-1 grid \(8, 8\)"):  # modes 4 need 9 points
        model(0.1, jnp.zeros((1, 16, 16)))


def test_defaults_instantiate(getkey):
    # shapes only: the default network is not allocated (keeps the test fast)
    model = eqx.filter_eval_shape(lambda key: nets.UNO(1, 1, dim=2, key=key), getkey())
    assert isinstance(model, nets.UNO)
    assert nets.summary(model).startswith("UNO(")
    assert nets.count_parameters(model) > 0


def test_clipped_modes_start_a_coarse_level(getkey):
    """With `clip_modes` and `reference_grid`, a U-NO of modes 6 (full-grid blocks need 13 points)
    acts on an 8-grid, as the first level of a multilevel run: its full-grid spectral paths keep
    |k| <= 3, the inner levels are those of a 16-input, and on grids where the modes fit it is the
    network without clipping, weight for weight."""
    kwargs = {"width": 4, "modes": 6, "levels": (1, 1, 0.5, 1, 1), "multipliers": (1, 1, 2, 1, 1),
              "groups": 2, "projection": 8, "time_features": 8, "time_dim": 8, "reference_grid": 16}
    key = getkey()
    clipped, strict = _small(key, clip_modes=True, **kwargs), _small(key, **kwargs)
    u8 = jr.normal(getkey(), (2, 1, 8, 8))
    t = jnp.array([0.1, 0.7])
    with pytest.raises(ValueError, match=r"do not fit the level-0 grid \(8, 8\)"):
        strict.batched(t, u8)
    assert [b.spectral.fitted((8, 8), nets.level_grid((8, 8), f, 16))[0]
            for b, f in zip(clipped.blocks, (1, 0.5, 1, 1))] == [(3, 3), (3, 3), (3, 3), (3, 3)]
    batched = eqx.filter_jit(lambda net, u: net.batched(t, u))  # one program per call, not op by op
    out = batched(clipped, u8)
    assert out.shape == (2, 1, 8, 8) and bool(jnp.all(jnp.isfinite(out)))
    # the inner level's block works on the 8-grid of a 16-input (not the 4-grid of half of 8)
    fields = [f.shape[1:] for f in clipped.intermediates(0.1, u8[0])]
    assert fields == [(8, 8)] * 6, fields
    np.testing.assert_allclose(clipped.intermediates(0.7, u8[1])[-1], out[1], rtol=1e-4, atol=1e-5)
    u16 = jr.normal(getkey(), (2, 1, 16, 16))
    assert float(jnp.max(jnp.abs(batched(clipped, u16) - batched(strict, u16)))) == 0.0
    # the FNO takes the option alike (shapes only: nothing is allocated)
    fno = eqx.filter_eval_shape(lambda k, c: nets.FNO(1, 1, width=4, modes=6, depth=1, clip_modes=c, key=k), getkey(), True)
    fno.check_grid((8, 8))
    assert fno.blocks[0].spectral.clip_modes
    with pytest.raises(ValueError, match=r"do not fit the input grid \(8, 8\)"):
        eqx.filter_eval_shape(lambda k: nets.FNO(1, 1, width=4, modes=6, depth=1, key=k), getkey()).check_grid((8, 8))
