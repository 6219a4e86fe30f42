"""Signed-distance functions of MNIST digits on the torus, computed by the project, as generated data.

A digit becomes a signed-distance function (SDF) $\\phi$ on $\\mathbb{T}^2 = [0, 1)^2$ in four steps:

1. the 28 x 28 image is padded with two pixels of background to the 32-grid (as the MNIST source
   does) and scaled to $[0, 1]$; the pixel $(j_1, j_2)$ is the value at $x = j / 32$;
2. it is interpolated bilinearly, periodically, to the fine grid of `32 * upsample` points per axis
   and thresholded at 0.5: the digit is the set $D$ of fine grid points inside;
3. the exact Euclidean distance transform (`scipy.ndimage.distance_transform_edt`) of $D$ and of its
   complement, on the torus (`periodic_signed_distance`), signed negative inside, in units of the
   unit square: $\\phi(x) = d(x, D) - h/2$ outside and $-(d(x, D^c) - h/2)$ inside, with $h$ the
   fine grid's spacing (a grid point is the centre of a cell of width $h$, so the boundary lies half
   a cell from the nearest point across it);
4. the values on an $n$-grid ($n$ dividing the fine size) are the fine values at its points
   $x_j = j/n$, which are fine grid points: the point values of the one function $\\phi$, on every
   grid. The $L^2$ projection (the spectral restriction of the other sources) would instead give a
   band-limited function that rings near the kinks of $\\phi$ (along the digit's skeleton and the
   medial axis outside), with $|\\nabla \\phi| \\ne 1$ far from them.

The values are multiplied by `scale` (4 by default: on the 32-grid the 10,000 t10k digits' fields lie
in $[-0.71, 2.08]$, mean 0.62, standard deviation 0.47) so that the diffusion's noise and the data
have comparable sizes; the zero level set, the digit's outline, is unchanged by the scale.
"""

from collections.abc import Sequence

import numpy as np
from jaxtyping import Bool, Float, UInt8

from .generated import register_generator
from .mnist import load_mnist
from .source import as_grid

PIXEL_GRID = 32
"""The grid of the padded 28 x 28 digits: pixel $j$ is the value at $x = j / 32$."""


