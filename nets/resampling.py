"""Spectral resampling of spatial-major batches, and pointwise nonlinearities evaluated on an
oversampled grid (the dealiasing rule of pseudo-spectral solvers)."""

import math
from collections.abc import Callable, Sequence

from jaxtyping import Array, Float

import sdeflow

from .spectral_conv import batched_matmul


def resample_spatial_major(h: Array, out_grid: Sequence[int]) -> Array:
    """`sdeflow.resample` of every sample of a spatial-major batch `(n_d, ..., n_1, B, c)` to
    `out_grid` (natural order), one axis at a time as a canonical (batched) matmul.

    **Arguments:**

    - `h`: a batch of shape `(n_d, ..., n_1, B, c)`, `d = len(out_grid)`.
    - `out_grid`: the output grid `(n'_1, ..., n'_d)` (natural order).

    **Returns:**

    An array of shape `(n'_d, ..., n'_1, B, c)`; axes whose size does not change are left as
    they are.
    """
    d = len(out_grid)
    grid = tuple(h.shape[:d])[::-1]
    for i, (n, m) in enumerate(zip(grid, out_grid)):
        if n == m:
            continue
        axis = d - 1 - i  # the array axis of n_i
        shape = h.shape
        lead = math.prod(shape[:axis])
        h = batched_matmul(sdeflow.resample_matrix(n, m), h.reshape(lead, n, -1), lead)
        h = h.reshape(*shape[:axis], m, *shape[axis + 1:])
    return h


def oversampled_grid(grid: Sequence[int], factor: float) -> tuple[int, ...]:
    """The grid `ceil(factor * n_i)` on which `band_limited` evaluates a nonlinearity."""
    return tuple(int(math.ceil(float(factor) * int(n) - 1e-9)) for n in grid)


def check_oversample(factor: float) -> float:
    """`factor` as a float, or a `ValueError` unless it is at least 1."""
    factor = float(factor)
    if not factor >= 1.0:
        raise ValueError(f"`oversample` must be a factor >= 1 (1: off), got {factor}.")
    return factor


def band_limited(f: Callable[[Array], Array], h: Float[Array, "c *grid"],
                 factor: float) -> Float[Array, "c *grid"]:
    """A pointwise nonlinearity `f` applied to the trigonometric interpolant of one sample `h` and
    band-limited back to its grid: `resample(f(resample(h, m)), n)` with `m = ceil(factor n)`.

    On the grid itself, `f(h)` has harmonics beyond the grid's Nyquist frequency that alias onto
    its low modes, so the same function sampled on a coarse and on a fine grid gives different low
    modes. Evaluated on the `factor`-times finer grid, the products of two modes of `h` land where
    they are represented exactly for `factor >= 3/2` (Orszag's rule, for `h` without a Nyquist
    mode; `2` also with one, and leaves room for cubic terms), and the result is the grid's band
    of the function `f(h)`.

    **Arguments:**

    - `f`: an elementwise function.
    - `h`: one sample `(c, n_1, ..., n_d)`.
    - `factor`: the oversampling factor, >= 1 (1: `f(h)` on the grid).

    **Returns:**

    An array shaped like `h`.
    """
    factor = check_oversample(factor)
    if factor == 1.0:
        return f(h)
    grid = tuple(h.shape[1:])
    return sdeflow.resample(f(sdeflow.resample(h, oversampled_grid(grid, factor))), grid)


def band_limited_spatial_major(f: Callable[[Array], Array], h: Float[Array, "*grid_rev b c"],
                               factor: float) -> Float[Array, "*grid_rev b c"]:
    """`band_limited` on a spatial-major batch `(n_d, ..., n_1, B, c)` of `d = h.ndim - 2` axes.

    **Arguments:**

    - `f`: an elementwise function.
    - `h`: a batch of shape `(n_d, ..., n_1, B, c)`.
    - `factor`: the oversampling factor, >= 1 (1: `f(h)` on the grid; a `ValueError` below 1).

    **Returns:**

    An array shaped like `h`: `f` evaluated on the grid `ceil(factor n_i)` and resampled back.
    """
    factor = check_oversample(factor)
    if factor == 1.0:
        return f(h)
    grid = tuple(h.shape[: h.ndim - 2])[::-1]
    fine = resample_spatial_major(h, oversampled_grid(grid, factor))
    return resample_spatial_major(f(fine), grid)

