"""A self-conditioned network that sees its estimate of $x_0$ clipped to the data's range."""

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from sdeflow.custom_types import RealScalarLike


class ClippedEstimate(eqx.Module):
    """Wraps a self-conditioned network `network(t, [x, x0_hat])` (`2 c` input channels: the state,
    then an estimate of $x_0$) so that the estimate's channels are clipped to `[low, high]`
    pointwise before the network sees them; the state's channels pass unchanged.

    Early in training, and at high noise, Tweedie's estimate $(x - b - s\\hat\\epsilon)/m$ of an
    epsilon-predicting network magnifies its error by $1/m$ (about 150 at the end of DDPM's linear
    schedule); fed back as input channels, those values swamp the state. Clipping them to the range
    the data lives in (the `clip_denoised` of the common denoising-diffusion codes, applied here to
    the self-conditioning input) bounds them. Because the clip is part of the network, the training
    loss and every sampler see the same input.

    **Arguments:**

    - `network`: the self-conditioned network, acting on one sample `(2 c, *grid)`.
    - `channels`: `c`, the number of the state's channels (the first `c` input channels).
    - `low`, `high`: the range, `low < high`.
    """

    network: Any
    channels: int = eqx.field(static=True)
    low: float = eqx.field(static=True)
    high: float = eqx.field(static=True)

    def __check_init__(self):
        if self.channels < 1:
            raise ValueError(f"`channels` must be positive, got {self.channels}.")
        if not float(self.low) < float(self.high):
            raise ValueError(f"the clip range needs low < high, got [{self.low}, {self.high}].")

    def _clip(self, u: Array, axis: int) -> Array:
        if u.shape[axis] != 2 * self.channels:
            raise ValueError(f"a self-conditioned input has 2 x {self.channels} channels (the state, then "
                             f"the estimate of x0) on axis {axis}, got shape {tuple(u.shape)}.")
        state, estimate = jnp.split(u, 2, axis=axis)
        return jnp.concatenate([state, jnp.clip(estimate, self.low, self.high)], axis=axis)

    def __call__(self, t: RealScalarLike, u: Float[Array, "c2 *grid"]) -> Float[Array, "o *grid"]:
        """The network on one sample, its estimate channels clipped.

        **Arguments:**

        - `t`: a scalar time.
        - `u`: one sample of shape `(2 c, *grid)`: the state, then the estimate of $x_0$.

        **Returns:**

        `network(t, u')`, with `u'` the input whose last `c` channels are clipped to
        `[low, high]`. A `ValueError` is raised when `u` has not `2 c` channels on axis 0.
        """
        return self.network(t, self._clip(u, 0))

    def batched(self, t: Float[Array, " b"] | RealScalarLike,
                u: Float[Array, "b c2 *grid"]) -> Float[Array, "b o *grid"]:
        """`jax.vmap(self)(t, u)`, through the network's own `batched` where it has one.

        **Arguments:**

        - `t`: times of shape `(B,)` (or one scalar for all).
        - `u`: a batch of shape `(B, 2 c, *grid)`.

        **Returns:**

        The network's output on the batch with its estimate channels clipped, e.g. of shape
        `(B, o, *grid)`. A `ValueError` is raised when `u` has not `2 c` channels on axis 1.
        """
        u = self._clip(u, 1)
        batched = getattr(self.network, "batched", None)
        if callable(batched):
            return batched(t, u)
        t = jnp.broadcast_to(jnp.asarray(t, u.dtype), u.shape[:1])
        return jax.vmap(self.network)(t, u)

    def check_grid(self, grid: Sequence[int]) -> None:
        """The wrapped network's grid check, where it has one.

        **Arguments:**

        - `grid`: the spatial shape `(n_1, ..., n_d)`.

        **Returns:**

        None; it raises what `network.check_grid(grid)` raises, and accepts every grid when the
        network has no `check_grid`.
        """
        check = getattr(self.network, "check_grid", None)
        if callable(check):
            check(grid)