def periodic_signed_distance(inside: Bool[np.ndarray, "*grid"]) -> Float[np.ndarray, "*grid"]:
    """The signed distance on the torus $[0, 1)^d$ to the boundary of a set of grid points.

    On the grid of $n_i$ points per axis ($x_j = j/n$), the distance from a point outside to the
    set is the exact Euclidean distance on the torus to its nearest point inside (and the other way
    round for a point inside), minus half a cell: $\\phi = d(x, D) - h/2$ outside, $-(d(x, D^c) - h/2)$
    inside, with $h = 1/n_1$. On the torus the nearest copy of a point lies within half the period
    along each axis, so the transform of the set padded periodically by $n_i/2$ on each side is
    exact on the middle block.

    **Arguments:**

    - `inside`: a boolean array, the points of the set; it must hold points both inside and
        outside.

    **Returns:**

    A float64 array of the same shape: negative inside, positive outside, in units of the unit
    square.
    """
    from scipy import ndimage

    inside = np.asarray(inside, dtype=bool)
    if inside.ndim < 1 or inside.size == 0:
        raise ValueError(f"`inside` must be a non-empty grid of points, got shape {inside.shape}.")
    if inside.all() or not inside.any():
        raise ValueError("`inside` must hold points both inside and outside the set (its boundary is empty).")
    widths = [(n // 2, n // 2) for n in inside.shape]
    tiled = np.pad(inside, widths, mode="wrap")
    middle = tuple(slice(n // 2, n // 2 + n) for n in inside.shape)
    spacing = [1.0 / n for n in inside.shape]
    outside_distance = ndimage.distance_transform_edt(~tiled, sampling=spacing)[middle]
    inside_distance = ndimage.distance_transform_edt(tiled, sampling=spacing)[middle]
    half = 0.5 / inside.shape[0]
    return np.where(inside, half - inside_distance, outside_distance - half)


def periodic_bilinear(u: Float[np.ndarray, "*batch n n"], factor: int) -> Float[np.ndarray, "*batch m m"]:
    """Periodic bilinear interpolation of point values at $x_j = j/n$ to the grid of `factor * n` points."""
    n = u.shape[-1]
    x = np.arange(n * factor) / factor
    low = np.floor(x).astype(np.int64)
    weight = x - low
    high = (low + 1) % n
    u = u[..., low, :] * (1 - weight)[:, None] + u[..., high, :] * weight[:, None]
    return u[..., :, low] * (1 - weight) + u[..., :, high] * weight


def digit_sdf(
    images: UInt8[np.ndarray, "batch 28 28"], grid: int | Sequence[int], upsample: int = 4, scale: float = 4.0
) -> Float[np.ndarray, "batch 1 n n"]:
    """Signed-distance functions of MNIST digits on an $n$-grid (the module's steps 1-4).

    **Arguments:**

    - `images`: uint8 digits `(B, 28, 28)`.
    - `grid`: the output grid $n$ (an int or `(n, n)`); it must divide the fine size `32 * upsample`.
    - `upsample`: the fine grid is `32 * upsample` points per axis.
    - `scale`: the factor the distances are multiplied by.

    **Returns:**

    float32 `(B, 1, n, n)`: `scale` times the signed distance, negative inside the digit.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"`images` must be uint8 of shape (B, 28, 28), got {images.dtype} {images.shape}.")
    n, m = as_grid(grid, 2)
    if int(upsample) != upsample or upsample < 1:
        raise ValueError(f"`upsample` must be a positive int (the fine grid is 32 * upsample), got {upsample}.")
    fine = PIXEL_GRID * int(upsample)
    if n != m or fine % n:
        raise ValueError(f"the grid {[n, m]} must be square and divide the fine grid {fine} = 32 * upsample.")
    if not scale > 0:
        raise ValueError(f"`scale` must be > 0, got {scale}.")
    pad = (PIXEL_GRID - 28) // 2
    padded = np.pad(images.astype(np.float64) / 255.0, ((0, 0), (pad, pad), (pad, pad)))
    out = np.empty((len(images), 1, n, n), dtype=np.float32)
    step = fine // n
    for i, image in enumerate(padded):
        inside = periodic_bilinear(image, int(upsample)) > 0.5
        if not inside.any():
            raise ValueError(f"digit {i} has no pixel above half intensity: it has no signed distance.")
        out[i, 0] = scale * periodic_signed_distance(inside)[::step, ::step]
    return out


def _sdf_grids(grid: tuple[int, ...], params) -> bool:
    """Whether `mnist_sdf` computes point values on `grid`: a square grid dividing `32 * upsample`."""
    fine = PIXEL_GRID * int(params.get("upsample", 4))
    return len(set(grid)) == 1 and fine % grid[0] == 0


@register_generator("mnist_sdf", point_values=_sdf_grids)
def mnist_sdf(
    count: int,
    grid: int | Sequence[int],
    channels: int = 1,
    seed: int = 0,
    *,
    split: str = "t10k",
    start: int = 0,
    upsample: int = 4,
    scale: float = 4.0,
    root: str | None = None,
) -> np.ndarray:
    """The signed-distance functions (`digit_sdf`) of the MNIST digits `split[start:start + count]`.

    The digits are read by `train.data.load_mnist` (verified by the checksum of their content; the
    folder is `root`, else `$SDEFLOW_MNIST_ROOT`, else `~/.cache/sdeflow/mnist`). Deterministic:
    `seed` is unused.

    **Arguments:**

    - `count`: the number of digits.
    - `grid`: the output grid, dividing `32 * upsample`.
    - `channels`: must be 1.
    - `seed`: unused (the data are not random).
    - `split`, `start`: the digits' split and first index.
    - `upsample`, `scale`: as `digit_sdf`.
    - `root`: the folder of the MNIST files.

    **Returns:**

    float32 `(count, 1, n, n)`.
    """
    del seed
    if channels != 1:
        raise ValueError(f"mnist_sdf makes 1-channel fields, got channels={channels}.")
    digits = load_mnist(split, [int(start), int(start) + int(count)], root=root)
    return digit_sdf(digits.images, grid, upsample=upsample, scale=scale)
