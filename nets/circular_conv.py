"""A convolution on the torus (circular padding), computed channels-last."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from sdeflow.checks import check_positive_int


_SPATIAL = {1: "W", 2: "HW", 3: "DHW"}


class CircularConv(eqx.Module):
    """A `kernel`-wide convolution of one sample `(c_in, *grid)` on the torus: the field is padded
    periodically by `kernel // 2` on each side, so the output keeps the grid (divided by `stride`).

    The same map as `eqx.nn.Conv(..., padding=kernel // 2, padding_mode="CIRCULAR")`, with the same
    initialisation, but evaluated in the channels-last layout (`NHWC`). On CPU, XLA runs a
    channels-first convolution inside a loop (a sampler's `while_loop`, a `scan`) some 15-25x
    slower than outside one; the channels-last convolution runs at the same speed in both.

    **Arguments:**

    - `dim`: the number of spatial axes, 1, 2 or 3.
    - `c_in`, `c_out`: input and output channels.
    - `kernel`: the odd kernel width along every axis.
    - `stride`: the output keeps every `stride`-th point (1 or 2 in the networks here).
    - `key`: a JAX random key.
    """

    weight: Float[Array, "o i *k"]
    bias: Float[Array, " o"]
    stride: int = eqx.field(static=True)

    def __init__(self, dim: int, c_in: int, c_out: int, kernel: int, *, stride: int = 1,
                 key: PRNGKeyArray):
        if dim not in _SPATIAL:
            raise ValueError(f"`dim` must be 1, 2 or 3, got {dim}.")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"`kernel` must be a positive odd int, got {kernel}.")
        if stride < 1:
            raise ValueError(f"`stride` must be a positive int, got {stride}.")
        check_positive_int(c_in, "c_in")
        check_positive_int(c_out, "c_out")
        wkey, bkey = jr.split(key)
        limit = 1.0 / math.sqrt(c_in * kernel**dim)  # eqx.nn.Conv's (and torch's) initialisation
        self.weight = jr.uniform(wkey, (c_out, c_in) + (kernel,) * dim, minval=-limit, maxval=limit)
        self.bias = jr.uniform(bkey, (c_out,), minval=-limit, maxval=limit)
        self.stride = int(stride)

    def __call__(self, x: Float[Array, "c *grid"]) -> Float[Array, "o *grid2"]:
        """The convolution of one sample `(c_in, n_1, ..., n_d)`.

        **Arguments:**

        - `x`: one sample of shape `(c_in, n_1, ..., n_d)`.

        **Returns:**

        An array of shape `(c_out, ceil(n_1 / stride), ..., ceil(n_d / stride))` (the grid of `x`
        for `stride=1`). A `ValueError` is raised when `x` has another number of axes or of
        channels.
        """
        dim = self.weight.ndim - 2
        if x.ndim != dim + 1 or x.shape[0] != self.weight.shape[1]:
            raise ValueError(f"`x` must have shape ({self.weight.shape[1]}, n_1, ..., n_{dim}), "
                             f"got {tuple(x.shape)}.")
        pad = self.weight.shape[-1] // 2
        x = jnp.pad(x, [(0, 0)] + [(pad, pad)] * dim, mode="wrap")
        spatial = _SPATIAL[dim]
        y = jax.lax.conv_general_dilated(
            jnp.moveaxis(x, 0, -1)[None],
            jnp.moveaxis(self.weight, (0, 1), (-1, -2)),
            (self.stride,) * dim,
            "VALID",
            dimension_numbers=(f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"),
        )
        return jnp.moveaxis(y[0], -1, 0) + self.bias.reshape((-1,) + (1,) * dim)
