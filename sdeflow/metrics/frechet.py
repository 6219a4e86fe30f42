"""The Fréchet distance between the Gaussians fitted to two sets of features."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._blocks import as_vectors, blockwise_gram, blockwise_sum, check_block_size


def _frechet_float64(mean1, cov1, mean2, cov2) -> np.ndarray:
    """The Fréchet formula in float64 with NumPy (float32 eigendecompositions lose about 1e-4 of
    the trace to round-off, which is the size of the distance between close sets)."""
    mean1, cov1, mean2, cov2 = (np.asarray(a, np.float64) for a in (mean1, cov1, mean2, cov2))
    w1, v1 = np.linalg.eigh((cov1 + cov1.T) / 2)
    root1 = (v1 * np.sqrt(np.clip(w1, 0.0, None))) @ v1.T
    middle = root1 @ cov2 @ root1
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
    d2 = np.sum((mean1 - mean2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * cross
    return np.asarray(max(d2, 0.0), np.float32)


def _check_same_trailing_shape(x: ArrayLike, y: ArrayLike) -> None:
    if jnp.shape(x)[1:] != jnp.shape(y)[1:]:
        raise ValueError(
            f"`x` and `y` must have the same trailing shape, got {tuple(jnp.shape(x))} and "
            f"{tuple(jnp.shape(y))}."
        )


def feature_statistics(
    x: Float[ArrayLike, "n ..."], *, block_size: int = 1024
) -> tuple[Float[Array, " D"], Float[Array, "D D"]]:
    """Mean and unbiased covariance of a set, accumulated block by block.

    The second moment is accumulated about the first sample (a shift that keeps float32 sums from
    cancelling), so memory is $O(D^2 + \\text{block\\_size} \\cdot D)$ for any $n$.

    **Arguments:**

    - `x`: `(n, D)` features or `(n, c, *grid)` fields (flattened with the $L^2(\\mathbb{T}^d)$
      scaling of `riesz_mmd`), $n \\ge 2$.
    - `block_size`: samples per block.

    **Returns:**

    `(mean, covariance)` of shapes `(D,)` and `(D, D)`.
    """
    check_block_size(block_size)
    xv = as_vectors(x, "x")
    if xv.shape[0] < 2:
        raise ValueError(f"`x` needs at least two samples for a covariance, got {xv.shape[0]}.")
    return _statistics(xv, int(block_size))


@functools.partial(jax.jit, static_argnums=1)
def _statistics(xv: Array, block_size: int) -> tuple[Array, Array]:
    n = xv.shape[0]
    shift = xv[0]
    centred = xv - shift
    first = blockwise_sum(lambda v: v, centred, block_size)
    second = blockwise_gram(centred, block_size)
    mean_c = first / n
    cov = (second - n * jnp.outer(mean_c, mean_c)) / (n - 1)
    return mean_c + shift, (cov + cov.T) / 2


def gaussian_frechet_distance(
    mean1: Float[Array, " D"],
    cov1: Float[Array, "D D"],
    mean2: Float[Array, " D"],
    cov2: Float[Array, "D D"],
) -> Float[Array, ""]:
    """The squared 2-Wasserstein (Fréchet) distance between $N(\\mu_1, \\Sigma_1)$ and $N(\\mu_2, \\Sigma_2)$:

    $$d^2 = |\\mu_1 - \\mu_2|^2 + \\operatorname{tr}\\Sigma_1 + \\operatorname{tr}\\Sigma_2
    - 2 \\operatorname{tr}(\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2})^{1/2}.$$

    The cross term uses two symmetric eigendecompositions (of $\\Sigma_1$, then of the symmetric
    positive semi-definite $\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}$, negative round-off eigenvalues
    clipped to zero) instead of the square root of the non-symmetric $\\Sigma_1 \\Sigma_2$, so no
    complex parts appear and the result is stable for singular covariances. They run in float64 on
    the host (`jax.pure_callback`, usable under `jit`, not differentiable): in float32 the
    cancellation between the traces and the cross term costs about $10^{-4}$ of the trace.

    **Arguments:**

    - `mean1`, `cov1`: the first Gaussian.
    - `mean2`, `cov2`: the second Gaussian.

    **Returns:**

    $d^2$, a scalar (clipped at zero).
    """
    dim = mean1.shape[0]
    for name, value, shape in (
        ("mean2", mean2, (dim,)),
        ("cov1", cov1, (dim, dim)),
        ("cov2", cov2, (dim, dim)),
    ):
        if tuple(value.shape) != shape:
            raise ValueError(f"`{name}` must have shape {shape} to match `mean1`, got {value.shape}.")
    return jax.pure_callback(
        _frechet_float64, jax.ShapeDtypeStruct((), jnp.float32), mean1, cov1, mean2, cov2
    )


def frechet_distance(
    x: Float[ArrayLike, "n ..."], y: Float[ArrayLike, "m ..."], *, block_size: int = 1024
) -> Float[Array, ""]:
    """The Fréchet distance of two feature sets: `gaussian_frechet_distance` of their statistics.

    With classifier features this is the FID-style score (squared, as is customary). Zero for two
    identical sets (to round-off).

    **Arguments:**

    - `x`: the first set, `(n, D)` features (or fields, see `feature_statistics`).
    - `y`: the second set, same trailing shape.
    - `block_size`: samples per block for the statistics.

    **Returns:**

    $d^2$, a scalar.
    """
    _check_same_trailing_shape(x, y)
    mean1, cov1 = feature_statistics(x, block_size=block_size)
    mean2, cov2 = feature_statistics(y, block_size=block_size)
    return gaussian_frechet_distance(mean1, cov1, mean2, cov2)


def frechet_standard_error(
    x: Float[ArrayLike, "n ..."],
    y: Float[ArrayLike, "m ..."],
    *,
    resamples: int = 100,
    seed: int = 0,
    block_size: int = 1024,
) -> float:
    """The bootstrap standard error of `frechet_distance(x, y)` over the draw of `x`.

    `x` (the generated samples) is drawn again with replacement `resamples` times and the distance
    to the fixed `y` (the reference set, held fixed as when two models are compared against one
    reference) recomputed as `frechet_distance` computes it; the standard deviation of those
    distances estimates how far another set of as many samples from the same model would move the
    figure. Two models whose distances differ by less than about twice this are not told apart by
    the evaluation.

    **Arguments:**

    - `x`: the first set, `(n, D)` features (or fields, see `feature_statistics`), $n \\ge 2$.
    - `y`: the second set, same trailing shape.
    - `resamples`: bootstrap draws, at least 2.
    - `seed`: the seed of the draws.
    - `block_size`: samples per block of the statistics (`feature_statistics`).

    **Returns:**

    The standard deviation of the resampled distances (a float).
    """
    if int(resamples) < 2:
        raise ValueError(f"`resamples` must be at least 2, got {resamples}.")
    _check_same_trailing_shape(x, y)
    xv = as_vectors(x, "x")  # each resample has as many rows; feature_statistics refuses fewer than two
    mean_y, cov_y = feature_statistics(y, block_size=block_size)  # the reference's, computed once
    rng = np.random.default_rng(seed)
    distances = []
    for _ in range(int(resamples)):
        mean, cov = feature_statistics(xv[rng.integers(0, xv.shape[0], xv.shape[0])], block_size=block_size)
        distances.append(float(_frechet_float64(mean, cov, mean_y, cov_y)))
    return float(np.std(distances, ddof=1))
