"""The spectral convolution of Fourier neural operators, on any input and output grid.

Conventions follow `sdeflow.grid`: a sample has shape `(c, n_1, ..., n_d)` of point values at
$x_j = j / n$, and $\\hat u_k = \\frac1N \\sum_j u(x_j) e^{-2\\pi i k \\cdot x_j}$ (`rfftn`,
`norm="forward"`) for physical integer frequencies $k$.
"""

import functools
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .linear_map import linear_map

Method = str  # "auto", "dft" or "fft" (checked with a ValueError naming the argument)


def normalise_modes(modes: int | Sequence[int], dim: int | None, name: str = "modes") -> tuple:
    """`modes` as a tuple of `dim` non-negative ints (an int means the same on every axis)."""
    if isinstance(modes, (int, np.integer)):
        if dim is None:
            raise ValueError(f"`{name}` is an int ({modes}): pass `dim` to say how many axes.")
        modes = (int(modes),) * int(dim)
    modes = tuple(int(m) for m in modes)
    if dim is not None and len(modes) != int(dim):
        raise ValueError(f"`{name}` {modes} has {len(modes)} entries but `dim` is {dim}.")
    if not 1 <= len(modes) <= 3 or any(m < 0 for m in modes):
        raise ValueError(f"`{name}` must hold 1 to 3 non-negative ints, got {modes}.")
    return modes


def check_modes_fit(modes: Sequence[int], grid: Sequence[int], name: str = "grid") -> None:
    """Raise unless the frequencies $|k_i| \\le m_i$ are all unambiguous on `grid`.

    The rule is $2 m_i + 1 \\le n_i$ on every axis (the last one included): the kept frequencies are
    then a subset of `sdeflow.kept_modes(grid)`, distinct modulo $n_i$, and never touch the
    ambiguous Nyquist bin $\\pm n_i / 2$ of an even grid.

    **Arguments:**

    - `modes`: the largest frequency $m_i$ kept on each axis, non-negative ints.
    - `grid`: the spatial shape `(n_1, ..., n_d)`, as many axes as `modes`.
    - `name`: what the grid is, for the message (e.g. `"grid"` or `"output grid"`).

    **Returns:**

    None; it raises a `ValueError` when `grid` has another number of axes than `modes` or
    $2 m_i + 1 > n_i$ on some axis.
    """
    grid = tuple(int(n) for n in grid)
    if len(grid) != len(modes):
        raise ValueError(
            f"`{name}` {grid} has {len(grid)} spatial axes but the spectral convolution keeps "
            f"modes {tuple(modes)} on {len(modes)} axes."
        )
    bad = [i for i, (m, n) in enumerate(zip(modes, grid)) if 2 * m + 1 > n]
    if bad:
        need = tuple(2 * m + 1 for m in modes)
        raise ValueError(
            f"modes {tuple(modes)} do not fit the {name} {grid}: keeping |k_i| <= m_i needs "
            f"n_i >= 2 m_i + 1 = {need} on every axis (axes {bad} are too small; the Nyquist bin "
            "of an even grid is never used). Use fewer modes, a finer grid, or clip_modes=True (the "
            "modes the grid holds)."
        )


