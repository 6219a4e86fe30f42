"""Block-wise reductions over sets of samples, so that memory stays bounded for large sets."""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float


def check_block_size(block_size: int) -> int:
    block_size = int(block_size)
    if block_size < 1:
        raise ValueError(f"`block_size` must be a positive integer, got {block_size}.")
    return block_size


def as_vectors(x: ArrayLike, name: str) -> Float[Array, "n D"]:
    """Flatten a set of samples to vectors whose Euclidean norm is the norm the metrics use.

    - shape `(n, D)`: feature vectors, the Euclidean norm;
    - shape `(n, c, n_1, ..., n_d)` with $d \\in \\{1, 2, 3\\}$: fields on a grid, the norm of
      $L^2(\\mathbb{T}^d; \\mathbb{R}^c)$, $\\|u\\|^2 = \\frac1N \\sum_j \\sum_c u_c(x_j)^2$ with $N$ grid
      points (the mean over grid points), so that values do not depend on the resolution for
      band-limited fields. The flattened vector is scaled by $1/\\sqrt N$.
    """
    x = jnp.asarray(x)
    if x.ndim < 2 or x.ndim > 5:
        raise ValueError(
            f"`{name}` must have shape (n, features) or (n, channels, n_1, ..., n_d) with d in 1..3, "
            f"got shape {tuple(x.shape)}."
        )
    if x.shape[0] < 1:
        raise ValueError(f"`{name}` holds no samples (shape {tuple(x.shape)}).")
    x = x.astype(jnp.float32)
    if x.ndim == 2:
        return x
    n_points = math.prod(x.shape[2:])
    return x.reshape(x.shape[0], -1) / math.sqrt(n_points)


def split_blocks(x: Array, block_size: int) -> tuple[Array, Bool[Array, "b s"]]:
    """Pad the leading axis to a multiple of `block_size` and split it into blocks.

    **Returns:**

    `(blocks, mask)` with `blocks` of shape `(num_blocks, block_size, *x.shape[1:])` (padding
    repeats zeros) and `mask` of shape `(num_blocks, block_size)`, true on real rows.
    """
    n = x.shape[0]
    block_size = min(check_block_size(block_size), n)
    num_blocks = -(-n // block_size)
    pad = num_blocks * block_size - n
    padded = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    mask = jnp.arange(num_blocks * block_size) < n
    return (
        padded.reshape(num_blocks, block_size, *x.shape[1:]),
        mask.reshape(num_blocks, block_size),
    )


def pairwise_sum(
    fn: Callable[[Array, Array], Array],
    x: Float[Array, "n D"],
    y: Float[Array, "m D"],
    block_size: int,
    *,
    exclude_diagonal: bool = False,
) -> Float[Array, ""]:
    """$\\sum_{i, j} f(x_i, y_j)$ computed block by block (memory `block_size**2`).

    `fn` maps a block of rows `(s1, D)` and a block of columns `(s2, D)` to the `(s1, s2)` matrix of
    values (the blocks of `x` and `y` may differ in size). With `exclude_diagonal` (only for `x is y`), the terms `i == j` are left out.
    """
    xb, xm = split_blocks(x, block_size)
    yb, ym = split_blocks(y, block_size)
    s = xb.shape[1]  # with `exclude_diagonal`, x is y: equal blocks put the diagonal on block i == j

    def row(carry, row_in):
        i, xi, mi = row_in

        def col(acc, col_in):
            j, yj, mj = col_in
            values = fn(xi, yj)
            mask = mi[:, None] & mj[None, :]
            if exclude_diagonal:
                mask = mask & ~((i == j) & jnp.eye(s, dtype=bool))
            return acc + jnp.sum(jnp.where(mask, values, 0.0)), None

        total, _ = jax.lax.scan(col, jnp.zeros((), jnp.float32), (jnp.arange(yb.shape[0]), yb, ym))
        return carry + total, None

    total, _ = jax.lax.scan(row, jnp.zeros((), jnp.float32), (jnp.arange(xb.shape[0]), xb, xm))
    return total


def blockwise_sum(
    fn: Callable[[Array], Array], x: Array, block_size: int
) -> Array:
    """$\\sum_i f(x_i)$ for a per-sample function `fn` returning a PyTree-free array, block by block."""
    xb, xm = split_blocks(x, block_size)

    def step(carry, block):
        xi, mi = block
        values = jax.vmap(fn)(xi)
        mask = mi.reshape(mi.shape + (1,) * (values.ndim - 1))
        return carry + jnp.sum(jnp.where(mask, values, 0.0), axis=0), None

    init = jnp.zeros(jax.eval_shape(fn, x[0]).shape, jnp.float32)
    total, _ = jax.lax.scan(step, init, (xb, xm))
    return total


def blockwise_gram(x: Float[Array, "n D"], block_size: int) -> Float[Array, "D D"]:
    """$\\sum_i x_i x_i^T$ as one matmul per block (the padding rows are zeros), in memory
    $O(D^2 + \\text{block\\_size} \\cdot D)$, where `blockwise_sum` of `jnp.outer` would hold
    `block_size` outer products at once."""
    xb, _ = split_blocks(x, block_size)

    def step(carry, block):
        return carry + jnp.matmul(block.T, block, precision="highest"), None

    total, _ = jax.lax.scan(step, jnp.zeros((x.shape[1], x.shape[1]), jnp.float32), xb)
    return total
