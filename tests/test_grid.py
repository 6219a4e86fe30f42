"""Grids, the Fourier convention and spectral resampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sdeflow
from helpers import max_abs


def _trig(grid):
    """sin(2 pi x) + cos(2 pi y) (2D) or sin(2 pi x) + cos(6 pi x) (1D) on a grid, one channel."""
    x = sdeflow.coordinates(grid)
    if len(grid) == 1:
        return (jnp.sin(2 * jnp.pi * x[0]) + jnp.cos(6 * jnp.pi * x[0]))[None]
    return (jnp.sin(2 * jnp.pi * x[0]) + jnp.cos(2 * jnp.pi * x[1]))[None]


def test_coordinates_are_physical():
    x = sdeflow.coordinates((4, 5))
    assert x.shape == (2, 4, 5)
    np.testing.assert_allclose(x[0, :, 0], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(x[1, 0, :], [0, 0.2, 0.4, 0.6, 0.8], rtol=1e-6)


@pytest.mark.parametrize("grid", [(8,), (9,), (8, 6), (7, 9), (6, 5)])
def test_fourier_of_a_mode_is_at_its_physical_frequency(grid):
    """e^{2 pi i k.x} with k = (1, -2) (or k = -3 in 1D) lands in the bin of that frequency only."""
    x = sdeflow.coordinates(grid)
    k = (-3,) if len(grid) == 1 else (1, -2)
    phase = 2 * jnp.pi * sum(ki * xi for ki, xi in zip(k, x))
    u = jnp.cos(phase)[None]
    u_hat = sdeflow.fourier(u)[0]
    freqs = sdeflow.rfft_frequencies(grid)
    on = jnp.ones(u_hat.shape, bool)
    for ki, f in zip(k, freqs):
        on = on & (f == ki)
    minus = jnp.ones(u_hat.shape, bool)
    for ki, f in zip(k, freqs):
        minus = minus & (f == -ki)
    expected = jnp.where(on | minus, 0.5, 0.0)
    assert max_abs(u_hat, expected) < 1e-6
    assert max_abs(sdeflow.inverse_fourier(u_hat[None], grid), u) < 1e-5


def test_constant_has_same_values_at_every_resolution():
    for n in (5, 8, 13):
        u = sdeflow.prolong(jnp.full((2, 4, 4), 3.0), (n, n + 1))
        assert max_abs(u, 3.0) < 1e-5


@pytest.mark.parametrize("m", [32, 33])
def test_prolong_is_exact_interpolation_of_trig_polynomial(m):
    """A known bug of neural-operator codes: padding every axis at its end puts negative
    frequencies in the wrong place, an error of 0.98 here."""
    u = _trig((16, 16))
    assert max_abs(sdeflow.prolong(u, (m, m)), _trig((m, m))) < 1e-5


@pytest.mark.parametrize("grid", [(16,), (17,)])
@pytest.mark.parametrize("m", [32, 33, 40])
def test_prolong_1d(grid, m):
    assert max_abs(sdeflow.prolong(_trig(grid), (m,)), _trig((m,))) < 1e-5


@pytest.mark.parametrize(
    "coarse, fine",
    [((8,), (16,)), ((9,), (16,)), ((8,), (17,)), ((7,), (7,)), ((8, 9), (16, 15)), ((6, 7), (13, 12))],
)
def test_restrict_prolong_roundtrip(coarse, fine, getkey):
    """restrict(prolong(u)) == u for arbitrary data, odd and even, 1D and 2D, several channels."""
    u = jax.random.normal(getkey(), (3, *coarse))
    assert max_abs(sdeflow.restrict(sdeflow.prolong(u, fine), coarse), u) < 2e-6


@pytest.mark.parametrize("coarse, fine", [((8, 8), (16, 16)), ((9, 8), (27, 20)), ((5,), (12,))])
def test_restrict_samples_band_limited_functions(coarse, fine, getkey):
    """A trigonometric polynomial with |k_i| < m_i / 2, restricted, equals its values on the coarse grid.

    Made on the coarse grid from random kept modes, prolonged (exact), then restricted back."""
    u_hat = jax.random.normal(getkey(), (1, *sdeflow.rfft_shape(coarse)))
    u_hat = jnp.where(sdeflow.kept_modes(coarse), u_hat, 0.0)
    u = sdeflow.inverse_fourier(u_hat, coarse)
    v = sdeflow.prolong(u, fine)
    # v is the same function on the fine grid: its point values at the coarse points coincide.
    stride = [f // c for c, f in zip(coarse, fine)]
    if all(f % c == 0 for c, f in zip(coarse, fine)):
        sub = v[(slice(None), *[slice(None, None, s) for s in stride])]
        assert max_abs(sub, u) < 1e-5
    assert max_abs(sdeflow.restrict(v, coarse), u) < 1e-5


def test_restriction_is_l2_projection(getkey):
    """Restriction is the adjoint of prolongation in the grid-averaged inner product.

    (On an odd coarse grid, where that inner product is the L2 one of the functions; an even grid's
    Nyquist bin stands for a cosine of L2 norm 1/2 and the grid average does not see that.)"""
    coarse, fine = (5, 7), (12, 16)
    u = jax.random.normal(getkey(), (1, *coarse))
    v = jax.random.normal(getkey(), (1, *fine))
    lhs = jnp.mean(sdeflow.prolong(u, fine) * v)
    rhs = jnp.mean(u * sdeflow.restrict(v, coarse))
    assert abs(float(lhs - rhs)) < 1e-5


def test_nyquist_mode_is_split_symmetrically():
    """cos(pi n x) on an even n-grid (the Nyquist mode) prolongs to the real cosine, not a complex one."""
    n = 8
    x = sdeflow.coordinates((n,))
    u = jnp.cos(jnp.pi * n * x)  # alternating +1, -1
    v = sdeflow.prolong(u, (16,))
    assert max_abs(v, jnp.cos(jnp.pi * n * sdeflow.coordinates((16,)))) < 1e-5


def test_resample_mixed_axes_and_jit(getkey):
    u = _trig((16, 16))
    f = jax.jit(lambda u: sdeflow.resample(u, (1, 24, 12)))
    expected = sdeflow.restrict(sdeflow.prolong(u, (24, 16)), (24, 12))
    assert max_abs(f(u), expected) < 1e-5
    assert max_abs(f(u), _trig((24, 12))) < 1e-5


def test_bad_input_errors():
    u = jnp.zeros((1, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        sdeflow.restrict(jnp.zeros((8,)), (4,))
    with pytest.raises(ValueError, match="coarser"):
        sdeflow.restrict(u, (16, 16))
    with pytest.raises(ValueError, match="finer"):
        sdeflow.prolong(u, (4, 4))
    with pytest.raises(ValueError, match="spatial axes"):
        sdeflow.resample(u, (4,))
    with pytest.raises(ValueError, match="channels"):
        sdeflow.resample(u, (2, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        sdeflow.coordinates((0, 3))
    with pytest.raises(ValueError, match="`n` must be a positive integer, got 0"):
        sdeflow.integer_frequencies(0)


def test_kept_modes_of_a_coarser_band_is_the_projection_onto_that_grid():
    """Masking with `kept_modes(grid, band)` equals restricting to the (odd) `band` grid and
    interpolating back; with `band = grid` the mask is the grid's own."""
    grid, band = (16, 12), (7, 5)
    u = jax.random.normal(jax.random.key(0), (2, *grid))
    masked = sdeflow.inverse_fourier(sdeflow.fourier(u) * sdeflow.kept_modes(grid, band), grid)
    projected = sdeflow.prolong(sdeflow.restrict(u, band), grid)
    assert jnp.allclose(masked, projected, atol=1e-5)
    assert int(sdeflow.kept_modes(grid, band).sum()) == 7 * 3
    assert jnp.array_equal(sdeflow.kept_modes(grid, grid), sdeflow.kept_modes(grid))
    with pytest.raises(ValueError, match="as many axes"):
        sdeflow.kept_modes(grid, (7,))
