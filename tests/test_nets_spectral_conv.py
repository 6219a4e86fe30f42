"""nets.SpectralConv against an explicit float64 DFT, on any output grid, both implementations."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nets
import sdeflow
from helpers import primitive_names


def reference(conv, u, out_grid):
    """$v_o(y) = \\sum_{k \\in K} w_k \\mathrm{Re}(\\sum_i \\hat u_{i,k} W_{k,io} e^{2\\pi i k y})$,
    float64."""
    u = np.asarray(u, np.float64)
    c, *grid = u.shape
    d = len(grid)
    weight = np.asarray(conv.weight_real, np.float64)
    weight = weight + 1j * np.asarray(conv.weight_imag, np.float64)
    x = np.meshgrid(*[np.arange(n) / n for n in grid], indexing="ij")
    y = np.meshgrid(*[np.arange(n) / n for n in out_grid], indexing="ij")
    ranges = [range(-m, m + 1) for m in conv.modes[:-1]] + [range(conv.modes[-1] + 1)]
    out = np.zeros((conv.out_channels, *out_grid))
    indices = itertools.product(*[range(len(r)) for r in ranges])
    for index, k in zip(indices, itertools.product(*ranges)):
        phase_in = sum(ki * xi for ki, xi in zip(k, x))
        u_hat = (u * np.exp(-2j * np.pi * phase_in)).reshape(c, -1).mean(axis=1)
        v_hat = u_hat @ weight[index]
        w = 1.0 if k[-1] == 0 else 2.0
        phase_out = sum(ki * yi for ki, yi in zip(k, y))
        out += w * np.real(v_hat.reshape(-1, *([1] * d)) * np.exp(2j * np.pi * phase_out))
    return out


CASES = [  # (grid, modes, output grid): odd and even, 1D, 2D and 3D, same and changed resolution
    ((12,), (3,), (12,)),
    ((13,), (6,), (13,)),
    ((13,), (4,), (20,)),
    ((8, 9), (2, 3), (8, 9)),
    ((9, 8), (4, 3), (9, 8)),
    ((9, 8), (3, 2), (16, 11)),
    ((6, 7, 8), (1, 2, 3), (7, 9, 8)),
]


@pytest.mark.parametrize("method", ["dft", "fft"])
@pytest.mark.parametrize("grid,modes,out_grid", CASES)
def test_matches_explicit_dft(grid, modes, out_grid, method, getkey):
    conv = nets.SpectralConv(3, 2, modes, method=method, key=getkey())
    u = jax.random.normal(getkey(), (3, *grid))
    expected = reference(conv, u, out_grid)
    got = np.asarray(eqx.filter_jit(conv)(u, out_grid))
    assert got.shape == (2, *out_grid)
    # float32 round-off of sums over at most a few hundred terms of size O(1)
    assert np.max(np.abs(got - expected)) <= 2e-6 * max(1.0, np.max(np.abs(expected)))


@pytest.mark.parametrize("method", ["dft", "fft"])
@pytest.mark.parametrize("grid,modes,out_grid", [CASES[2], CASES[5], CASES[6]])
def test_spatial_major_batch_equals_vmap(grid, modes, out_grid, method, getkey):
    """The batched spatial-major path equals the one-sample call under vmap with either method, and
    runs the method asked for: `rfftn`/`irfftn` for `"fft"`, no FFT at all for `"dft"`."""
    conv = nets.SpectralConv(3, 2, modes, method=method, key=getkey())
    u = jax.random.normal(getkey(), (4, 3, *grid))
    expected = eqx.filter_jit(jax.vmap(lambda v: conv(v, out_grid)))(u)
    d = len(grid)
    h = u.transpose(*range(d + 1, 1, -1), 0, 1)  # (n_d, ..., n_1, B, c)
    got = eqx.filter_jit(conv.spatial_major)(h, out_grid)
    got = got.transpose(d, d + 1, *range(d - 1, -1, -1))
    assert got.dtype == expected.dtype
    assert float(jnp.max(jnp.abs(got - expected))) <= 2e-6
    primitives = primitive_names(lambda h: conv.spatial_major(h, out_grid), h)
    assert ("fft" in primitives) == (method == "fft"), primitives



@pytest.mark.parametrize("method", ["dft", "fft"])
@pytest.mark.parametrize("grid,modes,out_grid", [CASES[2], CASES[5], CASES[6]])
def test_spatial_major_derivatives_equal_vmap(grid, modes, out_grid, method, getkey):
    """Reverse mode runs the hand-written transposes of `nets.linear_map` (with `"dft"`); its
    gradients (weights and input) and forward-mode tangents equal those of the per-sample code
    under vmap, with either method."""
    conv = nets.SpectralConv(3, 2, modes, method=method, key=getkey())
    d = len(grid)
    u = jax.random.normal(getkey(), (4, 3, *grid))
    tangent = jax.random.normal(getkey(), u.shape)
    probe = jax.random.normal(getkey(), (4, 2, *out_grid))

    def to_sm(v):  # (B, c, n_1..n_d) -> (n_d..n_1, B, c)
        return v.transpose(*range(d + 1, 1, -1), 0, 1)

    def from_sm(v):
        return v.transpose(d, d + 1, *range(d - 1, -1, -1))

    def per_sample(conv, u):
        return jnp.sum(jax.vmap(lambda v: conv(v, out_grid))(u) * probe)

    def spatial_major(conv, u):
        return jnp.sum(from_sm(conv.spatial_major(to_sm(u), out_grid)) * probe)

    expected = eqx.filter_jit(eqx.filter_grad(per_sample))(conv, u)
    got = eqx.filter_jit(eqx.filter_grad(spatial_major))(conv, u)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        assert float(jnp.max(jnp.abs(a - b))) <= 2e-5 * float(jnp.max(jnp.abs(b)))
    grad_u = eqx.filter_jit(jax.grad(spatial_major, argnums=1))(conv, u)
    grad_u_expected = eqx.filter_jit(jax.grad(per_sample, argnums=1))(conv, u)
    assert float(jnp.max(jnp.abs(grad_u - grad_u_expected))) <= 2e-5 * float(
        jnp.max(jnp.abs(grad_u_expected)))
    _, jvp = jax.jvp(lambda u: spatial_major(conv, u), (u,), (tangent,))
    _, jvp_expected = jax.jvp(lambda u: per_sample(conv, u), (u,), (tangent,))
    assert abs(float(jvp - jvp_expected)) <= 2e-5 * abs(float(jvp_expected))

def _identity_conv(modes, method, key):
    conv = nets.SpectralConv(1, 1, modes, method=method, key=key)
    ones = jnp.ones_like(conv.weight_real)
    return eqx.tree_at(lambda c: (c.weight_real, c.weight_imag), conv,
                       (ones, jnp.zeros_like(ones)))


@pytest.mark.parametrize("method", ["dft", "fft"])
def test_resolution_change_is_exact(method, getkey):
    """16 -> 32 -> 16 with identity weights reproduces sin(2 pi x) + cos(2 pi y) at every step."""
    conv = eqx.filter_jit(_identity_conv((3, 3), method, getkey()))

    def f(n):
        x = sdeflow.coordinates((n, n))
        return (jnp.sin(2 * jnp.pi * x[0]) + jnp.cos(2 * jnp.pi * x[1]))[None]

    fine = conv(f(16), (32, 32))
    assert float(jnp.max(jnp.abs(fine - f(32)))) <= 1e-6
    back = conv(fine, (16, 16))
    assert float(jnp.max(jnp.abs(back - f(16)))) <= 1e-6
    # the negative frequencies are where they belong: a mode with k_1 = -2, k_2 = 1 survives too
    x16, x32 = sdeflow.coordinates((16, 16)), sdeflow.coordinates((32, 32))
    g16 = jnp.cos(2 * jnp.pi * (-2 * x16[0] + x16[1]))[None]
    g32 = jnp.cos(2 * jnp.pi * (-2 * x32[0] + x32[1]))[None]
    assert float(jnp.max(jnp.abs(conv(g16, (32, 32)) - g32))) <= 1e-6


def test_dft_and_fft_paths_agree(getkey):
    key = getkey()
    a = nets.SpectralConv(4, 5, (6, 7), method="dft", key=key)
    b = nets.SpectralConv(4, 5, (6, 7), method="fft", key=key)
    u = jax.random.normal(getkey(), (4, 17, 16))
    diff = eqx.filter_jit(lambda u: a(u, (20, 15)) - b(u, (20, 15)))(u)
    assert float(jnp.max(jnp.abs(diff))) <= 2e-6


@pytest.mark.parametrize("method", ["dft", "fft"])
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_clipped_modes_give_the_fine_grid_map_restricted(getkey, method, dim):
    """With `clip_modes`, on a grid too coarse for the modes (9 points for modes 6: 4 kept), the
    convolution is the restriction of its output on a fine grid (16 points, all modes) for the same
    input interpolated there; the one-sample and spatial-major paths agree, and the gradient reaches
    only the weights of the kept modes."""
    conv = nets.SpectralConv(3, 4, 6, dim=dim, method=method, clip_modes=True, key=getkey())
    assert nets.clipped_modes(conv.modes, (9,) * dim) == (4,) * dim
    u = jax.random.normal(getkey(), (3,) + (9,) * dim)
    apply = eqx.filter_jit(lambda c, x: c(x))  # one program per call, not op by op
    coarse = apply(conv, u)
    fine = apply(conv, sdeflow.resample(u, (16,) * dim))
    restricted = sdeflow.resample(fine, (9,) * dim)
    assert float(jnp.linalg.norm(coarse - restricted) / jnp.linalg.norm(restricted)) < 1e-5
    assert float(jnp.linalg.norm(restricted)) > 0.1 * float(jnp.linalg.norm(u))
    strict = nets.SpectralConv(3, 4, 6, dim=dim, method=method, key=getkey())
    with pytest.raises(ValueError, match="do not fit the input grid"):
        strict(u)
    batch = jax.random.normal(getkey(), (2, 3) + (9,) * dim)
    rev = tuple(range(dim + 1, 1, -1))
    sm = eqx.filter_jit(lambda c, x: c.spatial_major(x))(conv, jnp.transpose(batch, rev + (0, 1)))
    np.testing.assert_allclose(jnp.transpose(sm, (dim, dim + 1) + tuple(range(dim - 1, -1, -1))),
                               eqx.filter_jit(lambda c, x: jax.vmap(c)(x))(conv, batch), atol=2e-6)
    grad = eqx.filter_jit(eqx.filter_grad(lambda c: jnp.sum(c(u) ** 2)))(conv).weight_real
    kept = (slice(2, 11),) * (dim - 1) + (slice(0, 5),)
    assert float(jnp.abs(grad[kept]).max()) > 0
    outside = np.ones(grad.shape[:dim], bool)
    outside[kept] = False
    assert float(jnp.abs(grad[outside]).max()) == 0.0


def test_clipping_changes_nothing_where_the_modes_fit(getkey):
    conv = nets.SpectralConv(2, 3, (3, 4), key=getkey())
    clipped = nets.SpectralConv(2, 3, (3, 4), clip_modes=True, key=getkey())
    clipped = eqx.tree_at(lambda c: (c.weight_real, c.weight_imag), clipped, (conv.weight_real, conv.weight_imag))
    u = jax.random.normal(getkey(), (2, 7, 9))
    np.testing.assert_array_equal(clipped(u, (11, 12)), conv(u, (11, 12)))
    # a coarser (odd) output grid clips the modes too: the map to it is the restriction of the map to (11, 12)
    np.testing.assert_allclose(clipped(u, (5, 7)), sdeflow.resample(conv(u, (11, 12)), (5, 7)), atol=1e-5)


def test_modes_that_do_not_fit_are_refused(getkey):
    conv = nets.SpectralConv(1, 1, (3, 4), key=getkey())
    conv(jnp.zeros((1, 7, 9)))  # 2m + 1 = n exactly: fits
    with pytest.raises(ValueError, match=r"modes \(3, 4\) do not fit the input grid \(6, 9\)"):
        conv(jnp.zeros((1, 6, 9)))  # would need the Nyquist bin -3 == +3 of an even 6-grid
    with pytest.raises(ValueError, match=r"output grid \(7, 8\)"):
        conv(jnp.zeros((1, 7, 9)), (7, 8))  # last axis too: k = 4 is the Nyquist bin of 8
    with pytest.raises(ValueError, match="spatial axes"):
        conv(jnp.zeros((1, 7, 9)), (7,))
    with pytest.raises(ValueError, match="shape"):
        conv(jnp.zeros((2, 7, 9)))
    # An empty or negative output grid, also where the modes are clipped to the grids.
    clipped = nets.SpectralConv(1, 1, 3, dim=1, clip_modes=True, key=getkey())
    for out in ((0,), (-4,)):
        for c in (conv, clipped):
            with pytest.raises(ValueError, match=r"output grid \(-?\d+,.*positive sizes"):
                c(jnp.zeros((1,) + (7, 9)[: len(c.modes)]), out + (9,)[: len(c.modes) - 1])
    with pytest.raises(ValueError, match=r"grid \(0,\) must hold positive sizes"):
        nets.clipped_modes((3,), (0,))
    with pytest.raises(ValueError, match="method"):
        nets.SpectralConv(1, 1, 3, dim=1, method="fast", key=getkey())
    with pytest.raises(ValueError, match="dim"):
        nets.SpectralConv(1, 1, 3, key=getkey())


def test_gradients_reach_both_weight_arrays_under_jit_and_vmap(getkey):
    conv = nets.SpectralConv(2, 3, (2, 2), key=getkey())
    u = jax.random.normal(getkey(), (5, 2, 8, 8))

    @jax.jit
    def loss(conv):
        return jnp.sum(jax.vmap(conv)(u) ** 2)

    grads = jax.grad(loss)(conv)
    assert float(jnp.min(jnp.abs(grads.weight_real))) > 0
    # Im W at k = 0 multiplies the real mean and never reaches the real output: the only zeros.
    im = np.abs(np.asarray(grads.weight_imag))
    centre = (2, 0)
    assert np.all(im[centre] == 0)
    mask = np.ones(im.shape[:2], bool)
    mask[centre] = False
    assert np.min(im[mask]) > 0
