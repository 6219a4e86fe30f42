"""Discretisation consistency: dealiased nonlinearities, inner U-NO levels on a fixed grid, and the
per-field measurement `nets.discretisation_gaps` that shows where a network depends on the grid."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import nets
import sdeflow


def _rough(key, n: int):
    """White noise on an n x n grid: a band-limited function with content up to the Nyquist mode."""
    return jr.normal(key, (1, n, n))


@pytest.mark.parametrize("factor", [1.5, 2.0])
def test_band_limited_square_is_the_truncated_product(factor, getkey):
    """For f(h) = h^2 the band of the product is exact once the grid is 3/2 times finer (Orszag's
    rule, for fields without a Nyquist mode; 2x also with it): it equals the truncation to the grid
    of h^2 computed where nothing aliases; on the grid itself the product's modes beyond the
    Nyquist mode fold onto the kept ones."""
    h = _rough(getkey(), 16)
    if factor < 2:
        h = sdeflow.prolong(sdeflow.restrict(h, (15, 15)), (16, 16))
    exact = sdeflow.restrict(jnp.square(sdeflow.prolong(h, (64, 64))), (16, 16))
    got = nets.band_limited(jnp.square, h, factor)
    scale = float(jnp.max(jnp.abs(exact)))
    assert float(jnp.max(jnp.abs(got - exact))) <= 1e-5 * scale
    assert float(jnp.max(jnp.abs(jnp.square(h) - exact))) >= 0.1 * scale  # aliased on the grid


def test_band_limited_refuses_a_coarser_grid(getkey):
    """A factor below 1 would evaluate the nonlinearity on a coarser grid (and return zeros)."""
    with pytest.raises(ValueError, match="`oversample` must be a factor >= 1"):
        nets.band_limited(jnp.tanh, _rough(getkey(), 8), 0.5)


def test_exactly_consistent_operators_have_zero_gaps():
    """A spectral multiplier is the same operator on every grid: every gap is round-off."""

    def smooth(t, u):
        return sdeflow.restrict(sdeflow.prolong(u, (3 * u.shape[1], 3 * u.shape[2])), u.shape[1:]) * t

    u = _rough(jr.key(0), 12)
    gaps = nets.discretisation_gaps(smooth, 0.5, u, factors=(2, 3))
    assert gaps.shape == (2, 1) and float(jnp.max(gaps)) <= 1e-5
    with pytest.raises(ValueError, match="factors"):
        nets.discretisation_gaps(smooth, 0.5, u, factors=(1,))


def _uno(key, **kwargs):
    return nets.UNO(1, 1, width=8, levels=(1, 0.5, 0.25, 0.5, 1), multipliers=(1, 1, 2, 1, 1), modes=8,
                    groups=4, projection=16, time_features=8, time_dim=16, key=key, **kwargs)


def test_uno_inner_levels_on_a_reference_grid_and_dealiased_gelu_remove_the_grid(getkey):
    """On rough inputs (content up to the 32-grid's Nyquist mode) the U-NO's fields at 32 and at
    64 or 128 differ by several percent: its inner levels are fractions of the input grid, so on
    finer inputs they hold more frequencies, and GELU on the grid aliases. With the inner levels
    on the grids of a 32-input at every resolution and GELU evaluated on a 2x grid the gaps fall
    to round-off in every field up to the first block back at full resolution, and the output's
    to under 0.5%. (Measured: output 5-7% before, 0.1-0.2% after.)"""
    key = getkey()
    u = _rough(getkey(), 32)
    gaps = {}
    for name, options in (("default", {}), ("reference", {"reference_grid": 32}),
                          ("both", {"reference_grid": 32, "oversample": 2.0})):
        model = _uno(key, **options)
        gaps[name] = np.asarray(eqx.filter_jit(nets.discretisation_gaps)(model, 0.5, u))  # (2, 6)
    assert gaps["default"].shape == (2, 6)
    assert np.all(gaps["default"][:, -1] >= 0.02)
    assert np.all(gaps["default"][:, 1:4].max(axis=1) >= 0.05)  # the inner levels
    # only the grid of the inner levels: they agree up to the GELU aliasing of the blocks at full grid
    assert np.all(gaps["reference"][:, -1] <= 0.5 * gaps["default"][:, -1])
    both = gaps["both"]
    assert np.all(both[:, :4] <= 1e-4)  # lift, the block at full grid, and the inner levels
    assert np.all(both[:, -1] <= 5e-3)


def test_fno_dealiased_gelu_shrinks_the_gap(getkey):
    """The FNO has no inner levels: GELU's aliasing is its one source of grid dependence on rough
    inputs. Evaluated on a 2x grid, the first block's gap falls 25-100x (to the aliasing of
    GELU's fourth and higher harmonics; measured 0.15 to 0.006) and the output's by half or more."""
    key = getkey()
    u = _rough(getkey(), 32)
    out = {}
    for factor in (1.0, 2.0):
        model = nets.FNO(1, 1, width=8, modes=8, depth=2, groups=4, projection=16, time_features=8,
                         time_dim=16, oversample=factor, key=key)
        out[factor] = np.asarray(eqx.filter_jit(nets.discretisation_gaps)(model, 0.5, u, (2,)))[0]
    assert out[1.0][1] >= 0.01 and out[2.0][1] <= 0.1 * out[1.0][1]  # the first block
    assert out[2.0][-1] <= 0.5 * out[1.0][-1]  # the output


def test_unet_is_not_a_grid_independent_operator(getkey):
    """The pixel-space UNet (3x3 kernels that span a different physical width on every grid) has
    one field, its output, and a gap of tens of percent."""
    model = nets.UNet(1, 1, channels=8, multipliers=(1, 2), attention_levels=(), groups=4,
                      time_features=8, time_dim=16, key=getkey())
    gaps = np.asarray(eqx.filter_jit(nets.discretisation_gaps)(model, 0.5, _rough(getkey(), 16)))
    assert gaps.shape == (2, 1) and np.all(gaps >= 0.1)


def test_options_are_checked_and_level_grids_follow_the_reference(getkey):
    assert nets.level_grid((64, 48), 0.25, 32) == (8, 8)
    assert nets.level_grid((64, 48), 1.0, 32) == (64, 48)  # the outer levels follow the input
    with pytest.raises(ValueError, match="oversample"):
        _uno(getkey(), oversample=0.5)
    with pytest.raises(ValueError, match="reference_grid"):
        _uno(getkey(), reference_grid=0)


def test_batched_path_equals_vmap_with_the_options(getkey):
    """Training runs `model.batched` (spatial-major, its own resampling code): with the inner levels on a
    reference grid and the nonlinearities oversampled it is still `vmap` of the one-sample network."""
    import jax

    u = jr.normal(getkey(), (3, 1, 24, 20))
    t = jr.uniform(getkey(), (3,))
    models = (nets.FNO(1, 1, width=8, modes=4, depth=2, groups=4, projection=16, time_features=8, time_dim=16,
                       oversample=2.0, key=getkey()),
              _uno(getkey(), reference_grid=32, oversample=1.5, norm=None),
              _uno(getkey(), reference_grid=32, oversample=2.0))
    for model in models:
        expected = eqx.filter_jit(lambda m, t, u: jax.vmap(m)(t, u))(model, t, u)
        got = eqx.filter_jit(lambda m, t, u: m.batched(t, u))(model, t, u)
        scale = float(jnp.max(jnp.abs(expected)))
        assert float(jnp.max(jnp.abs(got - expected))) <= 1e-5 * scale
