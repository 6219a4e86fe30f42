"""The Vendi score: the exponential of the entropy of a similarity matrix's eigenvalues."""


import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._blocks import as_vectors, blockwise_gram, check_block_size


def _entropy_exp(eigenvalues: Float[Array, " k"]) -> Float[Array, ""]:
    p = jnp.clip(eigenvalues, 0.0, None)
    p = p / jnp.sum(p)
    terms = jnp.where(p > 0, -p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)
    return jnp.exp(jnp.sum(terms))


def vendi_score(
    x: Float[ArrayLike, "n ..."],
    *,
    kernel: str = "cosine",
    bandwidth: float = 1.0,
    block_size: int = 1024,
) -> Float[Array, ""]:
    """The Vendi score $\\exp(-\\sum_i \\mu_i \\log \\mu_i)$ of a set, $\\mu_i$ the eigenvalues of $K/n$.

    $K_{ij} = k(x_i, x_j)$ with $k(x, x) = 1$, so $\\sum_i \\mu_i = 1$. The score is the effective
    number of distinct samples: 1 when all samples are equal, $n$ when they are mutually orthogonal
    (cosine kernel) or far apart (RBF kernel).

    - `kernel="cosine"`: $k(x, y) = \\langle x, y \\rangle / (\\|x\\| \\|y\\|)$. Then $K = Z Z^T$ with
      unit rows $z_i$, whose non-zero eigenvalues are those of the $D \\times D$ matrix $Z^T Z$: when
      $n > D$ that matrix is accumulated block by block and diagonalised instead (memory $O(D^2)$).
    - `kernel="rbf"`: $k(x, y) = \\exp(-\\|x - y\\|^2 / (2 h^2))$ with bandwidth $h$; this needs the
      $n \\times n$ matrix and its eigenvalues, so keep $n$ to a few thousand.

    Fields `(n, c, *grid)` use the $L^2(\\mathbb{T}^d)$ norm (mean over grid points, see
    `riesz_mmd`); the cosine kernel does not depend on that scaling.

    **Arguments:**

    - `x`: the set, `(n, D)` features or `(n, c, *grid)` fields.
    - `kernel`: `"cosine"` or `"rbf"`.
    - `bandwidth`: $h$ of the RBF kernel.
    - `block_size`: samples per block when accumulating $Z^T Z$.

    **Returns:**

    The score, a scalar in $[1, n]$.
    """
    check_block_size(block_size)
    if kernel not in ("cosine", "rbf"):
        raise ValueError(f"`kernel` must be 'cosine' or 'rbf', got {kernel!r}.")
    if kernel == "rbf" and not bandwidth > 0:
        raise ValueError(f"`bandwidth` must be positive, got {bandwidth}.")
    return _vendi(as_vectors(x, "x"), kernel, float(bandwidth), int(block_size))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _vendi(xv: Array, kernel: str, bandwidth: float, block_size: int) -> Array:
    n, dim = xv.shape
    if kernel == "cosine":
        norms = jnp.sqrt(jnp.sum(xv**2, axis=1, keepdims=True))
        z = xv / jnp.where(norms > 0, norms, 1.0)
        if n > dim:
            gram = blockwise_gram(z, block_size)
        else:
            gram = jnp.matmul(z, z.T, precision="highest")
    else:
        sq = (
            jnp.sum(xv**2, axis=1)[:, None]
            + jnp.sum(xv**2, axis=1)[None, :]
            - 2.0 * jnp.matmul(xv, xv.T, precision="highest")
        )
        gram = jnp.exp(-jnp.maximum(sq, 0.0) / (2.0 * bandwidth**2))
    return _entropy_exp(jnp.linalg.eigvalsh(gram / n))


