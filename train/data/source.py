"""The interface of a data source: where examples come from and how one becomes a function on a grid.

A source stores its examples in their own raw form (uint8 images, float32 fields on the source's
native grid) and turns a batch of them into functions on the torus $[0, 1)^d$: float32 point values
of shape `(B, c, n_1, ..., n_d)` on any requested grid. Conversion happens batch by batch, in
grain's worker processes if there are any, so it is a picklable callable (`converter(grid)`).

Every source has two parts: `"train"`, the examples a generative model trains on, and
`"holdout"`, examples kept for the evaluation (classifier, metrics); the two never overlap.
"""

import abc
import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import numpy as np

from sdeflow import resample_matrix

PARTS = ("train", "holdout")
"""The parts of every source: the training examples and the held-out ones."""


class DataError(RuntimeError):
    """Data files are missing, corrupt or cannot be downloaded, or hold values out of range."""


@dataclasses.dataclass(frozen=True, eq=False)
class Examples:
    """The raw examples of one part of a source.

    **Fields:**

    - `values`: the stored examples, shape `(N, ...)`: uint8 images or float32 fields, as the
        source keeps them (its `to_functions` turns them into functions).
    - `labels`: int64 class labels of shape `(N,)`, or `None` for a source without labels.
    """

    values: np.ndarray
    labels: np.ndarray | None

    def __post_init__(self):
        if self.values.ndim < 1:
            raise ValueError("`values` must have a leading example axis.")
        if self.labels is not None and self.labels.shape != (len(self.values),):
            raise ValueError(
                f"`labels` must have shape ({len(self.values)},), got {self.labels.shape}."
            )

    def __len__(self) -> int:
        return len(self.values)


class AbstractSource(abc.ABC):
    """A data set whose examples become functions on the torus $[0, 1)^d$.

    **Attributes** (class constants or dataclass fields of each source):

    - `name`: a short name, e.g. `"mnist"`.
    - `channels`: the number $c$ of channels of the functions.
    - `dim`: the spatial dimension $d$.
    - `native_grid`: the grid `(n_1, ..., n_d)` on which the stored values are exact (for images
        the padded pixel grid; for generated fields the grid they were generated on).
    - `value_range`: `(low, high)`, the range of the function values on the native grid before
        any blur or resampling (which may overshoot it slightly).
    - `num_classes`: the number of classes of the labels, or `None` without labels.
    """

    name: str
    channels: int
    dim: int
    native_grid: tuple[int, ...]
    value_range: tuple[float, float]
    num_classes: int | None

    @abc.abstractmethod
    def load(self, part: str) -> Examples:
        """The raw examples of one part, `"train"` or `"holdout"`.

        Raises `DataError` (a subclass naming the data set) when files are missing, corrupt, or
        hold values outside `value_range`, and `ValueError` for a bad part or index range.
        """

    @abc.abstractmethod
    def converter(self, grid: int | Sequence[int]) -> Callable[[np.ndarray], np.ndarray]:
        """A picklable callable turning raw values `(B, ...)` into float32 functions `(B, c, *grid)`.

        **Arguments:**

        - `grid`: the target grid, one size per axis, or an int for the same size on every axis.
        """

    def fields_on(self, part: str, grid: int | Sequence[int], index: np.ndarray | None = None) -> np.ndarray:
        """The examples of one part as functions on a grid.

        **Arguments:**

        - `part`: `"train"` or `"holdout"`.
        - `grid`: the grid, one size per axis, or an int for the same size on every axis.
        - `index`: positions in the part of the examples wanted (default: all of them, in order).

        **Returns:**

        float32 `(N, c, *grid)`: by default `converter(grid)` of `load(part)`'s values. A source
        that can compute its functions on a grid directly (point values of one function, not a
        resampling) returns those.
        """
        values = self.load(part).values
        return self.converter(grid)(values if index is None else values[index])

    def pixel_bin_width(self, values: np.ndarray, grid: int | Sequence[int]) -> float | None:
        """The quantisation bin of the functions on `grid`, when their values are exactly 8-bit data.

        8-bit values (`uint8`) seen on the native grid without blur (`smoothing` 0) are the levels
        `low + j * w`, $j = 0..255$, of `value_range`: the bin width $w = (high - low) / 255$
        (MNIST in $[-1, 1]$: $1 / 127.5$). Any other grid, a blur or float data have no bins.

        **Arguments:**

        - `values`: raw values of this source (`load(part).values`).
        - `grid`: the grid the functions are seen on.

        **Returns:**

        The bin width $w$, or `None`.
        """
        exact = (np.asarray(values).dtype == np.uint8 and float(getattr(self, "smoothing", 0.0)) == 0.0
                 and tuple(self.native_grid) == as_grid(grid, self.dim))
        low, high = self.value_range
        return (high - low) / 255 if exact else None

    def to_functions(self, values: np.ndarray, grid: int | Sequence[int]) -> np.ndarray:
        """Raw values `(B, ...)` as float32 functions `(B, c, *grid)` (see `converter`)."""
        return self.converter(grid)(values)


