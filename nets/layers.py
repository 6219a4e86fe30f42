"""Small building blocks shared by the networks: pointwise linear maps and time embeddings."""

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

import sdeflow
from sdeflow.custom_types import RealScalarLike


class Pointwise(eqx.Module):
    """A pointwise (1x1) linear map of the channels, $v(x) = W u(x) + b$, on any grid.

    **Arguments:**

    - `in_channels`, `out_channels`: channel counts.
    - `use_bias`: whether to add a bias.
    - `key`: a JAX random key (weights uniform in $\\pm 1/\\sqrt{c_{in}}$ as in `eqx.nn.Linear`).
    """

    weight: Float[Array, "o c"]
    bias: Float[Array, " o"] | None
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)

    def __init__(self, in_channels: int, out_channels: int, *, use_bias: bool = True,
                 key: PRNGKeyArray):
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"`in_channels` and `out_channels` must be positive, got {in_channels}, "
                f"{out_channels}."
            )
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        lim = 1.0 / math.sqrt(in_channels)
        kw, kb = jr.split(key)
        self.weight = jr.uniform(kw, (out_channels, in_channels), minval=-lim, maxval=lim)
        self.bias = jr.uniform(kb, (out_channels,), minval=-lim, maxval=lim) if use_bias else None

    def __call__(self, u: Float[Array, "c *grid"]) -> Float[Array, "o *grid"]:
        """Apply to one sample of shape `(in_channels, *grid)`.

        **Arguments:**

        - `u`: one sample of shape `(in_channels, n_1, ..., n_d)`, at least one grid axis.

        **Returns:**

        An array of shape `(out_channels, n_1, ..., n_d)`: $W u(x) + b$ at every point. A
        `ValueError` is raised when `u` has no grid axis or another number of channels.
        """
        if u.ndim < 2 or u.shape[0] != self.in_channels:
            raise ValueError(
                f"`u` must have shape ({self.in_channels}, *grid), got {tuple(u.shape)}."
            )
        grid = u.shape[1:]
        # Contract the channel axis as the last axis of a matmul: under vmap the batch folds into
        # the rows, which XLA's CPU backend runs much faster than a contraction of a middle axis.
        v = (u.reshape(self.in_channels, -1).T @ self.weight.T).T.reshape(self.out_channels, *grid)
        if self.bias is not None:
            v = v + self.bias.reshape(-1, *([1] * len(grid)))
        return v


