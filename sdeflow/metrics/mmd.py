"""The maximum mean discrepancy with the Riesz kernel $k(x, y) = -\\|x - y\\|$ (energy distance)."""

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._blocks import as_vectors, check_block_size, pairwise_sum


def _distances(xi: Float[Array, "s1 D"], yj: Float[Array, "s2 D"]) -> Float[Array, "s1 s2"]:
    sq = (
        jnp.sum(xi**2, axis=1)[:, None]
        + jnp.sum(yj**2, axis=1)[None, :]
        - 2.0 * jnp.matmul(xi, yj.T, precision="highest")
    )
    return jnp.sqrt(jnp.maximum(sq, 0.0))


def mean_distance(
    x: Float[Array, "n D"], y: Float[Array, "m D"], block_size: int, *, same: bool = False
) -> Float[Array, ""]:
    """$\\frac{1}{nm} \\sum_{i,j} \\|x_i - y_j\\|$, or with `same` the U-statistic mean over
    $i \\ne j$ of one set."""
    n, m = x.shape[0], y.shape[0]
    total = pairwise_sum(_distances, x, y, block_size, exclude_diagonal=same)
    return total / (n * (n - 1) if same else n * m)


def riesz_mmd(
    x: Float[ArrayLike, "n ..."], y: Float[ArrayLike, "m ..."], *, block_size: int = 1024
) -> Float[Array, ""]:
    """The squared MMD with the Riesz kernel $k(x, y) = -\\|x - y\\|$, i.e. the energy distance

    $$D^2(P, Q) = 2 E\\|X - Y\\| - E\\|X - X'\\| - E\\|Y - Y'\\|,\\quad X, X' \\sim P,\\ Y, Y' \\sim Q,$$

    estimated by the unbiased U-statistic (pairs $i \\ne j$ within a set), so it can be slightly
    negative when $P = Q$. $D^2 \\ge 0$ with equality iff $P = Q$ (for finite first moments).

    Fields of shape `(n, c, n_1, ..., n_d)` are compared in $L^2(\\mathbb{T}^d; \\mathbb{R}^c)$,
    $\\|u\\|^2 = \\frac1N \\sum_j \\sum_c u_c(x_j)^2$ (the mean over the $N$ grid points), so the value
    is comparable across resolutions; arrays of shape `(n, D)` are compared in the Euclidean norm.
    The sum over pairs runs block by block, so memory is $O(\\text{block\\_size}^2)$ for any $n$.
    Distances come from the Gram matrix of the sets centred on their pooled mean.

    **Arguments:**

    - `x`: the first set, `(n, D)` features or `(n, c, *grid)` fields, $n \\ge 2$.
    - `y`: the second set, of the same trailing shape, $m \\ge 2$.
    - `block_size`: the number of samples per block.

    **Returns:**

    The estimate of $D^2$, a scalar, in the units of the fields (the Riesz kernel's distances are
    linear in them: scaling both sets by $a$ scales it by $a$).
    """
    check_block_size(block_size)
    xv, yv = as_vectors(x, "x"), as_vectors(y, "y")
    if xv.shape[1:] != yv.shape[1:] or jnp.shape(x)[1:] != jnp.shape(y)[1:]:
        raise ValueError(
            f"`x` and `y` must have the same trailing shape (the same grid and channels), got "
            f"{tuple(jnp.shape(x))} and {tuple(jnp.shape(y))}; resample them to a common grid first."
        )
    if xv.shape[0] < 2 or yv.shape[0] < 2:
        raise ValueError("`x` and `y` need at least two samples each for the U-statistic.")
    return _energy_distance(xv, yv, int(block_size))


@functools.partial(jax.jit, static_argnums=2)
def _energy_distance(xv: Array, yv: Array, block_size: int) -> Array:
    centre = (jnp.sum(xv, axis=0) + jnp.sum(yv, axis=0)) / (xv.shape[0] + yv.shape[0])
    xv, yv = xv - centre, yv - centre
    cross = mean_distance(xv, yv, block_size)
    within_x = mean_distance(xv, xv, block_size, same=True)
    within_y = mean_distance(yv, yv, block_size, same=True)
    return 2.0 * cross - within_x - within_y