def clipped_modes(modes: Sequence[int], *grids: Sequence[int]) -> tuple[int, ...]:
    """`modes` reduced, axis by axis, to what every one of `grids` holds:
    $\\min(m_i, \\lfloor (n_i - 1)/2 \\rfloor)$ over the grids (see `check_modes_fit`).

    **Arguments:**

    - `modes`: the largest frequency $m_i$ wanted on each axis.
    - `*grids`: any number of spatial shapes `(n_1, ..., n_d)`, each with as many axes as `modes`
      (a `ValueError` otherwise).

    **Returns:**

    A tuple of ints, one per axis, that fits every one of `grids` in the sense of
    `check_modes_fit`; `modes` as ints when no grid is given.
    """
    out = tuple(int(m) for m in modes)
    for grid in grids:
        if len(grid) != len(out):
            raise ValueError(f"grid {tuple(grid)} has {len(grid)} axes, the modes {out} {len(out)}.")
        if any(int(n) < 1 for n in grid):
            raise ValueError(f"grid {tuple(grid)} must hold positive sizes.")
        out = tuple(min(m, (int(n) - 1) // 2) for m, n in zip(out, grid))
    return out


# -- truncated DFT matrices (float64 in NumPy, cast once) -----------------------------------------


def _frequencies(m: int, last: bool) -> np.ndarray:
    return np.arange(m + 1) if last else np.arange(-m, m + 1)


@functools.lru_cache(maxsize=256)
def _analysis_last(n: int, m: int) -> np.ndarray:
    """(n, 2(m+1)): real point values -> [Re, Im] of $\\hat u_k$, $k = 0..m$ (with the $1/n$)."""
    theta = 2 * np.pi * np.outer(np.arange(n), _frequencies(m, True)) / n
    return np.concatenate([np.cos(theta), -np.sin(theta)], axis=1) / n


@functools.lru_cache(maxsize=256)
def _analysis(n: int, m: int) -> np.ndarray:
    """(2n, 2(2m+1)): [Re, Im] along an axis -> [Re, Im] of the DFT at $k = -m..m$ (with $1/n$)."""
    theta = 2 * np.pi * np.outer(np.arange(n), _frequencies(m, False)) / n
    c, s = np.cos(theta) / n, np.sin(theta) / n
    return np.block([[c, -s], [s, c]])


@functools.lru_cache(maxsize=256)
def _synthesis(n: int, m: int) -> np.ndarray:
    """(2(2m+1), 2n): [Re, Im] of $c_k$, $k = -m..m$ -> [Re, Im] of $\\sum_k c_k e^{ikx}$."""
    theta = 2 * np.pi * np.outer(_frequencies(m, False), np.arange(n)) / n
    c, s = np.cos(theta), np.sin(theta)
    return np.block([[c, s], [-s, c]])


@functools.lru_cache(maxsize=256)
def _synthesis_last(n: int, m: int) -> np.ndarray:
    """(2(m+1), n): [Re, Im] of $c_k$, $k = 0..m$ -> $\\sum_k w_k \\mathrm{Re}(c_k e^{ikx})$,
    $w_0 = 1$, $w_k = 2$ otherwise (the Hermitian completion of `irfft`)."""
    k = _frequencies(m, True)
    theta = 2 * np.pi * np.outer(k, np.arange(n)) / n
    w = np.where(k == 0, 1.0, 2.0)[:, None]
    return np.concatenate([w * np.cos(theta), -w * np.sin(theta)], axis=0)


def _const(matrix: np.ndarray, dtype) -> Array:
    return jnp.asarray(matrix, dtype=dtype)


def _mixing_matrix(weight_real: Array, weight_imag: Array) -> Array:
    """Per mode the real (2 in, 2 out) matrix of $x \\mapsto x W$ on $[\\mathrm{Re}\\, x,
    \\mathrm{Im}\\, x]$."""
    top = jnp.concatenate([weight_real, weight_imag], axis=-1)
    bottom = jnp.concatenate([-weight_imag, weight_real], axis=-1)
    return jnp.concatenate([top, bottom], axis=-2)


def _dft_forward(u: Array, modes: tuple) -> Array:
    """Truncated DFT as matmuls. `u` (c, *grid) real -> (c, 2, K_1, ..., K_d) with [Re, Im]."""
    c, *grid = u.shape
    d = len(grid)
    a = u @ _const(_analysis_last(grid[-1], modes[-1]), u.dtype)
    a = a.reshape(c, *grid[:-1], 2, modes[-1] + 1)
    # Invariant: a has shape (c, n_1..n_i, 2, K_{i+1}..K_d) before handling spatial axis i.
    for i in reversed(range(d - 1)):
        ax = i + 1  # the array axis of n_i
        k_axes = list(range(ax + 2, a.ndim))
        a = a.transpose(*range(ax), *k_axes, ax + 1, ax)
        lead = a.shape[:-2]
        a = a.reshape(*lead, 2 * grid[i]) @ _const(_analysis(grid[i], modes[i]), u.dtype)
        a = a.reshape(*lead, 2, 2 * modes[i] + 1)
        nk = len(k_axes)
        a = a.transpose(*range(ax), ax + nk, ax + nk + 1, *range(ax, ax + nk))
    return a


def _dft_inverse(a: Array, modes: tuple, grid: tuple) -> Array:
    """Inverse of `_dft_forward`'s layout: (o, 2, K_1..K_d) -> real (o, *grid)."""
    o = a.shape[0]
    d = len(grid)
    # Invariant: a has shape (o, n_1..n_{i-1}, 2, K_i..K_d) before handling spatial axis i.
    for i in range(d - 1):
        ax = i + 1  # the array axis of the '2'
        rest = list(range(ax + 2, a.ndim))
        a = a.transpose(*range(ax), *rest, ax, ax + 1)
        lead = a.shape[:-2]
        synthesis = _const(_synthesis(grid[i], modes[i]), a.dtype)
        a = a.reshape(*lead, 2 * (2 * modes[i] + 1)) @ synthesis
        a = a.reshape(*lead, 2, grid[i])
        nr = len(rest)
        a = a.transpose(*range(ax), ax + nr + 1, ax + nr, *range(ax, ax + nr))
    a = a.reshape(o, *grid[:-1], 2 * (modes[-1] + 1))
    return a @ _const(_synthesis_last(grid[-1], modes[-1]), a.dtype)


def _fft_forward(u: Array, modes: tuple) -> Array:
    """Same output as `_dft_forward` through `rfftn` and slicing."""
    d = u.ndim - 1
    u_hat = jnp.fft.rfftn(u, axes=tuple(range(1, d + 1)), norm="forward")
    u_hat = u_hat[(slice(None),) * d + (slice(0, modes[-1] + 1),)]
    for i in range(d - 1):
        ax, m = i + 1, modes[i]
        neg = jnp.take(u_hat, jnp.arange(-m, 0) % u.shape[ax], axis=ax)
        pos = jnp.take(u_hat, jnp.arange(0, m + 1), axis=ax)
        u_hat = jnp.concatenate([neg, pos], axis=ax)
    return jnp.stack([u_hat.real, u_hat.imag], axis=1)


def _fft_inverse(a: Array, modes: tuple, grid: tuple) -> Array:
    """Same output as `_dft_inverse` by zero-padding at the right frequencies and `irfftn`."""
    d = len(grid)
    c_hat = a[:, 0] + 1j * a[:, 1]
    for i in range(d - 1):
        ax, m, n = i + 1, modes[i], grid[i]
        neg, pos = jnp.split(c_hat, [m], axis=ax)  # frequencies -m..-1 and 0..m
        pad_shape = list(c_hat.shape)
        pad_shape[ax] = n - (2 * m + 1)
        c_hat = jnp.concatenate([pos, jnp.zeros(pad_shape, c_hat.dtype), neg], axis=ax)
    pad = [(0, 0)] * d + [(0, grid[-1] // 2 + 1 - (modes[-1] + 1))]
    c_hat = jnp.pad(c_hat, pad)
    out = jnp.fft.irfftn(c_hat, s=grid, axes=tuple(range(1, d + 1)), norm="forward")
    return out.astype(a.dtype)


def _mix(a: Array, mixing: Array) -> Array:
    """(c, 2, *K) times per-mode (M, 2c, 2o) -> (o, 2, *K)."""
    c, _, *kept = a.shape
    m = math.prod(kept)
    x = jnp.swapaxes(a, 0, 1).reshape(2 * c, m).T  # (M, 2c) as [Re over c, Im over c]
    y = jnp.einsum("mi,mio->mo", x, mixing)
    o = mixing.shape[-1] // 2
    return jnp.swapaxes(y.T.reshape(2, o, *kept), 0, 1)


# -- the spatial-major batched layout (used by FNO under vmap) ------------------------------------
#
# A batch is stored as (n_d, ..., n_1, B, c): grid axes reversed, then batch, then channels. Every
# transform is then a 2-d matmul or a batched matmul in XLA's canonical form (batch axis first,
# contraction on contiguous axes), which is what XLA's CPU backend runs fastest; the per-sample
# channels-first layout under `vmap` instead produces contractions over non-adjacent axes.


@functools.lru_cache(maxsize=256)
def _sm_analysis_last(n: int, m: int) -> np.ndarray:
    """(2(m+1), n): real values -> rows (k, r) with r = Re, Im, $k = 0..m$ (with $1/n$)."""
    theta = 2 * np.pi * np.outer(_frequencies(m, True), np.arange(n)) / n
    return (np.stack([np.cos(theta), -np.sin(theta)], axis=1) / n).reshape(-1, n)


@functools.lru_cache(maxsize=256)
def _sm_analysis(n: int, m: int) -> np.ndarray:
    """(2(2m+1), 2n): columns (r, x) -> rows (k, r), $k = -m..m$ (with $1/n$)."""
    theta = 2 * np.pi * np.outer(_frequencies(m, False), np.arange(n)) / n
    c, s = np.cos(theta) / n, np.sin(theta) / n
    re = np.concatenate([c, s], axis=1)
    im = np.concatenate([-s, c], axis=1)
    return np.stack([re, im], axis=1).reshape(-1, 2 * n)


@functools.lru_cache(maxsize=256)
def _sm_synthesis(n: int, m: int) -> np.ndarray:
    """(2n, 2(2m+1)): columns (k, r) -> rows (r, x) of $\\sum_k c_k e^{2\\pi i k x}$."""
    theta = 2 * np.pi * np.outer(np.arange(n), _frequencies(m, False)) / n
    c, s = np.cos(theta), np.sin(theta)
    re = np.stack([c, -s], axis=2).reshape(n, -1)
    im = np.stack([s, c], axis=2).reshape(n, -1)
    return np.concatenate([re, im], axis=0)


@functools.lru_cache(maxsize=256)
def _sm_synthesis_last(n: int, m: int) -> np.ndarray:
    """(n, 2(m+1)): columns (k, r) -> $\\sum_k w_k \\mathrm{Re}(c_k e^{2\\pi i k x})$."""
    k = _frequencies(m, True)
    w = np.where(k == 0, 1.0, 2.0)
    theta = 2 * np.pi * np.outer(np.arange(n), k) / n
    return np.stack([w * np.cos(theta), -w * np.sin(theta)], axis=2).reshape(n, -1)


def _broadcast_matmul(matrix: np.ndarray, a: Array, batch: int) -> Array:
    mat = jnp.broadcast_to(_const(matrix, a.dtype), (batch,) + matrix.shape)
    return jnp.einsum("kij,kjd->kid", mat, a)


def _constant_product(product, matrix: np.ndarray, a: Array) -> Array:
    """`product(matrix, a)`, linear in `a`, with `product(matrix.T, g)` as its transpose
    (`nets.linear_map`): a canonical dot both ways."""
    matrix_t = np.ascontiguousarray(matrix.T)
    return linear_map(lambda a: product(matrix, a), lambda g: product(matrix_t, g), a)


def batched_matmul(matrix: np.ndarray, a: Array, batch: int) -> Array:
    """`matrix @ a[k]` for each k < batch, as a canonical batched dot (matrix broadcast).

    **Arguments:**

    - `matrix`: a constant NumPy matrix of shape `(p, q)`, cast to the dtype of `a`.
    - `a`: an array of shape `(batch, q, r)`.
    - `batch`: the size of the leading axis of `a`.

    **Returns:**

    An array of shape `(batch, p, r)`; reverse mode runs the same product with `matrix.T`
    (`nets.linear_map`).
    """
    return _constant_product(lambda m, a: _broadcast_matmul(m, a, batch), matrix, a)


def const_matmul(matrix: np.ndarray, a: Array) -> Array:
    """`matrix @ a` for a 2-d `a`.

    **Arguments:**

    - `matrix`: a constant NumPy matrix of shape `(p, q)`, cast to the dtype of `a`.
    - `a`: an array of shape `(q, r)`.

    **Returns:**

    An array of shape `(p, r)`; reverse mode runs the same product with `matrix.T`
    (`nets.linear_map`).
    """
    return _constant_product(lambda m, a: _const(m, a.dtype) @ a, matrix, a)


@functools.lru_cache(maxsize=256)
def _sm_paired_analysis(n: int, m: int) -> np.ndarray:
    """(2m+1, n): values along an axis -> rows $C_0..C_m, S_1..S_m$ with
    $C_j = \\frac1n \\sum_x a(x) \\cos\\theta_j(x)$, $S_j = \\frac1n \\sum_x a(x) \\sin\\theta_j(x)$,
    $\\theta_j(x) = 2\\pi j x / n$; the DFT at $\\pm j$ is $C_j \\mp i S_j$ (see `_pairs_to_modes`)."""
    theta = 2 * np.pi * np.outer(np.arange(m + 1), np.arange(n)) / n
    return np.concatenate([np.cos(theta), np.sin(theta[1:])], axis=0) / n


@functools.lru_cache(maxsize=256)
def _sm_paired_synthesis(n: int, m: int) -> np.ndarray:
    """(n, 2m+1): columns $Y_0, P_1..P_m, Q_1..Q_m$ -> $Y_0 + \\sum_j P_j \\cos\\theta_j(x) +
    Q_j \\sin\\theta_j(x)$, which is $\\sum_{|k| \\le m} Y_k e^{2\\pi i k x / n}$ for
    $P_j = Y_j + Y_{-j}$, $Q_j = i (Y_j - Y_{-j})$ (see `_modes_to_pairs`)."""
    theta = 2 * np.pi * np.outer(np.arange(n), np.arange(m + 1)) / n
    return np.concatenate([np.cos(theta), np.sin(theta[:, 1:])], axis=1)


def _paired_order(m: int) -> np.ndarray:
    """Indices into frequencies $-m..m$ giving the order $0, 1..m, -1..-m$ of the paired axis."""
    return np.concatenate([np.arange(m, 2 * m + 1), np.arange(m - 1, -1, -1)])


def _pairs_to_modes(a: Array, m: int) -> Array:
    """(kb, 2, 2m+1, B, c): [Re, Im] of rows $C_0..C_m, S_1..S_m$ -> (kb, 2m+1, B, 2, c): [Re, Im]
    of the DFT $C_j \\mp i S_j$ at $k = 0, 1..m, -1..-m$ (one elementwise pass, fused by XLA with
    the transpose that the mixing's layout needs anyway).

    Its transpose is `_modes_to_pairs` (the same sums and differences read the other way), which
    reverse mode runs in place of XLA's pads and accumulations (`nets.linear_map`)."""
    return linear_map(lambda a: _pairs_to_modes_raw(a, m),
                      lambda g: _modes_to_pairs_raw(g, m), a)


def _modes_to_pairs(y: Array, m: int) -> Array:
    """(kb, 2m+1, B, 2, o): [Re, Im] of $Y_k$ at $k = 0, 1..m, -1..-m$ -> (kb, 2, 2m+1, B, o): [Re,
    Im] of rows $Y_0$, $P_j = Y_j + Y_{-j}$, $Q_j = i (Y_j - Y_{-j})$; the transpose of
    `_pairs_to_modes`, and the other way round."""
    return linear_map(lambda y: _modes_to_pairs_raw(y, m),
                      lambda g: _pairs_to_modes_raw(g, m), y)


def _pairs_to_modes_raw(a: Array, m: int) -> Array:
    c_re, c_im = a[:, 0, : m + 1], a[:, 1, : m + 1]
    s_re, s_im = a[:, 0, m + 1 :], a[:, 1, m + 1 :]
    re = jnp.concatenate([c_re[:, :1], c_re[:, 1:] + s_im, c_re[:, 1:] - s_im], axis=1)
    im = jnp.concatenate([c_im[:, :1], c_im[:, 1:] - s_re, c_im[:, 1:] + s_re], axis=1)
    return jnp.stack([re, im], axis=-2)


def _modes_to_pairs_raw(y: Array, m: int) -> Array:
    re, im = y[..., 0, :], y[..., 1, :]
    re_pos, re_neg, im_pos, im_neg = re[:, 1 : m + 1], re[:, m + 1 :], im[:, 1 : m + 1], im[:, m + 1 :]
    z_re = jnp.concatenate([re[:, :1], re_pos + re_neg, im_neg - im_pos], axis=1)
    z_im = jnp.concatenate([im[:, :1], im_pos + im_neg, re_pos - re_neg], axis=1)
    return jnp.stack([z_re, z_im], axis=1)


def _sm_forward(h: Array, modes: tuple) -> Array:
    """(n_d, ..., n_1, B, c) -> (M, B, 2c): modes ordered (k_d, ..., k_1), [Re, Im] over c.

    The $k_d \\ge 0$ axis is a real DFT; the middle axes are complex DFTs in the order $-m..m$;
    the $k_1$ axis (for $d \\ge 2$) is a cosine and a sine transform, half the multiplications of
    a complex DFT, recombined into the order $0, 1..m, -1..-m$ (`_paired_order`).
    """
    d = len(modes)
    grid_rev = h.shape[:d]
    b, c = h.shape[d:]
    a = const_matmul(_sm_analysis_last(grid_rev[0], modes[-1]), h.reshape(grid_rev[0], -1))
    kb = modes[-1] + 1
    if d == 1:
        return a.reshape(kb, 2, b, c).transpose(0, 2, 1, 3).reshape(kb, b, 2 * c)
    for j in range(1, d - 1):
        i = d - 1 - j  # the spatial axis handled now, of size grid_rev[j]
        a = a.reshape(kb, 2 * grid_rev[j], -1)
        a = batched_matmul(_sm_analysis(grid_rev[j], modes[i]), a, kb)
        kb *= 2 * modes[i] + 1
    n, m = grid_rev[-1], modes[0]
    a = batched_matmul(_sm_paired_analysis(n, m), a.reshape(2 * kb, n, -1), 2 * kb)
    a = _pairs_to_modes(a.reshape(kb, 2, 2 * m + 1, b, c), m)
    return a.reshape(kb * (2 * m + 1), b, 2 * c)


def _sm_inverse(y: Array, modes: tuple, grid: tuple) -> Array:
    """(M, B, 2o) -> (n'_d, ..., n'_1, B, o) on the output grid `grid` = (n'_1, ..., n'_d); the
    mode order of `_sm_forward`."""
    d = len(modes)
    m_total, b, two_o = y.shape
    o = two_o // 2
    if d == 1:
        a = y.reshape(m_total, b, 2, o).transpose(0, 2, 1, 3)
    else:  # the paired k_1 axis first (see `_sm_forward`)
        m = modes[0]
        kb = m_total // (2 * m + 1)
        z = _modes_to_pairs(y.reshape(kb, 2 * m + 1, b, 2, o), m).reshape(2 * kb, 2 * m + 1, -1)
        a = batched_matmul(_sm_paired_synthesis(grid[0], m), z, 2 * kb)
    for i in range(1, d - 1):
        k = 2 * modes[i] + 1
        kb //= k
        a = batched_matmul(_sm_synthesis(grid[i], modes[i]), a.reshape(kb, 2 * k, -1), kb)
    a = a.reshape(2 * (modes[-1] + 1), -1)
    out = const_matmul(_sm_synthesis_last(grid[-1], modes[-1]), a)
    return out.reshape(*grid[::-1], b, o)


def _sm_fft_axes(d: int) -> tuple[int, ...]:
    """The grid axes of a spatial-major batch `(n_d, ..., n_1, B, c)` in the order `rfftn` takes
    them: $n_1$ first and $n_d$ (array axis 0, the half-spectrum axis) last."""
    return tuple(range(d - 1, -1, -1))


def _sm_fft_forward(h: Array, modes: tuple) -> Array:
    """(n_d, ..., n_1, B, c) -> complex (K_d, ..., K_1, B, c) through `rfftn`: $k_d = 0..m_d$ and
    $k_i = -m_i..m_i$ for $i < d$ (the weights' order)."""
    d = len(modes)
    u_hat = jnp.fft.rfftn(h, axes=_sm_fft_axes(d), norm="forward")[: modes[-1] + 1]
    for i in range(d - 1):
        ax, m = d - 1 - i, modes[i]  # the array axis of n_i
        index = jnp.arange(-m, m + 1) % h.shape[ax]
        u_hat = jnp.take(u_hat, index, axis=ax)
    return u_hat


def _sm_fft_inverse(y: Array, modes: tuple, grid: tuple) -> Array:
    """Complex (K_d, ..., K_1, B, o) in the order of `_sm_fft_forward` -> real
    (n'_d, ..., n'_1, B, o) on the output grid `grid` = (n'_1, ..., n'_d), by zero-padding at the
    right frequencies and `irfftn`."""
    d = len(modes)
    for i in range(d - 1):
        ax, m, n = d - 1 - i, modes[i], grid[i]
        neg, pos = jnp.split(y, [m], axis=ax)  # frequencies -m..-1 and 0..m
        pad_shape = list(y.shape)
        pad_shape[ax] = n - (2 * m + 1)
        y = jnp.concatenate([pos, jnp.zeros(pad_shape, y.dtype), neg], axis=ax)
    y = jnp.pad(y, [(0, grid[-1] // 2 + 1 - (modes[-1] + 1))] + [(0, 0)] * (y.ndim - 1))
    # `s` lists the sizes of the axes in the order of `axes`: n'_1, ..., n'_d.
    return jnp.fft.irfftn(y, s=grid, axes=_sm_fft_axes(d), norm="forward")


class SpectralConv(eqx.Module):
    """Spectral convolution $v = \\mathcal{F}^{-1}(W \\cdot \\mathcal{F} u)$ on low modes, any grid.

    With $K = \\{k : |k_i| \\le m_i \\text{ for } i < d,\\ 0 \\le k_d \\le m_d\\}$ (half of the
    symmetric box, as `rfftn` stores it) and complex weights $W_k \\in \\mathbb{C}^{c_{in} \\times
    c_{out}}$, the output on a grid of points $y$ is

    $v_o(y) = \\sum_{k \\in K} w_k \\,\\mathrm{Re}\\big( \\sum_i \\hat u_{i,k} W_{k,io}
    e^{2\\pi i k \\cdot y} \\big)$, $w_k = 1$ if $k_d = 0$ else $2$,

    i.e. `irfftn` of the mixed coefficients placed at the same physical frequencies on the output
    grid, everything else zero. The output grid defaults to the input grid; any grid on which the
    modes fit may be asked for (this is how resolution changes). Modes fit a grid when
    $2 m_i + 1 \\le n_i$ on every axis, so no Nyquist bin is ever used and negative frequencies sit
    where they belong; otherwise a `ValueError` names the grid and the modes.

    Two implementations give the same function to float32 round-off: `"dft"` (truncated DFTs as
    real matmuls with precomputed cos/sin matrices, one axis at a time) and `"fft"` (`rfftn`,
    slicing, zero-padding, `irfftn`). Both the one-sample call and the batched `spatial_major`
    path use the chosen one. `"auto"` uses `"dft"`, which is the faster one on XLA's CPU backend
    for the mode counts used here (see benchmarks/bench_train_step.py).

    **Arguments:**

    - `in_channels`, `out_channels`: channel counts.
    - `modes`: $m_i$ per axis, or an int for all `dim` axes.
    - `dim`: the number of spatial axes (needed when `modes` is an int).
    - `method`: `"auto"`, `"dft"` or `"fft"`.
    - `clip_modes`: on a grid too coarse for the modes, keep only the frequencies it holds,
      $|k_i| \\le \\lfloor (n_i - 1)/2 \\rfloor$ of the input and output grids, with their weights
      (the sub-box of the stored ones); the result is the restriction of the map on a finer grid
      for inputs band-limited to the coarse one. `False`: such a grid is refused.
    - `key`: a JAX random key for the weights, drawn uniform in $\\pm 1/\\sqrt{2 c_{in}}$ for the
      real and imaginary parts.

    Weights are stored as real arrays `weight_real`, `weight_imag` of shape
    `(K_1, ..., K_d, in_channels, out_channels)` with $K_i = 2 m_i + 1$ (frequencies $-m_i..m_i$ in
    order) for $i < d$ and $K_d = m_d + 1$ (frequencies $0..m_d$). As in every `rfftn`-based FNO,
    the imaginary weight of $k = 0$ never reaches the (real) output, and on the plane $k_d = 0$ the
    weights of $k$ and $-k$ act through $W_k + \\overline{W_{-k}}$ only.
    """

    weight_real: Float[Array, "..."]
    weight_imag: Float[Array, "..."]
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    modes: tuple[int, ...] = eqx.field(static=True)
    method: str = eqx.field(static=True)
    clip_modes: bool = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: int | Sequence[int],
        *,
        dim: int | None = None,
        method: Method = "auto",
        clip_modes: bool = False,
        key: PRNGKeyArray,
    ):
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"`in_channels` and `out_channels` must be positive, got {in_channels}, "
                f"{out_channels}."
            )
        if method not in ("auto", "dft", "fft"):
            raise ValueError(f"`method` must be 'auto', 'dft' or 'fft', got {method!r}.")
        self.modes = normalise_modes(modes, dim)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.method = method
        self.clip_modes = bool(clip_modes)
        shape = self.kept_shape + (self.in_channels, self.out_channels)
        scale = 1.0 / math.sqrt(2 * self.in_channels)
        kr, ki = jr.split(key)
        self.weight_real = jr.uniform(kr, shape, minval=-scale, maxval=scale)
        self.weight_imag = jr.uniform(ki, shape, minval=-scale, maxval=scale)

    @property
    def kept_shape(self) -> tuple[int, ...]:
        """$(2 m_1 + 1, \\ldots, 2 m_{d-1} + 1, m_d + 1)$."""
        return tuple(2 * m + 1 for m in self.modes[:-1]) + (self.modes[-1] + 1,)

    def fitted(self, grid: Sequence[int], out: Sequence[int]) -> tuple[tuple[int, ...], Array, Array]:
        """The modes used between the input grid `grid` and the output grid `out`, with their
        weights: all of them where they fit both grids; with `clip_modes`, those the grids hold
        (`clipped_modes`); otherwise a `ValueError` names the grid.

        **Arguments:**

        - `grid`: the input grid `(n_1, ..., n_d)`.
        - `out`: the output grid `(n'_1, ..., n'_d)`.

        **Returns:**

        `(modes, weight_real, weight_imag)`: the modes used per axis and the weights of those
        modes, each of shape `(K_1, ..., K_d, in_channels, out_channels)` for them (the central
        sub-box of the stored weights when clipped). A `ValueError` is raised when a size is not
        positive, or, without `clip_modes`, when the modes do not fit either grid.
        """
        for name, g in (("input grid", grid), ("output grid", out)):
            if any(int(n) < 1 for n in g):
                raise ValueError(f"the {name} {tuple(g)} must hold positive sizes.")
        if not self.clip_modes:
            check_modes_fit(self.modes, grid, "input grid")
            check_modes_fit(self.modes, out, "output grid")
            return self.modes, self.weight_real, self.weight_imag
        modes = clipped_modes(self.modes, grid, out)
        if modes == self.modes:
            return self.modes, self.weight_real, self.weight_imag
        box = tuple(slice(m - k, m + k + 1) for m, k in zip(self.modes[:-1], modes[:-1]))
        box = box + (slice(0, modes[-1] + 1),)
        return modes, self.weight_real[box], self.weight_imag[box]

    def __call__(
        self, u: Float[Array, "c *grid"], out_grid: Sequence[int] | None = None
    ) -> Float[Array, "o *out_grid"]:
        """Apply the convolution to one sample.

        **Arguments:**

        - `u`: an array of shape `(in_channels, n_1, ..., n_d)`.
        - `out_grid`: the output grid `(n'_1, ..., n'_d)`; defaults to the input grid.

        **Returns:**

        An array of shape `(out_channels, *out_grid)`.
        """
        d = len(self.modes)
        if u.ndim != d + 1 or u.shape[0] != self.in_channels:
            raise ValueError(
                f"`u` must have shape ({self.in_channels}, n_1, ..., n_{d}) (one sample, channels "
                f"first), got {tuple(u.shape)}."
            )
        grid = tuple(u.shape[1:])
        out = grid if out_grid is None else tuple(int(n) for n in out_grid)
        modes, w_re, w_im = self.fitted(grid, out)
        mixing = _mixing_matrix(w_re, w_im).astype(u.dtype)
        mixing = mixing.reshape(-1, 2 * self.in_channels, 2 * self.out_channels)
        if self.method == "fft":
            a = _fft_forward(u, modes)
            return _fft_inverse(_mix(a, mixing), modes, out)
        a = _dft_forward(u, modes)
        return _dft_inverse(_mix(a, mixing), modes, out)

    def spatial_major(
        self, h: Float[Array, "*grid_rev b c"], out_grid: Sequence[int] | None = None
    ) -> Float[Array, "*out_rev b o"]:
        """The same map on a whole batch stored spatial-major, `(n_d, ..., n_1, B, c)`.

        This is the layout of the networks' `batched` paths: with `method="dft"` (and `"auto"`)
        every transform becomes a plain or batched matmul in XLA's canonical form; with `"fft"`
        the transforms are `rfftn` and `irfftn` over the grid axes. Equals `jax.vmap(self)` up to
        the layout and float32 round-off.

        **Arguments:**

        - `h`: a batch of shape `(n_d, ..., n_1, B, in_channels)` (grid axes reversed).
        - `out_grid`: the output grid `(n'_1, ..., n'_d)` (natural order); defaults to the input
          grid.

        **Returns:**

        An array of shape `(n'_d, ..., n'_1, B, out_channels)`.
        """
        d = len(self.modes)
        if h.ndim != d + 2 or h.shape[-1] != self.in_channels:
            raise ValueError(
                f"`h` must have shape (n_{d}, ..., n_1, batch, {self.in_channels}), got "
                f"{tuple(h.shape)}."
            )
        grid = tuple(h.shape[:d])[::-1]
        out = grid if out_grid is None else tuple(int(n) for n in out_grid)
        modes, w_re, w_im = self.fitted(grid, out)
        rev = tuple(range(d))[::-1]
        w_re = w_re.transpose(*rev, d, d + 1)
        w_im = w_im.transpose(*rev, d, d + 1)
        if self.method == "fft":
            u_hat = _sm_fft_forward(h, modes)
            weight = jax.lax.complex(w_re, w_im).astype(u_hat.dtype)
            y = jnp.einsum("...bi,...io->...bo", u_hat, weight)
            return _sm_fft_inverse(y, modes, out).astype(h.dtype)
        if d > 1:  # the k_1 axis in the order of the paired transform
            order = _paired_order(modes[0])
            w_re, w_im = w_re[..., order, :, :], w_im[..., order, :, :]
        mixing = _mixing_matrix(w_re, w_im).astype(h.dtype)
        mixing = mixing.reshape(-1, 2 * self.in_channels, 2 * self.out_channels)
        a = _sm_forward(h, modes)
        y = jnp.einsum("mbi,mio->mbo", a, mixing)
        return _sm_inverse(y, modes, out)
