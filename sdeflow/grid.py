"""Grids on the torus, the Fourier convention, and spectral resampling between grids.

Conventions:

- a sample of $u: \\mathbb{T}^d = [0, 1)^d \\to \\mathbb{R}^c$ is stored as point values $u(x_j)$ at
  $x_j = j / n$, in an array of shape `(c, n_1, ..., n_d)`;
- Fourier coefficients are $\\hat u_k = \\frac{1}{N} \\sum_j u(x_j) e^{-2\\pi i k \\cdot x_j}$, i.e.
  `jnp.fft.rfftn(u, norm="forward")` over the spatial axes, for physical integer frequencies $k$;
- on an even grid the Nyquist bin $k_i = -n_i/2$ stands for the real mode
  $\\tfrac{c}{2}(e^{i \\pi n_i x} + e^{-i \\pi n_i x})$: prolongation splits it symmetrically between
  $\\pm n_i/2$ and restriction folds $\\pm m_i/2$ back into it. Restriction is then the $L^2$ projection
  onto the coarse grid's functions, prolongation is exact interpolation by trigonometric polynomials,
  and `restrict(prolong(u)) == u` to round-off.
"""

import functools
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Complex, Float, Inexact, Int

from .checks import check_positive_int
from .custom_types import Field, Grid


def _as_grid(shape: Sequence[int], name: str = "shape") -> Grid:
    grid = tuple(int(n) for n in shape)
    if len(grid) == 0 or any(n < 1 for n in grid):
        raise ValueError(f"`{name}` must be a non-empty sequence of positive grid sizes, got {shape}.")
    return grid


def field_grid(u: Array, name: str = "u") -> Grid:
    """The spatial grid of a field of shape `(c, n_1, ..., n_d)`, checking its rank.

    **Arguments:**

    - `u`: one sample, channels first.
    - `name`: the argument's name, used in the error message.

    **Returns:**

    The tuple `(n_1, ..., n_d)`.
    """
    if u.ndim < 2 or u.ndim > 4:
        raise ValueError(
            f"`{name}` must have shape (channels, n_1, ..., n_d) with d in 1..3 (one sample, "
            f"channels first; vmap over batches), got shape {tuple(u.shape)}."
        )
    return tuple(u.shape[1:])


def _target_grid(u: Array, shape: Sequence[int], name: str) -> Grid:
    """Accept either a spatial shape or a full `(c, *grid)` shape for the target."""
    grid = field_grid(u)
    shape = tuple(int(n) for n in shape)
    if len(shape) == u.ndim:
        if shape[0] != u.shape[0]:
            raise ValueError(
                f"`{name}` {shape} asks for {shape[0]} channels but `u` has {u.shape[0]}; "
                "resampling changes the grid, never the channels."
            )
        shape = shape[1:]
    if len(shape) != len(grid):
        raise ValueError(
            f"`{name}` {shape} has {len(shape)} spatial axes but `u` of shape {tuple(u.shape)} has "
            f"{len(grid)}."
        )
    return _as_grid(shape, name)


def coordinates(grid: Sequence[int]) -> Float[Array, "d *grid"]:
    """Physical coordinates $x_j = j / n$ of a grid on $[0, 1)^d$.

    **Arguments:**

    - `grid`: the spatial shape `(n_1, ..., n_d)`.

    **Returns:**

    An array of shape `(d, n_1, ..., n_d)` whose `i`-th slice is the `i`-th coordinate.
    """
    grid = _as_grid(grid, "grid")
    axes = [jnp.arange(n, dtype=jnp.float32) / n for n in grid]
    return jnp.stack(jnp.meshgrid(*axes, indexing="ij"))


def integer_frequencies(n: int) -> np.ndarray:
    """The physical integer frequencies of the `fft` bins of an `n`-grid, in `fft` order.

    **Arguments:**

    - `n`: the number of points on the axis, a positive integer.

    **Returns:**

    A NumPy `int64` array of shape `(n,)`: `0, 1, ..., (n - 1) // 2`, then `-(n // 2), ..., -1`
    (`np.fft.fftfreq(n, d=1/n)` rounded); on an even grid the Nyquist bin holds $-n/2$.
    """
    n = check_positive_int(n, "n")
    return np.rint(np.fft.fftfreq(n, d=1.0 / n)).astype(np.int64)


