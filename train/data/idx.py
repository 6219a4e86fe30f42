"""Data sets of 28 x 28 images in the IDX gzip format of MNIST: locate, download, verify, parse.

One loader serves every such data set (MNIST, Fashion-MNIST); an `IdxDataset` names its files,
checksums, mirrors and folder. A file is accepted when the SHA-256 of its decompressed content is
the official one (where known: it identifies the data whatever gzip header a mirror wrote) or when
the checksum of the `.gz` archive itself is the published one.
"""

import abc
import dataclasses
import gzip
import hashlib
import os
import pathlib
import zlib
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from . import files
from .source import (
    PARTS,
    AbstractSource,
    DataError,
    Examples,
    ImageConverter,
    as_grid,
    index_ranges,
    part_range,
)

_IDX_DTYPES = {0x08: np.dtype(np.uint8)}


SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
"""The images and labels files of each split: the same names for MNIST and Fashion-MNIST."""

SPLIT_SIZES = {"train": 60_000, "t10k": 10_000}
"""The number of images of each split (both data sets)."""


@dataclasses.dataclass(frozen=True)
class IdxDataset:
    """An image data set distributed as IDX gzip files (the format of MNIST).

    **Fields:**

    - `title`: its name in messages, e.g. `"Fashion-MNIST"`.
    - `slug`: the name of its default folder under `~/.cache/sdeflow/`, e.g. `"fashion_mnist"`.
    - `splits`: split name -> `(images file, labels file)`.
    - `sizes`: split name -> number of examples.
    - `content_sha256`: file -> SHA-256 of the decompressed IDX bytes (may be empty).
    - `archive_checksums`: file -> `(algorithm, hex digest)` of the `.gz` archive.
    - `mirrors`: base URLs of the official files, tried in order.
    - `root_env`: the environment variable naming the folder.
    - `error`: the exception raised for missing or corrupt files.
    - `hint`: a last sentence of the missing-files message (or `""`).
    - `image_shape`: the shape of one image.
    """

    title: str
    slug: str
    splits: Mapping[str, tuple[str, str]]
    sizes: Mapping[str, int]
    content_sha256: Mapping[str, str]
    archive_checksums: Mapping[str, tuple[str, str]]
    mirrors: tuple[str, ...]
    root_env: str
    error: type[DataError]
    hint: str = ""
    image_shape: tuple[int, int] = (28, 28)

    @property
    def default_root(self) -> pathlib.Path:
        return pathlib.Path("~/.cache/sdeflow") / self.slug


