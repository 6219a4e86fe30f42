"""The sliced Wasserstein-2 distance: optimal transport of one-dimensional random projections."""

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._blocks import as_vectors, check_block_size, split_blocks


def wasserstein_1d(a: Float[Array, " n"], b: Float[Array, " m"]) -> Float[Array, ""]:
    """$W_2^2$ between the empirical laws of two sets of reals, exactly.

    $W_2^2 = \\int_0^1 (F^{-1}(q) - G^{-1}(q))^2 dq$ with the step quantile functions of the two
    sets, integrated exactly over the merged breakpoints $\\{i/n\\} \\cup \\{j/m\\}$.

    **Arguments:**

    - `a`: $n$ reals.
    - `b`: $m$ reals.

    **Returns:**

    $W_2^2$, a scalar.
    """
    n, m = a.shape[0], b.shape[0]
    a, b = jnp.sort(a), jnp.sort(b)
    if n == m:
        return jnp.mean((a - b) ** 2)
    levels = jnp.sort(jnp.concatenate([jnp.arange(1, n + 1) / n, jnp.arange(1, m + 1) / m]))
    lower = jnp.concatenate([jnp.zeros(1), levels[:-1]])
    mid = (levels + lower) / 2
    ia = jnp.clip(jnp.floor(mid * n).astype(jnp.int32), 0, n - 1)
    ib = jnp.clip(jnp.floor(mid * m).astype(jnp.int32), 0, m - 1)
    return jnp.sum((levels - lower) * (a[ia] - b[ib]) ** 2)


def sliced_wasserstein(
    key: PRNGKeyArray,
    x: Float[ArrayLike, "n ..."],
    y: Float[ArrayLike, "m ..."],
    *,
    num_projections: int = 512,
    block_size: int = 64,
) -> Float[Array, ""]:
    """The sliced Wasserstein-2 distance $SW_2(P, Q) = (E_\\theta W_2^2(\\theta_\\# P, \\theta_\\# Q))^{1/2}$.

    $\\theta$ is uniform on the unit sphere of the flattened space (fields use the
    $L^2(\\mathbb{T}^d)$ norm, mean over grid points, as in `riesz_mmd`); each projection's $W_2^2$
    is exact for the empirical laws (sorting, with unequal sizes handled by merged quantile levels),
    and the expectation over $\\theta$ is a Monte Carlo mean over `num_projections` directions.
    For a translate $Q = P(\\cdot - v)$ in $D$ dimensions $SW_2^2 = |v|^2 / D$ (in one dimension,
    $SW_2 = |v|$). Projections are processed `block_size` at a time.

    **Arguments:**

    - `key`: the key of the random directions.
    - `x`: the first set, `(n, D)` features or `(n, c, *grid)` fields.
    - `y`: the second set, of the same trailing shape.
    - `num_projections`: the number of directions.
    - `block_size`: directions per block.

    **Returns:**

    $SW_2$, a scalar (the square root of the mean over directions).
    """
    check_block_size(block_size)
    if int(num_projections) < 1:
        raise ValueError(f"`num_projections` must be positive, got {num_projections}.")
    xv, yv = as_vectors(x, "x"), as_vectors(y, "y")
    if jnp.shape(x)[1:] != jnp.shape(y)[1:]:
        raise ValueError(
            f"`x` and `y` must have the same trailing shape, got {tuple(jnp.shape(x))} and "
            f"{tuple(jnp.shape(y))}."
        )
    return _sliced(key, xv, yv, int(num_projections), int(block_size))


@functools.partial(jax.jit, static_argnums=(3, 4))
def _sliced(key: PRNGKeyArray, xv: Array, yv: Array, num_projections: int, block_size: int) -> Array:
    theta = jr.normal(key, (num_projections, xv.shape[1]))
    theta = theta / jnp.linalg.norm(theta, axis=1, keepdims=True)
    blocks, mask = split_blocks(theta, block_size)

    def step(total, block):
        directions, valid = block
        px = jnp.matmul(xv, directions.T, precision="highest")
        py = jnp.matmul(yv, directions.T, precision="highest")
        values = jax.vmap(wasserstein_1d, in_axes=(1, 1))(px, py)
        return total + jnp.sum(jnp.where(valid, values, 0.0)), None

    total, _ = jax.lax.scan(step, jnp.zeros((), jnp.float32), (blocks, mask))
    return jnp.sqrt(total / num_projections)