def rfft_frequencies(grid: Sequence[int]) -> tuple[Int[Array, "..."], ...]:
    """Physical integer frequencies of the `rfftn` layout of a grid, one broadcastable array per axis.

    **Arguments:**

    - `grid`: the spatial shape `(n_1, ..., n_d)`.

    **Returns:**

    A tuple of `d` integer arrays that broadcast to the `rfftn` shape
    `(n_1, ..., n_{d-1}, n_d // 2 + 1)`; entry `i` holds $k_i$ (negative frequencies in place).
    """
    grid = _as_grid(grid, "grid")
    d = len(grid)
    out = []
    for i, n in enumerate(grid):
        k = integer_frequencies(n) if i < d - 1 else np.arange(n // 2 + 1)
        shape = [1] * d
        shape[i] = k.size
        out.append(jnp.asarray(k.reshape(shape), dtype=jnp.int32))
    return tuple(out)


def rfft_shape(grid: Sequence[int]) -> Grid:
    """The shape of `rfftn` over a grid: `(n_1, ..., n_{d-1}, n_d // 2 + 1)`.

    **Arguments:**

    - `grid`: the spatial shape `(n_1, ..., n_d)`, positive sizes.

    **Returns:**

    The tuple `(n_1, ..., n_{d-1}, n_d // 2 + 1)`.
    """
    grid = _as_grid(grid, "grid")
    return grid[:-1] + (grid[-1] // 2 + 1,)


def squared_wavenumber(grid: Sequence[int]) -> Float[Array, "*rfft"]:
    """$|k|^2$ on the `rfftn` layout of a grid, for physical integer frequencies $k$.

    **Arguments:**

    - `grid`: the spatial shape `(n_1, ..., n_d)`.

    **Returns:**

    A float array of shape `rfft_shape(grid)` holding $\\sum_i k_i^2$ at each bin.
    """
    ks = rfft_frequencies(grid)
    return sum(k.astype(jnp.float32) ** 2 for k in ks) * jnp.ones(rfft_shape(grid))


def kept_modes(grid: Sequence[int], band: Sequence[int] | None = None) -> Bool[Array, "*rfft"]:
    """Mask of the modes a grid represents unambiguously: $|k_i| < n_i / 2$ on every axis.

    On an even axis this drops the Nyquist bin, which is where a grid's meaning is ambiguous.
    Samples of the priors live on these modes.

    **Arguments:**

    - `grid`: the grid whose `rfftn` layout the mask is on.
    - `band`: another grid $m$ (same number of axes), to mark on `grid`'s layout the modes that `band`
        keeps, $|k_i| < m_i / 2$; default `grid` itself.

    **Returns:**

    A boolean array of shape `rfft_shape(grid)`, `True` where $2 |k_i| < m_i$ on every axis $i$
    ($m$ = `band`, else `grid`).
    """
    grid = _as_grid(grid, "grid")
    band = grid if band is None else _as_grid(band, "band")
    if len(band) != len(grid):
        raise ValueError(f"`band` {band} must have as many axes as `grid` {grid}.")
    ks = rfft_frequencies(grid)
    mask = jnp.ones(rfft_shape(grid), dtype=bool)
    for k, n in zip(ks, band):
        mask = mask & (2 * jnp.abs(k) < n)
    return mask


def fourier(u: Field) -> Complex[Array, "c *freq"]:
    """Fourier coefficients $\\hat u_k$ of a field over its spatial axes (`norm="forward"`).

    **Arguments:**

    - `u`: one sample of shape `(c, n_1, ..., n_d)`.

    **Returns:**

    A complex array of shape `(c, *rfft_shape(grid))`.
    """
    grid = field_grid(u)
    return jnp.fft.rfftn(u, axes=tuple(range(1, len(grid) + 1)), norm="forward")


def inverse_fourier(u_hat: Inexact[Array, "c *freq"], grid: Sequence[int]) -> Float[Array, "c *out_grid"]:
    """Point values $\\sum_k \\hat u_k e^{2\\pi i k \\cdot x_j}$ on `grid` from `rfftn`-layout coefficients.

    **Arguments:**

    - `u_hat`: complex array of shape `(c, *rfft_shape(grid))`.
    - `grid`: the spatial shape `(n_1, ..., n_d)`.

    **Returns:**

    A real array of shape `(c, *grid)`.
    """
    grid = _as_grid(grid, "grid")
    if tuple(u_hat.shape[1:]) != rfft_shape(grid):
        raise ValueError(
            f"`u_hat` of shape {tuple(u_hat.shape)} does not hold the rfftn layout "
            f"{rfft_shape(grid)} of grid {grid}."
        )
    axes = tuple(range(1, len(grid) + 1))
    return jnp.fft.irfftn(u_hat, s=grid, axes=axes, norm="forward")


@functools.lru_cache(maxsize=256)
def resample_matrix(n: int, m: int) -> np.ndarray:
    """The real $(m, n)$ matrix of spectral resampling along one axis, in float64.

    Frequencies $|k| < \\min(n, m) / 2$ are kept; a Nyquist bin of an even `n` is split
    symmetrically between $\\pm n/2$; modes at $\\pm m/2$ are folded into the Nyquist bin of an even
    `m`; the rest is truncated (restriction) or zero (prolongation).

    **Arguments:**

    - `n`: the input size.
    - `m`: the output size.

    **Returns:**

    A NumPy array `R` with `R @ u` the resampled values of `u`.
    """
    n, m = int(n), int(m)
    if n < 1 or m < 1:
        raise ValueError(f"grid sizes must be positive, got n={n}, m={m}.")
    k_in = integer_frequencies(n)
    out_index = {int(k): i for i, k in enumerate(integer_frequencies(m))}
    transfer = np.zeros((m, n), dtype=np.complex128)
    for i, k in enumerate(k_in):
        parts = [(k, 1.0)]
        if n % 2 == 0 and 2 * abs(k) == n:
            parts = [(k, 0.5), (-k, 0.5)]  # the Nyquist bin is the symmetric real mode
        for kk, weight in parts:
            if 2 * abs(kk) < m:
                transfer[out_index[int(kk)], i] += weight
            elif 2 * abs(kk) == m:  # fold +-m/2 into the Nyquist bin of an even output
                transfer[out_index[-m // 2], i] += weight
    forward = np.fft.fft(np.eye(n), axis=0, norm="forward")
    matrix = np.fft.ifft(transfer @ forward, axis=0, norm="forward")
    assert np.max(np.abs(matrix.imag)) < 1e-10
    return np.ascontiguousarray(matrix.real)


def _apply_axes(u: Array, target: Grid) -> Array:
    grid = u.shape[1:]
    for axis, (n, m) in enumerate(zip(grid, target), start=1):
        if n == m:
            continue
        matrix = jnp.asarray(resample_matrix(n, m), dtype=u.dtype)
        u = jnp.moveaxis(jnp.tensordot(matrix, u, axes=(1, axis)), 0, axis)
    return u


def resample(u: Field, shape: Sequence[int]) -> Float[Array, "c *out_grid"]:
    """Spectral resampling of a field to another grid (restriction or prolongation per axis).

    **Arguments:**

    - `u`: one sample of shape `(c, n_1, ..., n_d)`.
    - `shape`: the target grid `(m_1, ..., m_d)` (or `(c, m_1, ..., m_d)`).

    **Returns:**

    The field on the target grid, of shape `(c, m_1, ..., m_d)`.
    """
    target = _target_grid(u, shape, "shape")
    return _apply_axes(u, target)


def restrict(u: Field, shape: Sequence[int]) -> Float[Array, "c *out_grid"]:
    """Restriction to a coarser grid by truncating frequencies ($L^2$ projection).

    **Arguments:**

    - `u`: one sample of shape `(c, n_1, ..., n_d)`.
    - `shape`: the target grid `(m_1, ..., m_d)` with every $m_i \\le n_i$ (or `(c, m_1, ..., m_d)`).

    **Returns:**

    The field on the coarse grid. For a function band-limited to $|k_i| \\le m_i / 2$ this equals
    the function sampled on the coarse grid.
    """
    target = _target_grid(u, shape, "shape")
    if any(m > n for n, m in zip(field_grid(u), target)):
        raise ValueError(
            f"restrict needs a coarser or equal grid: `shape` {target} is finer than `u`'s grid "
            f"{field_grid(u)} on some axis; use `prolong` or `resample`."
        )
    return _apply_axes(u, target)


def prolong(u: Field, shape: Sequence[int]) -> Float[Array, "c *out_grid"]:
    """Prolongation to a finer grid by zero-padding frequencies (trigonometric interpolation).

    **Arguments:**

    - `u`: one sample of shape `(c, n_1, ..., n_d)`.
    - `shape`: the target grid `(m_1, ..., m_d)` with every $m_i \\ge n_i$ (or `(c, m_1, ..., m_d)`).

    **Returns:**

    The field on the fine grid; restricting it back gives `u` to round-off.
    """
    target = _target_grid(u, shape, "shape")
    if any(m < n for n, m in zip(field_grid(u), target)):
        raise ValueError(
            f"prolong needs a finer or equal grid: `shape` {target} is coarser than `u`'s grid "
            f"{field_grid(u)} on some axis; use `restrict` or `resample`."
        )
    return _apply_axes(u, target)