def as_grid(grid: int | Sequence[int], dim: int) -> tuple[int, ...]:
    """A grid as a tuple of `dim` positive sizes; an int means that size on every axis.

    **Arguments:**

    - `grid`: an int or a sequence of `dim` ints.
    - `dim`: the spatial dimension.

    **Returns:**

    The tuple `(n_1, ..., n_dim)`.
    """
    if isinstance(grid, (int, np.integer)):
        sizes = (int(grid),) * int(dim)
    else:
        sizes = tuple(int(n) for n in grid)
        if len(sizes) != dim:
            raise ValueError(f"the grid {list(sizes)} must have {dim} sizes, one per axis.")
    if any(n < 1 for n in sizes):
        raise ValueError(f"grid sizes must be positive, got {list(sizes)}.")
    return sizes


def check_part(part: str) -> str:
    """`part` if it is one of `PARTS`, else a ValueError."""
    if part not in PARTS:
        raise ValueError(f"`part` must be one of {list(PARTS)}, got {part!r}.")
    return part


def index_ranges(
    train_range: Sequence[int] | None, holdout_range: Sequence[int] | None
) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """The train and holdout `[start, stop)` ranges as tuples, checked to be disjoint.

    **Arguments:**

    - `train_range`: `[start, stop]` of the training examples, or `None` for the whole split.
    - `holdout_range`: `[start, stop]` of the held-out examples, or `None` for no holdout part.

    **Returns:**

    The two ranges as tuples (or `None`). Their upper bounds are checked against the size of the
    data when it is loaded.
    """
    ranges = []
    for field, value in (("train_range", train_range), ("holdout_range", holdout_range)):
        if value is None:
            ranges.append(None)
            continue
        if len(value) != 2:
            raise ValueError(f"`{field}` must be [start, stop], got {list(value)}.")
        start, stop = (int(i) for i in value)
        if not 0 <= start < stop:
            raise ValueError(f"`{field}` [{start}, {stop}] must satisfy 0 <= start < stop.")
        ranges.append((start, stop))
    train, holdout = ranges
    if holdout is not None:
        low, high = train if train is not None else (0, math.inf)
        if max(low, holdout[0]) < min(high, holdout[1]):
            shown = "the whole split" if train is None else list(train)
            raise ValueError(
                f"`train_range` {shown} and `holdout_range` {list(holdout)} overlap: the held-out "
                "examples must never be trained on. Choose disjoint ranges."
            )
    return train, holdout


def part_range(
    part: str, train: tuple[int, int] | None, holdout: tuple[int, int] | None, size: int, what: str
) -> tuple[int, int]:
    """The `[start, stop)` range of `part`, checked against the `size` of the data `what`."""
    chosen = train if check_part(part) == "train" else holdout
    if chosen is None:
        if part == "holdout":
            raise ValueError(f"{what} has no holdout part: set `holdout_range` to [start, stop].")
        return 0, size
    start, stop = chosen
    if stop > size:
        raise ValueError(
            f"`{part}_range` [{start}, {stop}] must satisfy stop <= {size}, the number of examples "
            f"of {what}."
        )
    return start, stop


