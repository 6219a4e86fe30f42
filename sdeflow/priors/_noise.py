"""Standard complex normal noise indexed by physical frequency, the same at every resolution."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Complex, PRNGKeyArray

from ..grid import integer_frequencies, rfft_shape


def _zigzag(k: np.ndarray) -> np.ndarray:
    """Integers to distinct non-negative integers: 0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4, ..."""
    return np.where(k >= 0, 2 * k, -2 * k - 1).astype(np.uint32)


def frequency_noise(key: PRNGKeyArray, channels: int, grid: tuple[int, ...]) -> Complex[Array, "c *rfft"]:
    """Hermitian standard normal Fourier coefficients $\\xi_k$ on the `rfftn` layout of `grid`.

    Each physical frequency $k$ draws from its own key (`fold_in` of the channel and of $k$), so the
    coefficients of a frequency do not depend on the grid: a sample drawn on a $2n$-grid restricts
    exactly to the sample drawn with the same key on the $n$-grid. $E|\\xi_k|^2 = 1$,
    $\\xi_{-k} = \\overline{\\xi_k}$ and $\\xi_0$ is real.

    **Arguments:**

    - `key`: a JAX random key.
    - `channels`: the number of channels $c$.
    - `grid`: the spatial shape `(n_1, ..., n_d)`.

    **Returns:**

    A complex array of shape `(c, *rfft_shape(grid))`.
    """
    d = len(grid)
    shape = rfft_shape(grid)
    ks = []
    for i, n in enumerate(grid):
        k = integer_frequencies(n) if i < d - 1 else np.arange(n // 2 + 1)
        ks.append(np.broadcast_to(k.reshape([-1 if j == i else 1 for j in range(d)]), shape))
    # On the k_d = 0 hyperplane, k and -k share one draw: draw for the representative whose first
    # nonzero component is positive, and conjugate on the other half.
    flip = np.zeros(shape, dtype=bool)
    decided = np.zeros(shape, dtype=bool)
    for k in ks[:-1]:
        flip |= (~decided) & (k < 0) & (ks[-1] == 0)
        decided |= k != 0
    codes = np.stack([_zigzag(np.where(flip, -k, k)).ravel() for k in ks], axis=-1)
    is_zero = np.all(np.stack(ks) == 0, axis=0)

    def draw(channel_key, code):
        for c in code:  # d <= 3 static folds, one per axis
            channel_key = jr.fold_in(channel_key, c)
        return jr.normal(channel_key, (2,))

    def per_channel(c):
        channel_key = jr.fold_in(key, c)
        return jax.vmap(draw, in_axes=(None, 0))(channel_key, jnp.asarray(codes))

    normals = jax.vmap(per_channel)(jnp.arange(channels)).reshape((channels, *shape, 2))
    re, im = normals[..., 0], normals[..., 1]
    xi = jnp.where(jnp.asarray(is_zero), re + 0j, (re + 1j * im) / jnp.sqrt(2.0))
    return jnp.where(jnp.asarray(flip), jnp.conj(xi), xi)
