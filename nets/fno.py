"""The Fourier neural operator as a score network: same weights on every grid."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

import sdeflow
from sdeflow.checks import check_positive_int
from sdeflow.custom_types import RealScalarLike

from .difference import DifferenceKernel
from .layers import (
    coordinate_channels,
    coordinate_features,
    make_norm,
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
from .spectral_conv import (
    check_modes_fit,
    Method,
    normalise_modes,
    SpectralConv,
)


class FourierBlock(eqx.Module):
    """$h \\mapsto \\sigma(\\mathrm{N}(K h + W h + A e(t)))$: spectral and pointwise paths, the time
    embedding added per channel, an optional GroupNorm and GELU.

    **Arguments:**

    - `in_channels`, `out_channels`: channel counts.
    - `modes`: modes per axis of the spectral convolution.
    - `time_dim`: the size of the time embedding $e(t)$.
    - `norm`: `"group"` or `None`; `groups`: GroupNorm groups.
    - `method`: the spectral convolution's implementation.
    - `local`: whether to add the local path $W_D D h$, a pointwise map of a depthwise
      finite-difference stencil (`nets.DifferenceKernel`), to $W h$: $K$ keeps few modes, and
      this path sees each point's neighbours on every grid.
    - `oversample`: the factor of the grid on which GroupNorm and GELU are evaluated before the
      result is band-limited back (`nets.band_limited`; 1: on the grid itself). There the
      normalisation's mean square is the exact one of the field the grid values interpolate
      (on the grid itself, a Nyquist mode counts twice its share), and GELU does not alias.
    - `clip_modes`: on grids too coarse for `modes`, use the modes they hold (`SpectralConv`).
    - `key`: a JAX random key.
    """

    spectral: SpectralConv
    pointwise: Pointwise
    time: eqx.nn.Linear
    norm: eqx.nn.GroupNorm | None
    difference: DifferenceKernel | None
    difference_mix: Pointwise | None
    oversample: float = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, modes: Sequence[int], time_dim: int,
                 *, norm: str | None, groups: int, method: Method, local: bool = False,
                 oversample: float = 1.0, clip_modes: bool = False, key: PRNGKeyArray):
        self.oversample = check_oversample(oversample)
        k1, k2, k3 = jr.split(key, 3)
        self.spectral = SpectralConv(in_channels, out_channels, modes, method=method,
                                     clip_modes=clip_modes, key=k1)
        self.pointwise = Pointwise(in_channels, out_channels, key=k2)
        self.time = eqx.nn.Linear(time_dim, out_channels, key=k3)
        self.norm = make_norm(norm, out_channels, groups)
        if local:  # keys of their own: the other weights are those of a block without this path
            k4, k5 = jr.split(jr.fold_in(key, 1))
            self.difference = DifferenceKernel(in_channels, dim=len(modes), key=k4)
            self.difference_mix = Pointwise(in_channels, out_channels, use_bias=False, key=k5)
        else:
            self.difference = self.difference_mix = None

    def __call__(self, h: Float[Array, "c *grid"], emb: Float[Array, " e"],
                 out_grid: Sequence[int] | None = None) -> Float[Array, "o *out"]:
        """Apply to one sample; `out_grid` changes the resolution (pointwise path resampled).

        **Arguments:**

        - `h`: one sample of shape `(in_channels, n_1, ..., n_d)`.
        - `emb`: its time embedding, of shape `(time_dim,)`.
        - `out_grid`: the output grid `(n'_1, ..., n'_d)`; defaults to the grid of `h`.

        **Returns:**

        An array of shape `(out_channels, *out_grid)`. A `ValueError` is raised when `out_grid`
        is not `d` positive sizes, `emb` has another shape, or (without `clip_modes`) the modes
        do not fit the input or output grid.
        """
        out = tuple(h.shape[1:]) if out_grid is None else tuple(int(n) for n in out_grid)
        if len(out) != h.ndim - 1 or min(out) < 1:
            raise ValueError(f"`out_grid` must be {h.ndim - 1} positive sizes (the grid of `h`), got {out_grid}.")
        if emb.shape != (self.time.in_features,):
            raise ValueError(f"`emb` must be a time embedding of shape ({self.time.in_features},), got {emb.shape}.")
        skip = self.pointwise(h)
        if self.difference is not None:
            skip = skip + self.difference_mix(self.difference(h))
        if out != tuple(h.shape[1:]):
            skip = sdeflow.resample(skip, out)
        y = self.spectral(h, out) + skip
        y = y + self.time(emb).reshape(-1, *([1] * len(out)))
        return band_limited(self._activation, y, self.oversample)

    def _activation(self, y: Array) -> Array:
        """GroupNorm (if any) and GELU of one sample, on whatever grid `y` is given."""
        return jax.nn.gelu(y if self.norm is None else self.norm(y))

    def spatial_major(self, h: Float[Array, "*grid_rev b c"], emb: Float[Array, "b e"],
                      out_grid: Sequence[int] | None = None) -> Float[Array, "*out_rev b o"]:
        """The same block on a batch stored as `(n_d, ..., n_1, B, c)` (see `FNO`); `out_grid`
        (natural order) changes the resolution as in `__call__`.

        **Arguments:**

        - `h`: a batch of shape `(n_d, ..., n_1, B, in_channels)` (grid axes reversed).
        - `emb`: the time embeddings, of shape `(B, time_dim)`.
        - `out_grid`: the output grid `(n'_1, ..., n'_d)` (natural order); defaults to the input
          grid.

        **Returns:**

        An array of shape `(n'_d, ..., n'_1, B, out_channels)`, equal to `__call__` on each
        sample up to the layout and float32 round-off.
        """
        d = len(self.spectral.modes)
        grid = tuple(h.shape[:d])[::-1]
        out = grid if out_grid is None else tuple(int(n) for n in out_grid)
        skip = pointwise_last(self.pointwise, h)
        if self.difference is not None:
            skip = skip + pointwise_last(self.difference_mix, self.difference.spatial_major(h))
        if out != grid:
            skip = resample_spatial_major(skip, out)
        y = self.spectral.spatial_major(h, out) + skip
        y = y + (emb @ self.time.weight.T + self.time.bias)
        return band_limited_spatial_major(self._activation_spatial_major, y, self.oversample)

    def _activation_spatial_major(self, y: Array) -> Array:
        """`_activation` on a spatial-major batch."""
        return jax.nn.gelu(y if self.norm is None else group_norm_last(self.norm, y))


def batch_times(t: Array | RealScalarLike, u: Array, in_channels: int, dim: int) -> Array:
    """Check that `u` is a batch `(B, in_channels, n_1, ..., n_dim)`; return `t` as `(B,)` times.

    **Arguments:**

    - `t`: one scalar time for the whole batch, or times of shape `(B,)`.
    - `u`: the batch.
    - `in_channels`: the channels `u` must have on axis 1.
    - `dim`: the number of grid axes `u` must have after the channels.

    **Returns:**

    `t` broadcast to shape `(B,)` in the dtype of `u`. A `ValueError` is raised when `u` has
    another number of axes or of channels.
    """
    if u.ndim != dim + 2 or u.shape[1] != in_channels:
        raise ValueError(
            f"`u` must have shape (batch, {in_channels}, n_1, ..., n_{dim}), got {tuple(u.shape)}."
        )
    return jnp.broadcast_to(jnp.asarray(t, u.dtype), u.shape[:1])


def spatial_major_input(u: Array, coordinates: str | None) -> Array:
    """A batch `(B, c, n_1, ..., n_d)` as `(n_d, ..., n_1, B, c + k)` with the `k` coordinate
    channels of `coordinate_features` appended (the input of the networks' batched paths).

    **Arguments:**

    - `u`: a batch of shape `(B, c, n_1, ..., n_d)`.
    - `coordinates`: `"periodic"`, `"linear"` or `None` (see `coordinate_features`; a
      `ValueError` for anything else).

    **Returns:**

    An array of shape `(n_d, ..., n_1, B, c + k)` in the dtype of `u`: the channels of `u`, then
    the same `k` coordinate channels for every sample.
    """
    b, _, *grid = u.shape
    d = len(grid)
    coords = coordinate_features(coordinates, grid).astype(u.dtype)
    coords = coords.transpose(*range(d, 0, -1), 0)
    coords = jnp.broadcast_to(coords[..., None, :], (*grid[::-1], b, coords.shape[-1]))
    return jnp.concatenate([u.transpose(*range(d + 1, 1, -1), 0, 1), coords], axis=-1)


def spatial_major_output(h: Array) -> Array:
    """`(n_d, ..., n_1, B, o)` back to `(B, o, n_1, ..., n_d)`.

    **Arguments:**

    - `h`: a spatial-major batch of shape `(n_d, ..., n_1, B, o)`, `d = h.ndim - 2`.

    **Returns:**

    The same values as a channels-first batch of shape `(B, o, n_1, ..., n_d)` (a transpose).
    """
    d = h.ndim - 2
    return h.transpose(d, d + 1, *range(d - 1, -1, -1))


def pointwise_last(layer: Pointwise, h: Array) -> Array:
    """A `Pointwise` layer on channels-last data `(..., c)`, as one 2-d matmul.

    **Arguments:**

    - `layer`: the `Pointwise` layer, whose weight and bias (if any) are used.
    - `h`: an array of shape `(..., layer.in_channels)`, such as a spatial-major batch.

    **Returns:**

    An array of shape `(..., layer.out_channels)`: $W h + b$ at every leading index.
    """
    v = h.reshape(-1, h.shape[-1]) @ layer.weight.T
    if layer.bias is not None:
        v = v + layer.bias
    return v.reshape(*h.shape[:-1], layer.out_channels)


def group_norm_last(norm: eqx.nn.GroupNorm, h: Array) -> Array:
    """`eqx.nn.GroupNorm` per sample on spatial-major data `(*grid_rev, B, c)`.

    The grid averages are matmuls with a row of $1/N$ (XLA's CPU backend runs these 2-3x faster
    than a reduction over the leading and trailing axes); the variance is two-pass.

    **Arguments:**

    - `norm`: the `eqx.nn.GroupNorm`, whose `groups`, `eps` and (with `channelwise_affine`)
      per-channel `weight` and `bias` are used; its groups must divide `c`.
    - `h`: a batch of shape `(n_d, ..., n_1, B, c)`.

    **Returns:**

    An array shaped like `h`: each sample's channels normalised by group, over the grid and the
    group's channels, as `norm` does to one sample `(c, n_1, ..., n_d)`.
    """
    *grid_rev, b, c = h.shape
    g = norm.groups
    flat = h.reshape(-1, b * c)
    average = jnp.full((1, flat.shape[0]), 1.0 / flat.shape[0], h.dtype)

    def group_mean(x: Array) -> Array:  # (1, B c) grid means -> (1, B c) group means
        x = (average @ x).reshape(b, g, c // g)
        return jnp.broadcast_to(x.mean(axis=-1, keepdims=True), x.shape).reshape(1, b * c)

    centred = flat - group_mean(flat)
    inv = jax.lax.rsqrt(group_mean(jnp.square(centred)) + norm.eps)
    y = (centred * inv).reshape(h.shape)
    if norm.channelwise_affine:
        y = norm.weight * y + norm.bias
    return y


class FNO(eqx.Module):
    """A Fourier neural operator $(t, u) \\mapsto v$ for score-based diffusion in function space.

    Coordinate channels (`nets.coordinate_features`, periodic by default) are appended to `u`; a
    pointwise lifting maps to `width` channels; `depth` Fourier blocks (spectral convolution +
    pointwise linear + time embedding, optional GroupNorm, GELU) follow; a pointwise two-layer
    projection (GELU) returns `out_channels`. Every block keeps the same physical frequencies
    $|k_i| \\le m_i$, so the same weights act on every grid on which the modes fit
    ($n_i \\ge 2 m_i + 1$).

    `model(t, u)` acts on one sample and composes with every JAX transformation. For training,
    `model.batched(t, u)` computes `jax.vmap(model)(t, u)` (equal to float32 round-off) 2-3x faster
    on CPU: it stores the batch spatial-major, `(n_d, ..., n_1, B, c)`, so that every transform is
    a matmul in XLA's canonical form (with `method="dft"`; `"fft"` runs `rfftn` over the grid
    axes), where `vmap` of the channels-first code makes XLA contract non-adjacent axes (see
    benchmarks/bench_train_step.py). Every network in `nets` has `batched`, so losses may call it
    instead of `vmap`.

    **Arguments:**

    - `in_channels`, `out_channels`: channels of $u$ and of the output.
    - `width`: hidden channels.
    - `modes`: modes kept per axis (an int for all axes, or one per axis).
    - `depth`: number of Fourier blocks.
    - `time_features`: number of sinusoidal time features (even).
    - `time_dim`: size of the time embedding MLP.
    - `time_scale`: factor applied to $t$ before the sinusoids.
    - `projection`: hidden channels of the projection.
    - `norm`: `"group"` or `None` (never BatchNorm); `groups`: GroupNorm groups.
    - `method`: spectral convolution implementation, `"auto"`, `"dft"` or `"fft"` (see
      `SpectralConv`), used by `__call__` and `batched` alike.
    - `local`: whether every block adds a local path, a finite-difference stencil on the grid
      (see `FourierBlock`; off by default).
    - `coordinates`: coordinate channels, `"periodic"` (default), `"linear"` or `None` (see
      `nets.coordinate_features`).
    - `fourier_features`: exponents $k$ of the Fourier features $\\sin, \\cos(2^k \\pi u)$ of the
      input's values appended as channels (`nets.value_fourier_features`; empty: none). They tie
      the network to one grid: `oversample` does not band-limit them.
    - `oversample`: the factor of the grid on which every GroupNorm and GELU is evaluated before
      its result is band-limited back to the grid (`nets.band_limited`; 1: on the grid itself). With 2, the
      aliasing of the nonlinearities' harmonics, which makes a field's output on a coarse grid
      differ from its output on a fine one, is removed.
    - `clip_modes`: on grids too coarse for `modes`, keep the modes they hold instead of refusing
      them (`SpectralConv`): a multilevel run can start on a coarse grid with the weights of a fine one.
    - `dim`: the dimension $d$ of the torus.
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
    modes: tuple[int, ...] = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    coordinates: str | None = eqx.field(static=True)
    fourier_features: tuple[int, ...] = eqx.field(static=True)
    oversample: float = eqx.field(static=True)
    clip_modes: bool = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        width: int = 32,
        modes: int | Sequence[int] = 12,
        depth: int = 4,
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
        clip_modes: bool = False,
        dim: int = 2,
        key: PRNGKeyArray,
    ):
        if dim not in (1, 2, 3):
            raise ValueError(f"`dim` must be 1, 2 or 3, got {dim}.")
        self.oversample = check_oversample(oversample)
        self.clip_modes = bool(clip_modes)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("width", width), ("depth", depth), ("projection", projection)):
            check_positive_int(value, name)
        self.modes = normalise_modes(modes, dim)
        make_norm(norm, int(width), groups)  # validate before drawing any weight
        coordinate_channels(coordinates, dim)
        if method not in ("auto", "dft", "fft"):
            raise ValueError(f"`method` must be 'auto', 'dft' or 'fft', got {method!r}.")
        self.in_channels, self.out_channels, self.dim = int(in_channels), int(out_channels), dim
        self.width, self.depth = int(width), int(depth)
        self.coordinates = None if coordinates in (None, "none") else coordinates
        n_coords = coordinate_channels(self.coordinates, dim)
        keys = jr.split(key, depth + 4)
        self.embedding = TimeEmbedding(time_features, time_dim, scale=time_scale, key=keys[0])
        self.fourier_features = tuple(int(k) for k in fourier_features)
        self.lift = Pointwise(value_fourier_channels(in_channels, self.fourier_features) + n_coords, width, key=keys[1])
        self.blocks = tuple(
            FourierBlock(width, width, self.modes, time_dim, norm=norm, groups=groups,
                         method=method, local=local, oversample=self.oversample,
                         clip_modes=self.clip_modes, key=k)
            for k in keys[2:depth + 2]
        )
        self.project1 = Pointwise(width, projection, key=keys[-2])
        self.project2 = Pointwise(projection, out_channels, key=keys[-1])

    def check_grid(self, grid: Sequence[int]) -> None:
        """Raise a `ValueError` unless the kept modes fit `grid` ($n_i \\ge 2 m_i + 1$); with
        `clip_modes`, every grid is accepted.

        **Arguments:**

        - `grid`: the spatial shape `(n_1, ..., n_d)`.

        **Returns:**

        None; without `clip_modes` it raises a `ValueError` when `grid` has another number of
        axes than `dim` or $2 m_i + 1 > n_i$ on some axis.
        """
        if not self.clip_modes:
            check_modes_fit(self.modes, tuple(grid), "input grid")

    def __call__(self, t: RealScalarLike, u: Float[Array, "c *grid"]) -> Float[Array, "o *grid"]:
        """Evaluate on one sample.

        **Arguments:**

        - `t`: a scalar time.
        - `u`: one sample of shape `(in_channels, n_1, ..., n_d)`.

        **Returns:**

        An array of shape `(out_channels, n_1, ..., n_d)`.
        """
        return self.intermediates(t, u)[-1]

    def intermediates(self, t: RealScalarLike, u: Float[Array, "c *grid"]) -> tuple[Array, ...]:
        """The fields the network computes on one sample, in order: the lifted input, each block's
        output and the network's output (the last), each of shape `(channels, n_1, ..., n_d)`
        (what `nets.discretisation_gaps` compares across grids).

        **Arguments:**

        - `t`: a scalar time.
        - `u`: one sample of shape `(in_channels, n_1, ..., n_d)`.

        **Returns:**

        A tuple of `depth + 2` arrays: the lifted input and the `depth` block outputs, each of
        shape `(width, n_1, ..., n_d)`, then the output of shape `(out_channels, n_1, ..., n_d)`.
        A `ValueError` is raised when `u` has another shape or (see `check_grid`) the modes do
        not fit its grid.
        """
        if u.ndim != self.dim + 1 or u.shape[0] != self.in_channels:
            raise ValueError(
                f"`u` must have shape ({self.in_channels}, n_1, ..., n_{self.dim}) (one sample; "
                f"vmap over batches), got {tuple(u.shape)}."
            )
        grid = tuple(u.shape[1:])
        self.check_grid(grid)
        emb = self.embedding(t)
        u = value_fourier_features(u, self.fourier_features)
        h = jnp.concatenate([u, coordinate_features(self.coordinates, grid).astype(u.dtype)])
        outs = [self.lift(h)]
        for block in self.blocks:
            outs.append(block(outs[-1], emb))
        outs.append(self.project2(band_limited(jax.nn.gelu, self.project1(outs[-1]), self.oversample)))
        return tuple(outs)

    def batched(
        self, t: Float[Array, " b"] | RealScalarLike, u: Float[Array, "b c *grid"]
    ) -> Float[Array, "b o *grid"]:
        """The same network on a batch, computed spatial-major: equals `jax.vmap(self)`.

        **Arguments:**

        - `t`: times of shape `(B,)` (or one scalar for all).
        - `u`: a batch of shape `(B, in_channels, n_1, ..., n_d)`.

        **Returns:**

        An array of shape `(B, out_channels, n_1, ..., n_d)`.
        """
        t = batch_times(t, u, self.in_channels, self.dim)
        self.check_grid(u.shape[2:])
        emb = jax.vmap(self.embedding)(t)
        h = spatial_major_input(value_fourier_features(u, self.fourier_features, axis=1), self.coordinates)
        h = pointwise_last(self.lift, h)
        for block in self.blocks:
            h = block.spatial_major(h, emb)
        h = band_limited_spatial_major(jax.nn.gelu, pointwise_last(self.project1, h), self.oversample)
        return spatial_major_output(pointwise_last(self.project2, h))
