"""A local path for the Fourier blocks: a learned finite-difference stencil, depthwise."""

import itertools
import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


def stencil_offsets(dim: int) -> tuple[tuple[int, ...], ...]:
    """The $3^d - 1$ non-zero offsets $s \\in \\{-1, 0, 1\\}^d$ of the stencil."""
    return tuple(s for s in itertools.product((-1, 0, 1), repeat=dim) if any(s))


def grid_spacing_inverse(grid: Sequence[int]) -> float:
    """$1/\\Delta$ with $\\Delta = (\\prod_i 1/n_i)^{1/d}$, the spacing of the grid on $[0, 1)^d$."""
    return math.prod(grid) ** (1.0 / len(grid))


class DifferenceKernel(eqx.Module):
    """A depthwise finite-difference kernel on the torus, the local path of a neural operator.

    $(D h)_c(x) = \\Delta^{-1} \\sum_{s \\ne 0} w_{c,s} \\bigl(h_c(x + s \\Delta) - h_c(x)\\bigr)$
    over the $3^d - 1$ neighbours $s \\in \\{-1, 0, 1\\}^d$ of each grid point (periodic), with
    $\\Delta$ the grid spacing (`grid_spacing_inverse`). Its stencil sums to zero and is divided
    by the spacing, so on any smooth $h$ it converges, as the grid is refined, to the first-order
    differential operator $\\sum_s w_{c,s}\\, s \\cdot \\nabla h_c$ (on a grid of spacings
    $\\Delta_i$, to $\\sum_s w_{c,s} \\sum_i s_i (\\Delta_i/\\Delta) \\partial_i h_c$: the same operator
    for every refinement that keeps the grid's aspect ratio): the same weights act on every
    grid and mean the same operator (the differential kernels of Liu-Schneider et al., 2024,
    "Neural operators with localized integral and differential kernels"). A spectral convolution
    keeping few modes mixes space only through those modes; this path sees every grid point's
    neighbours at every resolution. Channels are not mixed (a pointwise map does that after it).

    **Arguments:**

    - `channels`: the number of channels.
    - `dim`: the dimension of the torus.
    - `key`: a JAX random key (weights uniform in $\\pm 1/(8 \\cdot 3^d)$: coefficients of order
      one at a grid of 32 points per axis).
    """

    weight: Float[Array, "c s"]
    channels: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)

    def __init__(self, channels: int, *, dim: int, key: PRNGKeyArray):
        if channels < 1 or dim < 1:
            raise ValueError(f"`channels` and `dim` must be positive, got {channels}, {dim}.")
        self.channels, self.dim = int(channels), int(dim)
        lim = 1.0 / (8 * 3**dim)
        self.weight = jr.uniform(key, (channels, 3**dim - 1), minval=-lim, maxval=lim)

    def __call__(self, h: Float[Array, "c *grid"]) -> Float[Array, "c *grid"]:
        """Apply to one sample of shape `(channels, n_1, ..., n_d)`.

        **Arguments:**

        - `h`: one sample of shape `(channels, n_1, ..., n_d)`.

        **Returns:**

        $D h$, an array shaped like `h`. A `ValueError` is raised when `h` has another number of
        axes or of channels.
        """
        if h.ndim != self.dim + 1 or h.shape[0] != self.channels:
            raise ValueError(
                f"`h` must have shape ({self.channels}, n_1, ..., n_{self.dim}), got "
                f"{tuple(h.shape)}."
            )
        axes = tuple(range(1, self.dim + 1))
        shape = (self.channels, *([1] * self.dim))
        return self._apply(h, axes, lambda w: w.reshape(shape), h.shape[1:])

    def spatial_major(self, h: Float[Array, "*grid_rev b c"]) -> Float[Array, "*grid_rev b c"]:
        """The same kernel on a batch stored as `(n_d, ..., n_1, B, c)` (see `nets.FNO`).

        **Arguments:**

        - `h`: a batch of shape `(n_d, ..., n_1, B, channels)` (grid axes reversed).

        **Returns:**

        $D h$ of every sample, an array shaped like `h`. A `ValueError` is raised when `h` has
        another number of axes or of channels.
        """
        if h.ndim != self.dim + 2 or h.shape[-1] != self.channels:
            raise ValueError(
                f"`h` must have shape (n_{self.dim}, ..., n_1, batch, {self.channels}), got "
                f"{tuple(h.shape)}."
            )
        axes = tuple(range(self.dim - 1, -1, -1))  # the array axis of n_1, ..., n_d
        return self._apply(h, axes, lambda w: w, h.shape[: self.dim][::-1])

    def _apply(self, h: Array, axes: tuple[int, ...], per_channel: Callable[[Array], Array],
               grid: Sequence[int]) -> Array:
        """$\\Delta^{-1} (\\sum_s w_s h(x + s\\Delta) - (\\sum_s w_s) h(x))$, grid axis i at array
        axis `axes[i]`, `per_channel` broadcasting a `(c,)` vector against `h`. The stencil is a
        fixed set of $3^d - 1$ shifts (a convolution's taps), not a loop over data."""
        total = per_channel(-self.weight.sum(axis=1)) * h
        for j, offset in enumerate(stencil_offsets(self.dim)):
            shifted = jnp.roll(h, tuple(-s for s in offset), axes)  # h(x + s Delta)
            total = total + per_channel(self.weight[:, j]) * shifted
        return total * jnp.asarray(grid_spacing_inverse(grid), h.dtype)