def sinusoidal_embedding(
    t: RealScalarLike, dim: int, scale: float = 1000.0
) -> Float[Array, " d"]:
    """Sinusoidal features of a scalar time, as in DDPM/transformers.

    $[\\sin(s t \\omega_j), \\cos(s t \\omega_j)]_{j < \\mathrm{dim}/2}$ with
    $\\omega_j = 10000^{-j / (\\mathrm{dim}/2 - 1)}$ and $s$ = `scale`.

    **Arguments:**

    - `t`: a scalar time.
    - `dim`: the (even) number of features.
    - `scale`: the factor applied to `t` (times in $[0, 1]$ need about 1000 to resolve small steps).

    **Returns:**

    An array of shape `(dim,)`.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"`dim` of the time embedding must be an even integer >= 2, got {dim}.")
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half) / max(half - 1, 1))
    angle = scale * jnp.asarray(t, jnp.float32) * freqs
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)])


class TimeEmbedding(eqx.Module):
    """Sinusoidal features of $t$, then a two-layer MLP (SiLU): $t \\mapsto e(t) \\in \\mathbb{R}^h$
    (injected in every block of the networks).

    **Arguments:**

    - `features`: the number of sinusoidal features (even).
    - `hidden`: the output (and hidden) size $h$.
    - `scale`: the factor applied to `t` before the sinusoids.
    - `key`: a JAX random key.
    """

    linear1: eqx.nn.Linear
    linear2: eqx.nn.Linear
    features: int = eqx.field(static=True)
    scale: float = eqx.field(static=True)

    def __init__(self, features: int, hidden: int, *, scale: float = 1000.0, key: PRNGKeyArray):
        if features < 2 or features % 2:
            raise ValueError(f"`time_features` must be an even integer >= 2, got {features}.")
        if hidden < 1:
            raise ValueError(f"`time_dim` must be positive, got {hidden}.")
        k1, k2 = jr.split(key)
        self.features, self.scale = int(features), float(scale)
        self.linear1 = eqx.nn.Linear(features, hidden, key=k1)
        self.linear2 = eqx.nn.Linear(hidden, hidden, key=k2)

    def __call__(self, t: RealScalarLike) -> Float[Array, " h"]:
        """The embedding of one scalar time.

        **Arguments:**

        - `t`: a scalar time (a 0-d array or a Python number).

        **Returns:**

        An array of shape `(hidden,)`: the MLP of `sinusoidal_embedding(t, features, scale)`.
        A `ValueError` is raised when `t` is not a scalar.
        """
        t = jnp.asarray(t)
        if t.ndim != 0:
            raise ValueError(
                f"`t` must be a scalar (one sample; vmap over batches), got shape {t.shape}."
            )
        e = sinusoidal_embedding(t, self.features, self.scale)
        return self.linear2(jax.nn.silu(self.linear1(e)))


def make_norm(norm: str | None, channels: int, groups: int) -> eqx.nn.GroupNorm | None:
    """A GroupNorm over (channels, *grid) or None. BatchNorm is deliberately not offered."""
    if norm is None or norm == "none":
        return None
    if norm != "group":
        raise ValueError(f"`norm` must be 'group' or None, got {norm!r} (no batch statistics).")
    g = min(int(groups), channels)
    if g < 1 or channels % g:
        raise ValueError(f"`groups` ({groups}) must divide the channel count {channels}.")
    return eqx.nn.GroupNorm(g, channels)


COORDINATES = ("periodic", "linear")


def coordinate_channels(kind: str | None, dim: int) -> int:
    """The number of coordinate channels of `coordinate_features` (0 for `None`)."""
    if kind is None or kind == "none":
        return 0
    if kind not in COORDINATES:
        raise ValueError(f"`coordinates` must be 'periodic', 'linear' or None, got {kind!r}.")
    return 2 * dim if kind == "periodic" else dim


def coordinate_features(kind: str | None, grid: Sequence[int]) -> Float[Array, "k *grid"]:
    """Channels encoding the physical position $x_j = j / n$ on the torus.

    - `"periodic"`: $\\cos(2\\pi x_i), \\sin(2\\pi x_i)$ per axis ($2d$ channels). Smooth, periodic
      and band-limited ($|k| = 1$), so they are the same function at every resolution; this is what
      keeps `FNO`/`UNO` discretisation-consistent.
    - `"linear"`: $x_i$ itself (`sdeflow.coordinates`, $d$ channels). A sawtooth on the torus: its
      jump at $x = 0$ is not band-limited, so outputs at $n$ and $2n$ then differ by $O(1/n)$.
    - `None`: no channels.

    **Arguments:**

    - `kind`: `"periodic"`, `"linear"` or `None`.
    - `grid`: the spatial shape.

    **Returns:**

    An array of shape `(k, *grid)`, float32.
    """
    grid = tuple(int(n) for n in grid)
    x = sdeflow.coordinates(grid)
    n = coordinate_channels(kind, len(grid))
    if n == 0:
        return jnp.zeros((0, *grid), jnp.float32)
    if kind == "linear":
        return x
    return jnp.concatenate([jnp.cos(2 * jnp.pi * x), jnp.sin(2 * jnp.pi * x)])


def value_fourier_channels(in_channels: int, exponents: Sequence[int]) -> int:
    """The channels of `value_fourier_features`: the input's and two per channel and exponent."""
    return int(in_channels) * (1 + 2 * len(tuple(exponents)))


def value_fourier_features(u: Array, exponents: Sequence[int], axis: int = 0) -> Array:
    """The input with the Fourier features of its values appended along the channel `axis`:
    $\\sin(2^k \\pi u)$ and $\\cos(2^k \\pi u)$ for each exponent $k$ (variational diffusion models'
    features, which make the fine bits of 8-bit values visible to the network).

    They are functions of the value at each point, not of position, so they are defined on every
    grid: the features of a field on one grid are those on another at the common points. Their
    harmonics, though, lie far above any grid's band, so the spectral layers after them see them
    aliased differently on each grid: a network with them is not discretisation-consistent,
    whatever its `oversample` (they serve the exact values of one grid, such as 8-bit pixels).

    **Arguments:**

    - `u`: fields with channels on `axis`.
    - `exponents`: the integers $k$ (empty: `u` unchanged).
    - `axis`: the channel axis.

    **Returns:**

    `u` with `2 * len(exponents)` channels per input channel appended.
    """
    exponents = tuple(int(k) for k in exponents)
    if not exponents:
        return u
    if not jnp.issubdtype(u.dtype, jnp.floating):  # integer values: the angles in float32, not rounded
        u = u.astype(jnp.float32)
    scales = jnp.asarray([2.0**k * math.pi for k in exponents], u.dtype)
    shape = [1] * (u.ndim + 1)
    shape[axis + 1 if axis >= 0 else axis] = len(exponents)
    angles = jnp.expand_dims(u, axis + 1 if axis >= 0 else axis) * scales.reshape(shape)
    merged = list(u.shape)
    merged[axis] = u.shape[axis] * len(exponents)
    angles = angles.reshape(merged)
    return jnp.concatenate([u, jnp.sin(angles), jnp.cos(angles)], axis=axis)