def resolve_root(dataset: IdxDataset, root: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder of the files: `root` if given, else `$<root_env>`, else `~/.cache/sdeflow/<slug>`."""
    return files.resolve_root(root, dataset.root_env, dataset.default_root)


def parse_idx(data: bytes, name: str, error: type[DataError] = DataError) -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file of unsigned bytes.

    **Arguments:**

    - `data`: the file's content.
    - `name`: the file's name, used in error messages.
    - `error`: the exception raised for a malformed file.

    **Returns:**

    The array with the dimensions stored in the header.
    """
    if len(data) < 4:
        raise error(f"{name}: not an IDX file (only {len(data)} bytes).")
    zero, dtype_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code not in _IDX_DTYPES or not 1 <= ndim <= 3:
        raise error(
            f"{name}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000080N: unsigned bytes, "
            "N = 1 to 3 dimensions)."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise error(f"{name}: truncated IDX header ({len(data)} bytes, needs {header}).")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(dims))
    if len(data) != header + count:
        raise error(
            f"{name}: the header announces dimensions {dims} ({count} values) but the file holds "
            f"{len(data) - header}; the file is truncated or corrupt."
        )
    return np.frombuffer(data, dtype=_IDX_DTYPES[dtype_code], offset=header).reshape(dims)


def verified_content(dataset: IdxDataset, path: pathlib.Path, name: str) -> bytes:
    """The decompressed bytes of an official archive, after checking its checksum.

    **Arguments:**

    - `dataset`: the data set, whose checksum tables are used.
    - `path`: the `.gz` file.
    - `name`: its official name (the key of the checksum tables).

    **Returns:**

    The IDX bytes.
    """
    raw = path.read_bytes()
    try:
        content = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as failure:
        raise dataset.error(
            f"{path}: not a valid gzip archive ({failure}); the file is truncated or corrupt. Delete "
            "it and put the official file there again (or let it be downloaded)."
        ) from None
    content_digest = hashlib.sha256(content).hexdigest()
    if content_digest == dataset.content_sha256.get(name):
        return content
    if name in dataset.archive_checksums:
        algorithm, expected = dataset.archive_checksums[name]
        archive_digest = hashlib.new(algorithm, raw, usedforsecurity=False).hexdigest()
        if archive_digest == expected:
            return content
    if name in dataset.content_sha256:
        found = (
            f"the SHA-256 of its decompressed content is {content_digest}, the official {name} has "
            f"{dataset.content_sha256[name]}"
        )
    elif name in dataset.archive_checksums:
        found = f"its {algorithm.upper()} is {archive_digest}, the official {name} has {expected}"
    else:
        found = f"no checksum of a file {name} of {dataset.title} is known"
    raise dataset.error(
        f"{path}: checksum mismatch: {found}. The file is corrupt or not the official one; delete "
        "it and put the official file there again (or let it be downloaded)."
    )


def download(
    dataset: IdxDataset,
    name: str,
    root: pathlib.Path,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Download one official file into `root`, verified before it is renamed into place.

    **Arguments:**

    - `dataset`: the data set.
    - `name`: the file name, e.g. `"t10k-images-idx3-ubyte.gz"`.
    - `root`: the destination folder (created if needed).
    - `mirrors`: base URLs tried in order (default: the data set's).
    - `timeout`: seconds per connection attempt.
    """

    def verify(path: pathlib.Path, name: str) -> None:
        verified_content(dataset, path, name)

    files.download(
        name, root, dataset.mirrors if mirrors is None else mirrors, verify, dataset.error, timeout
    )


def check_range(index_range: Sequence[int] | None, size: int, split: str) -> tuple[int, int]:
    """`[start, stop]` within a split of `size` examples as a tuple (`None`: the whole split)."""
    if index_range is None:
        return 0, size
    if len(index_range) != 2:
        raise ValueError(f"`index_range` must be [start, stop], got {list(index_range)}.")
    start, stop = (int(i) for i in index_range)
    if not 0 <= start < stop <= size:
        raise ValueError(
            f"`index_range` [{start}, {stop}] must satisfy 0 <= start < stop <= {size} (the size of "
            f"split {split!r})."
        )
    return start, stop


def load_idx(
    dataset: IdxDataset,
    split: str,
    index_range: Sequence[int] | None = None,
    *,
    root: str | os.PathLike | None = None,
    download_missing: bool = True,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Load (a range of) one split from the official IDX gzip files, verified by checksum.

    **Arguments:**

    - `dataset`: the data set.
    - `split`: one of `dataset.splits`.
    - `index_range`: `[start, stop]` within the split, or `None` for all of it.
    - `root`: the folder of the files (see `resolve_root`).
    - `download_missing`: whether to download missing files from the official mirrors; without
        network (or with `False`) a missing file raises an error saying where to put which file.

    **Returns:**

    `(images, labels, start, stop)`: uint8 images `(N, *image_shape)`, uint8 labels `(N,)` and the
    index range of the split that they are.
    """
    if split not in dataset.splits:
        raise ValueError(f"`split` must be one of {sorted(dataset.splits)}, got {split!r}.")
    size = dataset.sizes[split]
    start, stop = check_range(index_range, size, split)
    folder = resolve_root(dataset, root)
    names = dataset.splits[split]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        if not download_missing:
            raise dataset.error(_missing(dataset, folder, missing, "downloading is disabled"))
        for name in missing:
            try:
                download(dataset, name, folder)
            except dataset.error as failure:
                raise dataset.error(
                    _missing(dataset, folder, missing, f"the download failed: {failure}")
                ) from None
    images, labels = (
        parse_idx(verified_content(dataset, folder / name, name), name, dataset.error)
        for name in names
    )
    if images.shape != (size, *dataset.image_shape) or labels.shape != (size,):
        raise dataset.error(
            f"{folder}: unexpected shapes {images.shape}, {labels.shape} for split {split!r} of "
            f"{dataset.title} (expected ({size}, {', '.join(map(str, dataset.image_shape))}), ({size},))."
        )
    return np.array(images[start:stop]), np.array(labels[start:stop]), start, stop


def _missing(dataset: IdxDataset, folder: pathlib.Path, missing: Sequence[str], reason: str) -> str:
    return files.missing_message(
        dataset.title,
        folder,
        missing,
        reason,
        what="the .gz archives, not decompressed",
        mirrors=dataset.mirrors,
        env=dataset.root_env,
        slug=dataset.slug,
        hint=dataset.hint,
    )


PAD = 2
"""Background cells added on every side of a 28 x 28 image: the native grid is 32 x 32."""


@dataclasses.dataclass(frozen=True)
class IdxSource(AbstractSource):
    """The shared part of the sources of 28 x 28 grey images in IDX files (MNIST, Fashion-MNIST).

    An image becomes a function on $[0, 1)^2$ as `ImageConverter` says: padded with two cells of
    background to 32 x 32 (so that opposite edges of the torus are apart), mapped to $[-1, 1]$
    (background $-1$), optionally blurred, and resampled spectrally to the requested grid.

    **Fields:**

    - `split`: the split read, e.g. `"train"` or `"t10k"`.
    - `train_range`: `[start, stop)` of the split that the model trains on (`None`: all of it).
    - `holdout_range`: `[start, stop)` held out for the evaluation; disjoint from `train_range`.
    - `smoothing`: Gaussian blur in pixels before resampling (0: the 32-grid values are the pixels).
    - `root`: the folder of the files (`None`: the environment variable, then the default folder).
    - `download`: download missing files from the official mirrors where the network allows.
    """

    split: str = "train"
    train_range: Sequence[int] | None = (0, 50_000)
    holdout_range: Sequence[int] | None = (50_000, 60_000)
    smoothing: float | int = 0.6
    root: str | os.PathLike | None = None
    download: bool = True

    channels: ClassVar[int] = 1
    dim: ClassVar[int] = 2
    native_grid: ClassVar[tuple[int, ...]] = (32, 32)
    value_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    num_classes: ClassVar[int | None] = 10

    def __post_init__(self):
        train, holdout = index_ranges(self.train_range, self.holdout_range)
        object.__setattr__(self, "train_range", train)
        object.__setattr__(self, "holdout_range", holdout)
        if not self.smoothing >= 0:
            raise ValueError(f"`smoothing` must be >= 0 (pixels), got {self.smoothing}.")
        dataset = self.dataset()
        if self.split not in dataset.splits:
            raise ValueError(f"`split` must be one of {sorted(dataset.splits)}, got {self.split!r}.")
        for part in PARTS:
            if getattr(self, f"{part}_range") is not None:
                part_range(part, train, holdout, dataset.sizes[self.split], f"split {self.split!r}")

    @abc.abstractmethod
    def dataset(self) -> IdxDataset:
        """The files, checksums and mirrors of the data set."""

    def load(self, part: str) -> Examples:
        """The uint8 images `(N, 28, 28)` and int64 labels `(N,)` of `"train"` or `"holdout"`."""
        dataset = self.dataset()
        start, stop = part_range(
            part, self.train_range, self.holdout_range, dataset.sizes[self.split], f"split {self.split!r}"
        )
        images, labels, _, _ = load_idx(
            dataset, self.split, (start, stop), root=self.root, download_missing=self.download
        )
        return Examples(values=images, labels=labels.astype(np.int64))

    def converter(self, grid: int | Sequence[int]) -> ImageConverter:
        """Images `(B, 28, 28)` to float32 functions `(B, 1, *grid)` (see `ImageConverter`)."""
        return ImageConverter(
            image_shape=self.dataset().image_shape,
            pad=PAD,
            grid=as_grid(grid, 2),
            smoothing=float(self.smoothing),
        )
