"""Radially averaged power spectra of sets of fields, in physical frequencies."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..grid import fourier, rfft_frequencies
from ._blocks import blockwise_sum, check_block_size


def _check_fields(x: ArrayLike, name: str) -> tuple[int, ...]:
    if jnp.ndim(x) < 3 or jnp.ndim(x) > 5:
        raise ValueError(
            f"`{name}` must be a set of fields of shape (n, channels, n_1, ..., n_d) with d in 1..3, "
            f"got shape {tuple(jnp.shape(x))}."
        )
    return tuple(int(n) for n in jnp.shape(x)[2:])


def num_shells(grid: tuple[int, ...]) -> int:
    """The number of integer shells $|k| \\in \\{0, 1, \\ldots\\}$ that the `rfftn` layout of `grid` reaches."""
    return int(math.floor(math.sqrt(sum((n // 2) ** 2 for n in grid)) + 0.5)) + 1


def resolved_shells(grid: tuple[int, ...]) -> int:
    """The largest shell $K$ such that every frequency with $|k| \\le K$ is kept by the grid
    ($|k_i| < n_i / 2$ on every axis): $K = \\min_i \\lfloor (n_i - 1) / 2 \\rfloor$.

    **Arguments:**

    - `grid`: the spatial shape `(n_1, ..., n_d)`.

    **Returns:**

    $K$, a Python `int` (0 when some axis has fewer than 3 points).
    """
    return min((n - 1) // 2 for n in grid)


def radial_power_spectrum(
    x: Float[ArrayLike, "n c *grid"], *, block_size: int = 256
) -> tuple[Float[Array, " K"], Float[Array, " K"]]:
    """The mean radially summed power spectrum $E(\\kappa)$ of a set of fields.

    $E(\\kappa) = \\frac1n \\sum_{\\text{samples}} \\sum_c \\sum_{k:\\ \\mathrm{round}(|k|) = \\kappa}
    |\\hat u_{c,k}|^2$ over the physical integer frequencies $k$ of the grid (all of them, each of
    $\\pm k$ counted once), with the coefficients of `sdeflow.fourier` (`norm="forward"`). Hence
    $\\sum_\\kappa E(\\kappa)$ is the mean of $\\frac1N \\sum_j |u(x_j)|^2$ (Parseval), and for
    band-limited fields $E$ does not depend on the resolution. Shells beyond `resolved_shells(grid)`
    are only partly represented on the grid.

    **Arguments:**

    - `x`: fields of shape `(n, c, n_1, ..., n_d)`.
    - `block_size`: samples transformed at a time.

    **Returns:**

    `(wavenumbers, spectrum)`: the shells $\\kappa = 0, 1, \\ldots$ (float) and $E(\\kappa)$.
    """
    grid = _check_fields(x, "x")
    check_block_size(block_size)
    total = _spectrum_sum(jnp.asarray(x, jnp.float32), int(block_size))
    return jnp.arange(num_shells(grid), dtype=jnp.float32), total / jnp.shape(x)[0]


@functools.partial(jax.jit, static_argnums=1)
def _spectrum_sum(x: Array, block_size: int) -> Array:
    grid = tuple(x.shape[2:])
    ks = rfft_frequencies(grid)
    k_abs = jnp.sqrt(sum(k.astype(jnp.float32) ** 2 for k in ks))
    shells = num_shells(grid)
    shell = jnp.broadcast_to(jnp.rint(k_abs).astype(jnp.int32), k_abs.shape)
    k_last = np.arange(grid[-1] // 2 + 1)
    weight = np.where((k_last == 0) | (2 * k_last == grid[-1]), 1.0, 2.0)
    weight = jnp.broadcast_to(jnp.asarray(weight, jnp.float32), k_abs.shape)
    onehot = (shell[..., None] == jnp.arange(shells)) * weight[..., None]
    axes = tuple(range(len(grid)))

    def per_sample(u):
        power = jnp.sum(jnp.abs(fourier(u)) ** 2, axis=0)
        return jnp.tensordot(power, onehot, axes=(axes, axes))

    return blockwise_sum(per_sample, x, block_size)


def power_spectrum_error(
    x: Float[ArrayLike, "n c *grid"], reference: Float[ArrayLike, "m c *grid2"], *, block_size: int = 256
) -> Float[Array, ""]:
    """Mean absolute log ratio of the power spectra of two sets of fields over the resolved shells.

    $\\frac{1}{K} \\sum_{\\kappa=1}^{K} |\\log E_x(\\kappa) - \\log E_{\\mathrm{ref}}(\\kappa)|$ with
    $K$ the largest shell resolved on both grids (`resolved_shells`): the two sets may live on
    different grids, since frequencies are physical. 0 for equal spectra; 0.1 is about a 10%
    typical relative error per shell.

    **Arguments:**

    - `x`: fields of shape `(n, c, *grid)`.
    - `reference`: fields of shape `(m, c, *grid2)` with the same channels and dimension.
    - `block_size`: samples transformed at a time.

    **Returns:**

    The mean absolute log error, a scalar.
    """
    grid_x, grid_r = _check_fields(x, "x"), _check_fields(reference, "reference")
    if len(grid_x) != len(grid_r) or jnp.shape(x)[1] != jnp.shape(reference)[1]:
        raise ValueError(
            f"`x` {tuple(jnp.shape(x))} and `reference` {tuple(jnp.shape(reference))} must have the "
            "same number of channels and spatial dimensions."
        )
    top = min(resolved_shells(grid_x), resolved_shells(grid_r))
    if top < 1:
        raise ValueError(f"the grids {grid_x} and {grid_r} resolve no non-zero shell.")
    _, ex = radial_power_spectrum(x, block_size=block_size)
    _, er = radial_power_spectrum(reference, block_size=block_size)
    tiny = jnp.finfo(jnp.float32).tiny
    ratio = jnp.log(jnp.maximum(ex[1 : top + 1], tiny)) - jnp.log(jnp.maximum(er[1 : top + 1], tiny))
    return jnp.mean(jnp.abs(ratio))
