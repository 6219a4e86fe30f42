"""The U-shaped neural operator (U-NO): spectral down- and up-sampling between grid levels."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

import sdeflow
from sdeflow.checks import check_positive_int
from sdeflow.custom_types import RealScalarLike

from .fno import batch_times, FourierBlock, pointwise_last, spatial_major_input, spatial_major_output
from .layers import (
    coordinate_channels,
    coordinate_features,
    Pointwise,
    TimeEmbedding,
    value_fourier_channels,
    value_fourier_features,
)
from .resampling import (
    band_limited,
    band_limited_spatial_major,
    check_oversample,
    resample_spatial_major,
)
from .spectral_conv import check_modes_fit, Method


def level_grid(grid: Sequence[int], fraction: float | int,
               reference: int | None = None) -> tuple[int, ...]:
    """The grid of a level: `max(1, round(fraction * n_i))` on every axis, with `n_i` the input
    grid's, or, for an inner level (`fraction < 1`) with a `reference` grid size, `reference`.

    **Arguments:**

    - `grid`: the input grid `(n_1, ..., n_d)`.
    - `fraction`: the level's size as a fraction of the input grid (1 for the outer levels).
    - `reference`: `None`, or one grid size used on every axis in place of `n_i` for inner levels
      (`fraction < 1`); ignored for `fraction >= 1`.

    **Returns:**

    The level's grid, a tuple of `d` positive ints.
    """
    if not fraction > 0:
        raise ValueError(f"a level's `fraction` of the input grid must be positive, got {fraction}.")
    if reference is not None and fraction < 1:
        grid = (int(reference),) * len(grid)
    return tuple(max(1, int(round(fraction * n))) for n in grid)


class UNO(eqx.Module):
    """A U-shaped neural operator $(t, u) \\mapsto v$, levels given as fractions of the input grid.

    With levels $f_0 = 1, f_1, \\ldots, f_{L-1} = 1$ (for example `(1, 1/2, 1/4, 1/2, 1)`) and
    channel multipliers $c_i$: the input with coordinate channels is lifted pointwise to
    `width * c_0` channels; block $i \\ge 1$ maps level $i-1$ to level $i$ (grid
    $\\mathrm{round}(f_i n)$) through a spectral convolution whose output grid is the next level's
    (spectral down/up-sampling), plus a pointwise linear map resampled spectrally
    (`sdeflow.resample`), plus the time embedding, GroupNorm (optional) and GELU. Blocks of the
    second half also receive the mirrored first-half output (skip connection, resampled spectrally
    to the current grid); the projection receives the last output and the lifted input.

    Block $i$ keeps the modes $|k| \\le \\lfloor m \\min(f_{i-1}, f_i) \\rfloor$ for `modes` $= m$
    (or the given list), the same physical frequencies on every input grid: the weights apply at any
    resolution where they fit.

    **Arguments:**

    - `in_channels`, `out_channels`: channels of $u$ and of the output.
    - `width`: base channel count.
    - `levels`: grid fractions per level, first and last equal to 1.
    - `multipliers`: channel multipliers per level (same length as `levels`).
    - `modes`: modes at fraction 1 (scaled per block), or one int per block (`len(levels) - 1`).
    - `time_features`, `time_dim`, `time_scale`: the time embedding (see `FNO`).
    - `projection`: hidden channels of the projection.
    - `norm`, `groups`: `"group"` or `None`, and the GroupNorm groups.
    - `method`: the spectral convolution's implementation, `"auto"`, `"dft"` or `"fft"` (see
      `SpectralConv`), used by `__call__` and `batched` alike.
    - `local`: whether every block adds a local path, a finite-difference stencil on the grid
      (see `FourierBlock`; off by default).
    - `coordinates`: coordinate channels, `"periodic"` (default), `"linear"` or `None`.
    - `fourier_features`: exponents $k$ of the Fourier features $\\sin, \\cos(2^k \\pi u)$ of the
      input's values appended as channels (`nets.value_fourier_features`; empty: none). They tie
      the network to one grid: `oversample` does not band-limit them.
    - `oversample`: the factor of the grid on which every GroupNorm and GELU is evaluated before
      its result is band-limited back (`nets.band_limited`; 1: on the grid itself; see `FNO`).
    - `reference_grid`: if given, the inner levels (fraction < 1) have the grid
      `round(fraction * reference_grid)` on every input grid, so that they hold the same band of
      frequencies at every resolution; `None`: fractions of the input grid, whose inner levels hold
      more frequencies on finer inputs (and feed them to the nonlinearities), so that outputs on
      coarse and fine grids differ.
    - `clip_modes`: on grids too coarse for a block's modes, keep the modes they hold instead of
      refusing them (`SpectralConv`): a multilevel run can train first on a coarser grid (say 16
      for modes 12) with the weights it goes on with at 32.
    - `dim`: the dimension of the torus.
    - `key`: a JAX random key.
    """

    embedding: TimeEmbedding
    lift: Pointwise
    blocks: tuple[FourierBlock, ...]
    project1: Pointwise
    project2: Pointwise
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    levels: tuple[float, ...] = eqx.field(static=True)
    block_modes: tuple[int, ...] = eqx.field(static=True)
    coordinates: str | None = eqx.field(static=True)
    fourier_features: tuple[int, ...] = eqx.field(static=True)
    oversample: float = eqx.field(static=True)
    reference_grid: int | None = eqx.field(static=True)
    clip_modes: bool = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        width: int = 32,
        levels: Sequence[float | int] = (1.0, 0.5, 0.25, 0.5, 1.0),
        multipliers: Sequence[int] = (1, 2, 4, 2, 1),
        modes: int | Sequence[int] = 12,
        time_features: int = 32,
        time_dim: int = 64,
        time_scale: float = 1000.0,
        projection: int = 128,
        norm: str | None = "group",
        groups: int = 8,
        method: Method = "auto",
        local: bool = False,
        coordinates: str | None = "periodic",
        fourier_features: Sequence[int] = (),
        oversample: float = 1.0,
        reference_grid: int | None = None,
        clip_modes: bool = False,
        dim: int = 2,
        key: PRNGKeyArray,
    ):
        if dim not in (1, 2, 3):
            raise ValueError(f"`dim` must be 1, 2 or 3, got {dim}.")
        self.oversample = check_oversample(oversample)
        self.clip_modes = bool(clip_modes)
        if reference_grid is not None and int(reference_grid) < 1:
            raise ValueError(f"`reference_grid` must be a positive grid size or None, got {reference_grid}.")
        self.reference_grid = None if reference_grid is None else int(reference_grid)
        levels = tuple(float(f) for f in levels)
        multipliers = tuple(int(c) for c in multipliers)
        if len(levels) < 2 or levels[0] != 1.0 or levels[-1] != 1.0 or min(levels) <= 0:
            raise ValueError(
                f"`levels` must hold at least two positive grid fractions starting and ending "
                f"at 1, got {levels}."
            )
        if len(multipliers) != len(levels) or min(multipliers) < 1:
            raise ValueError(
                f"`multipliers` must hold one positive int per level ({len(levels)}), got "
                f"{multipliers}."
            )
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("width", width)):
            check_positive_int(value, name)
        n_blocks = len(levels) - 1
        if isinstance(modes, int):
            block_modes = tuple(int(modes * min(levels[i], levels[i + 1])) for i in range(n_blocks))
        else:
            block_modes = tuple(int(m) for m in modes)
            if len(block_modes) != n_blocks:
                raise ValueError(
                    f"`modes` must be an int or one int per block ({n_blocks}), got {modes}."
                )
        if min(block_modes) < 0:
            raise ValueError(f"`modes` must be non-negative, got {block_modes}.")
        self.in_channels, self.out_channels, self.dim = int(in_channels), int(out_channels), dim
        self.width, self.levels, self.block_modes = int(width), levels, block_modes
        self.coordinates = None if coordinates in (None, "none") else coordinates
        n_coords = coordinate_channels(self.coordinates, dim)
        channels = [self.width * c for c in multipliers]
        keys = jr.split(key, n_blocks + 4)
        self.embedding = TimeEmbedding(time_features, time_dim, scale=time_scale, key=keys[0])
        self.fourier_features = tuple(int(k) for k in fourier_features)
        self.lift = Pointwise(value_fourier_channels(in_channels, self.fourier_features) + n_coords, channels[0],
                              key=keys[1])
        blocks = []
        for i in range(1, len(levels)):
            skip = self._skip(i)
            c_in = channels[i - 1] + (channels[skip] if skip is not None else 0)
            blocks.append(
                FourierBlock(c_in, channels[i], (block_modes[i - 1],) * dim, time_dim, norm=norm,
                             groups=groups, method=method, local=local, oversample=self.oversample,
                             clip_modes=self.clip_modes, key=keys[i + 1])
            )
        self.blocks = tuple(blocks)
        self.project1 = Pointwise(channels[-1] + channels[0], projection, key=keys[-2])
        self.project2 = Pointwise(projection, out_channels, key=keys[-1])

    def _skip(self, i: int) -> int | None:
        """The level whose output joins the input of block `i` (None in the first half)."""
        mid = (len(self.levels) - 1) // 2
        return len(self.levels) - i if i - 1 > mid else None

    def level_grid(self, grid: Sequence[int], level: int) -> tuple[int, ...]:
        """The grid of `level` for the input grid `grid` (`nets.level_grid`).

        **Arguments:**

        - `grid`: the input grid `(n_1, ..., n_d)`.
        - `level`: a level index, `0` to `len(levels) - 1`.

        **Returns:**

        The level's grid, a tuple of `d` positive ints: `max(1, round(levels[level] * n_i))` per
        axis, with `reference_grid` in place of `n_i` for an inner level where it is set.
        """
        return level_grid(grid, self.levels[level], self.reference_grid)

    def check_grid(self, grid: Sequence[int]) -> None:
        """Raise a `ValueError` unless every block's modes fit its input and output grids (with
        `clip_modes`, every grid is accepted).

        **Arguments:**

        - `grid`: the input grid `(n_1, ..., n_d)`.

        **Returns:**

        None; without `clip_modes` it raises a `ValueError` when `grid` has another number of
        axes than `dim`, or block $i$'s modes $m_i$ break $2 m_i + 1 \\le n$ on the grid of level
        $i - 1$ or of level $i$ (`level_grid`).
        """
        if self.clip_modes:
            return
        for i, m in enumerate(self.block_modes, start=1):
            modes = (m,) * self.dim
            check_modes_fit(modes, self.level_grid(grid, i - 1), f"level-{i - 1} grid")
            check_modes_fit(modes, self.level_grid(grid, i), f"level-{i} grid")

    def __call__(self, t: RealScalarLike, u: Float[Array, "c *grid"]) -> Float[Array, "o *grid"]:
        """Evaluate on one sample `u` of shape `(in_channels, n_1, ..., n_d)` at time `t`.

        **Arguments:**

        - `t`: a scalar time.
        - `u`: one sample of shape `(in_channels, n_1, ..., n_d)`.

        **Returns:**

        An array of shape `(out_channels, n_1, ..., n_d)`. A `ValueError` is raised when `u` has
        another shape or the modes do not fit its grid (see `check_grid`).
        """
        return self.intermediates(t, u)[-1]

    def intermediates(self, t: RealScalarLike, u: Float[Array, "c *grid"]) -> tuple[Array, ...]:
        """The fields the network computes on one sample, in order: the lifted input, each block's
        output (on its level's grid) and the network's output (the last), each of shape
        `(channels, *grid)` (what `nets.discretisation_gaps` compares across grids).

        **Arguments:**

        - `t`: a scalar time.
        - `u`: one sample of shape `(in_channels, n_1, ..., n_d)`.

        **Returns:**

        A tuple of `len(levels) + 1` arrays: the lifted input, of shape
        `(width * multipliers[0], n_1, ..., n_d)`; the output of block $i$, of shape
        `(width * multipliers[i], *level_grid(grid, i))`, for $i$ = 1 to `len(levels) - 1`; and the
        output, of shape `(out_channels, n_1, ..., n_d)`. A `ValueError` is raised when `u` has
        another shape or the modes do not fit its grid (see `check_grid`).
        """
        if u.ndim != self.dim + 1 or u.shape[0] != self.in_channels:
            raise ValueError(
                f"`u` must have shape ({self.in_channels}, n_1, ..., n_{self.dim}) (one sample; "
                f"vmap over batches), got {tuple(u.shape)}."
            )
        grid = tuple(u.shape[1:])
        self.check_grid(grid)
        emb = self.embedding(t)
        coords = coordinate_features(self.coordinates, grid).astype(u.dtype)
        h = self.lift(jnp.concatenate([value_fourier_features(u, self.fourier_features), coords]))
        outs = [h]
        for i, block in enumerate(self.blocks, start=1):
            x = outs[-1]
            skip = self._skip(i)
            if skip is not None:
                x = jnp.concatenate([x, sdeflow.resample(outs[skip], x.shape[1:])])
            outs.append(block(x, emb, self.level_grid(grid, i)))
        h = jnp.concatenate([outs[-1], outs[0]])
        outs.append(self.project2(band_limited(jax.nn.gelu, self.project1(h), self.oversample)))
        return tuple(outs)

    def batched(self, t: Float[Array, " b"] | RealScalarLike,
                u: Float[Array, "b c *grid"]) -> Float[Array, "b o *grid"]:
        """`jax.vmap(self)(t, u)` (the common batched interface of `nets`; arguments and result as
        in `FNO.batched`), computed spatial-major like it: the batch is stored `(n_d, ..., n_1, B, c)`
        throughout, so that every transform, resampling included, is a matmul in XLA's canonical form.

        **Arguments:**

        - `t`: times of shape `(B,)` (or one scalar for all).
        - `u`: a batch of shape `(B, in_channels, n_1, ..., n_d)`.

        **Returns:**

        An array of shape `(B, out_channels, n_1, ..., n_d)`. A `ValueError` is raised when `u`
        has another number of axes or channels, or the modes do not fit its grid.
        """
        t = batch_times(t, u, self.in_channels, self.dim)
        grid = tuple(u.shape[2:])
        self.check_grid(grid)
        emb = jax.vmap(self.embedding)(t)
        outs = [pointwise_last(self.lift, spatial_major_input(value_fourier_features(u, self.fourier_features, axis=1), self.coordinates))]
        for i, block in enumerate(self.blocks, start=1):
            x = outs[-1]
            skip = self._skip(i)
            if skip is not None:
                here = tuple(x.shape[: self.dim])[::-1]
                x = jnp.concatenate([x, resample_spatial_major(outs[skip], here)], axis=-1)
            outs.append(block.spatial_major(x, emb, self.level_grid(grid, i)))
        h = jnp.concatenate([outs[-1], outs[0]], axis=-1)
        h = band_limited_spatial_major(jax.nn.gelu, pointwise_last(self.project1, h), self.oversample)
        return spatial_major_output(pointwise_last(self.project2, h))
