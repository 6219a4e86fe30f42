"""A DDPM-style UNet: the strong fixed-resolution baseline (GroupNorm, never BatchNorm)."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from sdeflow.checks import check_positive_int
from sdeflow.custom_types import RealScalarLike

from .circular_conv import CircularConv
from .layers import coordinate_channels, coordinate_features, make_norm, TimeEmbedding


def _conv(dim: int, c_in: int, c_out: int, kernel: int, key: PRNGKeyArray, stride: int = 1):
    # Circular padding: the fields live on the torus.
    return CircularConv(dim, c_in, c_out, kernel, stride=stride, key=key)


class ResBlock(eqx.Module):
    """GroupNorm, SiLU, 3-conv, + time embedding, GroupNorm, SiLU, 3-conv, plus a (1-conv) skip."""

    norm1: eqx.nn.GroupNorm
    conv1: CircularConv
    time: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: CircularConv
    skip: CircularConv | None

    def __init__(self, dim: int, c_in: int, c_out: int, time_dim: int, groups: int,
                 *, key: PRNGKeyArray):
        k1, k2, k3, k4 = jr.split(key, 4)
        self.norm1 = make_norm("group", c_in, groups)
        self.conv1 = _conv(dim, c_in, c_out, 3, k1)
        self.time = eqx.nn.Linear(time_dim, c_out, key=k2)
        self.norm2 = make_norm("group", c_out, groups)
        self.conv2 = _conv(dim, c_out, c_out, 3, k3)
        self.skip = _conv(dim, c_in, c_out, 1, k4) if c_in != c_out else None

    def __call__(
        self, h: Float[Array, "c *grid"], emb: Float[Array, " e"]
    ) -> Float[Array, "o *grid"]:
        """Apply the residual block to one sample.

        **Arguments:**

        - `h`: one sample of shape `(c_in, n_1, ..., n_d)`.
        - `emb`: its time embedding, of shape `(time_dim,)`, added per channel after the first
          convolution.

        **Returns:**

        An array of shape `(c_out, n_1, ..., n_d)`: the two convolutions' output plus `h`
        (through the 1-convolution when `c_in != c_out`).
        """
        y = self.conv1(jax.nn.silu(self.norm1(h)))
        y = y + self.time(emb).reshape(-1, *([1] * (h.ndim - 1)))
        y = self.conv2(jax.nn.silu(self.norm2(y)))
        return y + (h if self.skip is None else self.skip(h))


class Attention(eqx.Module):
    """Residual multi-head self-attention over the grid points, after a GroupNorm."""

    norm: eqx.nn.GroupNorm
    attention: eqx.nn.MultiheadAttention

    def __init__(self, channels: int, heads: int, groups: int, *, key: PRNGKeyArray):
        if channels % heads:
            raise ValueError(f"`heads` ({heads}) must divide the channel count {channels}.")
        self.norm = make_norm("group", channels, groups)
        self.attention = eqx.nn.MultiheadAttention(heads, channels, use_query_bias=True,
                                                   use_key_bias=True, use_value_bias=True,
                                                   use_output_bias=True, key=key)

    def __call__(self, h: Float[Array, "c *grid"]) -> Float[Array, "c *grid"]:
        """Apply the attention to one sample, each grid point a token.

        **Arguments:**

        - `h`: one sample of shape `(channels, n_1, ..., n_d)`.

        **Returns:**

        An array shaped like `h`: `h` plus the self-attention of its GroupNorm over all
        $n_1 \\cdots n_d$ grid points (the channels as features).
        """
        x = self.norm(h).reshape(h.shape[0], -1).T
        return h + self.attention(x, x, x).T.reshape(h.shape)


class UNet(eqx.Module):
    """The DDPM UNet (Ho et al. 2020) for one sample `(t, u)`, on a fixed grid family.

    Levels $l = 0..L-1$ with `channels * multipliers[l]` channels; each holds `blocks` residual
    blocks (GroupNorm, SiLU, 3-convolutions with circular padding, time embedding added per
    channel), self-attention after each block at the levels in `attention_levels`, and a strided
    3-convolution down to the next level (nearest upsampling + 3-convolution on the way back, with
    skip connections by concatenation). The middle holds res-attention-res. A convolutional network
    has a fixed receptive field in grid points, so it is a fixed-resolution baseline: it runs on
    any grid divisible by $2^{L-1}$ but is trained for one.

    **Arguments:**

    - `in_channels`, `out_channels`: channels of $u$ and of the output.
    - `channels`: base channel count.
    - `multipliers`: channel multiplier per level.
    - `blocks`: residual blocks per level.
    - `attention_levels`: the levels with self-attention (low resolution, e.g. the last).
    - `heads`: attention heads.
    - `groups`: GroupNorm groups.
    - `time_features`, `time_dim`, `time_scale`: the time embedding.
    - `coordinates`: coordinate channels, `None` (default: a convolution is shift-equivariant),
      `"periodic"` or `"linear"` (see `nets.coordinate_features`).
    - `dim`: the dimension of the torus.
    - `key`: a JAX random key.
    """

    embedding: TimeEmbedding
    conv_in: CircularConv
    down: tuple[tuple[eqx.Module, ...], ...]
    middle: tuple[eqx.Module, ...]
    up: tuple[tuple[eqx.Module, ...], ...]
    norm_out: eqx.nn.GroupNorm
    conv_out: CircularConv
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    multipliers: tuple[int, ...] = eqx.field(static=True)
    blocks: int = eqx.field(static=True)
    attention_levels: tuple[int, ...] = eqx.field(static=True)
    coordinates: str | None = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        channels: int = 32,
        multipliers: Sequence[int] = (1, 2, 2),
        blocks: int = 1,
        attention_levels: Sequence[int] = (2,),
        heads: int = 1,
        groups: int = 8,
        time_features: int = 32,
        time_dim: int = 128,
        time_scale: float = 1000.0,
        coordinates: str | None = None,
        dim: int = 2,
        key: PRNGKeyArray,
    ):
        if dim not in (1, 2, 3):
            raise ValueError(f"`dim` must be 1, 2 or 3, got {dim}.")
        multipliers = tuple(int(m) for m in multipliers)
        if not multipliers or min(multipliers) < 1:
            raise ValueError(
                f"`multipliers` must be a non-empty list of positive ints, got {multipliers}."
            )
        if int(blocks) < 1 or int(channels) < 1:
            raise ValueError(f"`blocks` and `channels` must be positive, got {blocks}, {channels}.")
        check_positive_int(in_channels, "in_channels")
        check_positive_int(out_channels, "out_channels")
        attention_levels = tuple(sorted(int(a) for a in attention_levels))
        if any(not 0 <= a < len(multipliers) for a in attention_levels):
            raise ValueError(
                f"`attention_levels` must be level indices in 0..{len(multipliers) - 1}, got "
                f"{attention_levels}."
            )
        self.in_channels, self.out_channels, self.dim = int(in_channels), int(out_channels), dim
        self.channels, self.multipliers, self.blocks = int(channels), multipliers, int(blocks)
        self.attention_levels = attention_levels
        self.coordinates = None if coordinates in (None, "none") else coordinates
        n_coords = coordinate_channels(self.coordinates, dim)
        keys = iter(jr.split(key, 8 + 4 * len(multipliers) * (blocks + 2)))
        self.embedding = TimeEmbedding(time_features, time_dim, scale=time_scale, key=next(keys))
        c0 = self.channels * multipliers[0]
        self.conv_in = _conv(dim, in_channels + n_coords, c0, 3, next(keys))
        skips = [c0]
        c = c0
        down = []
        for level, mult in enumerate(multipliers):
            layers = []
            for _ in range(self.blocks):
                c_out = self.channels * mult
                layers.append(ResBlock(dim, c, c_out, time_dim, groups, key=next(keys)))
                c = self.channels * mult
                if level in attention_levels:
                    layers.append(Attention(c, heads, groups, key=next(keys)))
                skips.append(c)
            if level < len(multipliers) - 1:
                layers.append(_conv(dim, c, c, 3, next(keys), stride=2))
                skips.append(c)
            down.append(tuple(layers))
        self.down = tuple(down)
        self.middle = (
            ResBlock(dim, c, c, time_dim, groups, key=next(keys)),
            Attention(c, heads, groups, key=next(keys)),
            ResBlock(dim, c, c, time_dim, groups, key=next(keys)),
        )
        up = []
        for level in reversed(range(len(multipliers))):
            layers = []
            for _ in range(self.blocks + 1):
                c_out = self.channels * multipliers[level]
                c_in = c + skips.pop()
                layers.append(ResBlock(dim, c_in, c_out, time_dim, groups, key=next(keys)))
                c = c_out
                if level in attention_levels:
                    layers.append(Attention(c, heads, groups, key=next(keys)))
            if level > 0:
                layers.append(_conv(dim, c, c, 3, next(keys)))
            up.append(tuple(layers))
        self.up = tuple(up)
        self.norm_out = make_norm("group", c, groups)
        self.conv_out = _conv(dim, c, out_channels, 3, next(keys))

    def check_grid(self, grid: Sequence[int]) -> None:
        """Raise a `ValueError` unless every level can halve `grid` (sizes divisible by
        `2^(levels - 1)`).

        **Arguments:**

        - `grid`: the spatial shape `(n_1, ..., n_d)`.

        **Returns:**

        None; it raises a `ValueError` when some $n_i$ is not a multiple of $2^{L-1}$, with $L$
        the number of levels (`len(multipliers)`).
        """
        factor = 2 ** (len(self.multipliers) - 1)
        if any(n % factor for n in grid):
            raise ValueError(
                f"the UNet with {len(self.multipliers)} levels needs grid sizes divisible by "
                f"{factor}, got grid {tuple(grid)}."
            )

    def __call__(self, t: RealScalarLike, u: Float[Array, "c *grid"]) -> Float[Array, "o *grid"]:
        """Evaluate on one sample `u` of shape `(in_channels, n_1, ..., n_d)` at time `t`.

        **Arguments:**

        - `t`: a scalar time.
        - `u`: one sample of shape `(in_channels, n_1, ..., n_d)`.

        **Returns:**

        An array of shape `(out_channels, n_1, ..., n_d)`. A `ValueError` is raised when `u` has
        another shape or a grid size is not divisible by $2^{L-1}$ (see `check_grid`).
        """
        if u.ndim != self.dim + 1 or u.shape[0] != self.in_channels:
            raise ValueError(
                f"`u` must have shape ({self.in_channels}, n_1, ..., n_{self.dim}) (one sample; "
                f"vmap over batches), got {tuple(u.shape)}."
            )
        self.check_grid(u.shape[1:])
        emb = self.embedding(t)
        if self.coordinates is not None:
            coords = coordinate_features(self.coordinates, tuple(u.shape[1:])).astype(u.dtype)
            u = jnp.concatenate([u, coords])
        h = self.conv_in(u)
        hs = [h]
        for level, layers in enumerate(self.down):
            for layer in layers:
                if isinstance(layer, ResBlock):
                    h = layer(h, emb)
                    hs.append(h)
                elif isinstance(layer, Attention):
                    h = layer(h)
                    hs[-1] = h
                else:  # the strided downsampling convolution
                    h = layer(h)
                    hs.append(h)
        h = self.middle[2](self.middle[1](self.middle[0](h, emb)), emb)
        for layers in self.up:
            for layer in layers:
                if isinstance(layer, ResBlock):
                    h = layer(jnp.concatenate([h, hs.pop()]), emb)
                elif isinstance(layer, Attention):
                    h = layer(h)
                else:  # nearest upsampling, then a 3-convolution
                    for axis in range(1, h.ndim):
                        h = jnp.repeat(h, 2, axis=axis)
                    h = layer(h)
        return self.conv_out(jax.nn.silu(self.norm_out(h)))

    def batched(self, t: Float[Array, " b"] | RealScalarLike,
                u: Float[Array, "b c *grid"]) -> Float[Array, "b o *grid"]:
        """`jax.vmap(self)(t, u)` (the common batched interface of `nets`).

        **Arguments:**

        - `t`: times of shape `(B,)` (or one scalar for all).
        - `u`: a batch of shape `(B, in_channels, n_1, ..., n_d)`.

        **Returns:**

        An array of shape `(B, out_channels, n_1, ..., n_d)`, with the errors of `__call__`.
        """
        t = jnp.broadcast_to(jnp.asarray(t, u.dtype), u.shape[:1])
        return jax.vmap(self)(t, u)