@functools.lru_cache(maxsize=64)
def axis_matrix(native: int, size: int, smoothing: float = 0.0) -> np.ndarray:
    """The float32 `(size, native)` matrix of one axis: Gaussian blur, then spectral resampling.

    **Arguments:**

    - `native`: the input grid size $N$.
    - `size`: the output grid size (`sdeflow.resample_matrix`: restriction, prolongation or the
        identity).
    - `smoothing`: the standard deviation $\\sigma \\ge 0$ of the blur, in input grid cells: the
        Fourier multiplier $\\exp(-2\\pi^2 \\sigma^2 k^2 / N^2)$ (0: none).
    """
    matrix = resample_matrix(native, size)
    if smoothing > 0:
        k = np.rint(np.fft.fftfreq(native, d=1.0 / native))
        multiplier = np.exp(-2.0 * (np.pi * smoothing * k / native) ** 2)
        eye = np.eye(native)
        blur = np.real(np.fft.ifft(multiplier[:, None] * np.fft.fft(eye, axis=0), axis=0))
        matrix = matrix @ blur
    return matrix.astype(np.float32)


def apply_axes(u: np.ndarray, grid: tuple[int, ...], smoothing: float = 0.0) -> np.ndarray:
    """Blur and resample float32 fields `(B, c, *native)` to `(B, c, *grid)`, axis by axis."""
    native = u.shape[2:]
    if len(native) != len(grid):
        raise ValueError(f"fields of grid {list(native)} cannot be resampled to {list(grid)}.")
    if len(grid) == 2:  # images: two batched matrix products
        rows, cols = (axis_matrix(n, m, smoothing) for n, m in zip(native, grid, strict=True))
        return np.matmul(rows, np.matmul(u, cols.T))
    for axis, (n, m) in enumerate(zip(native, grid, strict=True), start=2):
        if n != m or smoothing > 0:
            u = np.moveaxis(np.tensordot(u, axis_matrix(n, m, smoothing), axes=([axis], [1])), -1, axis)
    return u


@dataclasses.dataclass(frozen=True)
class ImageConverter:
    """uint8 images to functions with values in about $[-1, 1]$ (a picklable callable).

    An image `(h, w)` or `(c, h, w)` is padded with `pad` cells of background (value 0) on every
    side, its values $p \\in \\{0, ..., 255\\}$ become $2p/255 - 1$, and the result is blurred by
    `smoothing` pixels and resampled spectrally to `grid` (see `apply_axes`). Values are never
    clipped, so that one image is the same band-limited function on every grid.

    **Fields:**

    - `image_shape`: the shape of one stored image, `(h, w)` (one channel) or `(c, h, w)`.
    - `pad`: background cells added on every side.
    - `grid`: the target grid `(n_1, n_2)`.
    - `smoothing`: the Gaussian blur in pixels (0: on the native grid the values are the pixels).
    """

    image_shape: tuple[int, ...]
    pad: int
    grid: tuple[int, ...]
    smoothing: float = 0.0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 1 + len(self.image_shape) or images.shape[1:] != self.image_shape:
            raise ValueError(
                f"`images` must have shape (B, {', '.join(map(str, self.image_shape))}), got {images.shape}."
            )
        u = images.reshape(len(images), -1, *self.image_shape[-2:]).astype(np.float32)
        u = u * np.float32(2.0 / 255.0) - np.float32(1.0)
        if self.pad:
            width = ((0, 0), (0, 0), (self.pad, self.pad), (self.pad, self.pad))
            u = np.pad(u, width, constant_values=-1.0)
        if tuple(u.shape[2:]) != self.grid or self.smoothing > 0:
            u = apply_axes(u, self.grid, self.smoothing)
        return np.ascontiguousarray(u, dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class FieldResampler:
    """float32 fields `(B, c, *native)` resampled spectrally to `(B, c, *grid)` (a picklable callable).

    **Fields:**

    - `native_grid`: the grid of the stored fields.
    - `grid`: the target grid.
    """

    native_grid: tuple[int, ...]
    grid: tuple[int, ...]

    def __call__(self, fields: np.ndarray) -> np.ndarray:
        fields = np.asarray(fields, dtype=np.float32)
        if fields.ndim != 2 + len(self.native_grid) or fields.shape[2:] != self.native_grid:
            raise ValueError(
                f"`fields` must have shape (B, c, {', '.join(map(str, self.native_grid))}), got {fields.shape}."
            )
        if self.grid != self.native_grid:
            fields = apply_axes(fields, self.grid)
        return np.ascontiguousarray(fields, dtype=np.float32)
