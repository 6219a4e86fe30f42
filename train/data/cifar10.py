"""CIFAR-10 from the official python tarball, as a data source of RGB functions on $[0, 1)^2$.

The official `cifar-10-python.tar.gz` (163 MB, MD5 `c58f30108f718f92721af3b95e74349a` as
published on www.cs.toronto.edu/~kriz/cifar.html) holds, under `cifar-10-batches-py/`, the pickled
batches `data_batch_1` ... `data_batch_5` (the train split, 50,000 images) and `test_batch` (the
test split, 10,000). Each batch is a dict whose `b"data"` is a uint8 array `(n, 3072)`: per image
the 1024 red values, then the green, then the blue, each plane row-major 32 x 32; `b"labels"` is a
list of n labels 0-9 (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck).

The batches are read straight from the tarball (nothing is extracted), after the tarball's MD5 is
verified, with an unpickler that builds nothing but numpy arrays, lists, dicts and strings. The
folder is, in this order: the `root` argument (config field `data.root`), the environment variable
`SDEFLOW_CIFAR10_ROOT`, or `~/.cache/sdeflow/cifar10`.
"""

import codecs
import dataclasses
import io
import os
import pathlib
import pickle
import tarfile
import zlib
from collections.abc import Sequence
from typing import ClassVar, final

import numpy as np

from . import files
from .source import (
    AbstractSource,
    DataError,
    Examples,
    ImageConverter,
    as_grid,
    index_ranges,
    part_range,
)

ROOT_ENV = "SDEFLOW_CIFAR10_ROOT"
DEFAULT_ROOT = pathlib.Path("~/.cache/sdeflow/cifar10")

ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = {ARCHIVE: "c58f30108f718f92721af3b95e74349a"}
"""MD5 of the official tarball, as published in the download table of the CIFAR page."""

MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)

FOLDER = "cifar-10-batches-py"
SPLITS = {
    "train": tuple(f"{FOLDER}/data_batch_{i}" for i in range(1, 6)),
    "test": (f"{FOLDER}/test_batch",),
}
"""The tarball members holding each split, in order."""
SPLIT_SIZES = {"train": 50_000, "test": 10_000}
"""The number of images of each split of the official files."""

IMAGE_SHAPE = (3, 32, 32)


class Cifar10Error(DataError):
    """The CIFAR-10 tarball is missing, corrupt or cannot be downloaded."""


def resolve_root(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder of the tarball: `root` if given, else `$SDEFLOW_CIFAR10_ROOT`, else `~/.cache/sdeflow/cifar10`."""
    return files.resolve_root(root, ROOT_ENV, DEFAULT_ROOT)


def verify_archive(path: pathlib.Path, name: str = ARCHIVE) -> None:
    """Raise `Cifar10Error` unless the MD5 of the file at `path` is the official one of `name`."""
    digest = files.file_digest(path, "md5")
    if digest != ARCHIVE_MD5[name]:
        raise Cifar10Error(
            f"{path}: checksum mismatch: its MD5 is {digest}, the official {name} has "
            f"{ARCHIVE_MD5[name]}. The file is corrupt or not the official one; delete it and put "
            "the official file there again (or let it be downloaded)."
        )


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch, refusing any object but the few that make up numpy arrays."""

    _ALLOWED: ClassVar[dict] = {
        ("numpy.core.multiarray", "_reconstruct"): np.zeros(0).__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): np.zeros(0).__reduce__()[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str):
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}") from None


def _parse_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The images `(n, 3, 32, 32)` and labels `(n,)` of one pickled batch."""
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as failure:  # any malformed pickle
        raise Cifar10Error(f"{where}: not a CIFAR-10 batch ({failure}).") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise Cifar10Error(f"{where}: not a CIFAR-10 batch (no b'data' and b'labels' entries).")
    images, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        raise Cifar10Error(f"{where}: b'data' must be uint8 of shape (n, 3072), got {images.dtype} {images.shape}.")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise Cifar10Error(f"{where}: b'labels' must be {len(images)} integers, got {labels.dtype} {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise Cifar10Error(f"{where}: labels outside 0-9 (from {labels.min()} to {labels.max()}).")
    # Each row is the red plane, then the green, then the blue, each row-major 32 x 32.
    return images.reshape(len(images), *IMAGE_SHAPE), labels.astype(np.int64)


def load_cifar10(
    split: str = "train",
    *,
    root: str | os.PathLike | None = None,
    download_missing: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one CIFAR-10 split from the official tarball, verified by its MD5.

    **Arguments:**

    - `split`: `"train"` (the five data batches, 50,000 images) or `"test"` (10,000).
    - `root`: the folder of `cifar-10-python.tar.gz` (see `resolve_root`).
    - `download_missing`: whether to download a missing tarball from the official site; without
        network (or with `False`) a missing tarball raises an error saying where to put it.

    **Returns:**

    `(images, labels)`: uint8 images `(N, 3, 32, 32)` (channels red, green, blue) and int64 labels
    `(N,)`, in the order of the batches.
    """
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {sorted(SPLITS)}, got {split!r}.")
    folder = resolve_root(root)
    path = folder / ARCHIVE
    if not path.is_file():
        if not download_missing:
            raise Cifar10Error(_missing(folder, "downloading is disabled"))
        try:
            files.download(ARCHIVE, folder, MIRRORS, verify_archive, Cifar10Error, timeout=60.0)
        except Cifar10Error as failure:
            raise Cifar10Error(_missing(folder, f"the download failed: {failure}")) from None
    verify_archive(path)
    wanted = SPLITS[split]
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # one pass through the compressed stream
                if member.name in wanted and member.isfile():
                    handle = tar.extractfile(member)
                    found[member.name] = _parse_batch(handle.read(), f"{path}:{member.name}")
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as failure:
        raise Cifar10Error(f"{path}: not a readable tar.gz archive ({failure}); the file is corrupt.") from None
    missing = [name for name in wanted if name not in found]
    if missing:
        raise Cifar10Error(f"{path}: the archive lacks {', '.join(missing)}; it is not the official {ARCHIVE}.")
    images = np.concatenate([found[name][0] for name in wanted])
    labels = np.concatenate([found[name][1] for name in wanted])
    return images, labels


def _missing(folder: pathlib.Path, reason: str) -> str:
    return files.missing_message(
        "CIFAR-10",
        folder,
        [ARCHIVE],
        reason,
        what="the python version, the .tar.gz archive as downloaded, not extracted",
        mirrors=MIRRORS,
        env=ROOT_ENV,
        slug="cifar10",
    )


@final
@dataclasses.dataclass(frozen=True)
class Cifar10Source(AbstractSource):
    """CIFAR-10 as functions on $[0, 1)^2$: 3 channels (RGB), native grid 32 x 32, values in $[-1, 1]$.

    Pixel values $p \\in \\{0, ..., 255\\}$ become $2p/255 - 1$; channel 0 is red, 1 green, 2 blue.
    The images are not padded (they fill the frame; the torus joins opposite edges). An optional
    Gaussian blur, then spectral resampling, give the function on other grids (`ImageConverter`).

    **Fields:**

    - `split`: `"train"` (50,000 images) or `"test"` (10,000).
    - `train_range`: `[start, stop)` of the split that the model trains on (`None`: all of it).
    - `holdout_range`: `[start, stop)` held out for the evaluation; disjoint from `train_range`.
    - `smoothing`: Gaussian blur in pixels before resampling (0: the 32-grid values are the pixels).
    - `root`: the folder of the tarball (`None`: `$SDEFLOW_CIFAR10_ROOT`, else
        `~/.cache/sdeflow/cifar10`).
    - `download`: download a missing tarball from the official site where the network allows.

    `load` raises `Cifar10Error` for a missing or corrupt tarball.
    """

    split: str = "train"
    train_range: Sequence[int] | None = (0, 45_000)
    holdout_range: Sequence[int] | None = (45_000, 50_000)
    smoothing: float | int = 0.0
    root: str | os.PathLike | None = None
    download: bool = True

    name: ClassVar[str] = "cifar10"
    channels: ClassVar[int] = 3
    dim: ClassVar[int] = 2
    native_grid: ClassVar[tuple[int, ...]] = (32, 32)
    value_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)
    num_classes: ClassVar[int | None] = 10

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"`split` must be one of {sorted(SPLITS)}, got {self.split!r}.")
        train, holdout = index_ranges(self.train_range, self.holdout_range)
        object.__setattr__(self, "train_range", train)
        object.__setattr__(self, "holdout_range", holdout)
        if not self.smoothing >= 0:
            raise ValueError(f"`smoothing` must be >= 0 (pixels), got {self.smoothing}.")
        for part in ("train", "holdout"):  # at start-up, not after reading the tarball
            if getattr(self, f"{part}_range") is not None:
                part_range(part, train, holdout, SPLIT_SIZES[self.split], f"split {self.split!r}")

    def load(self, part: str) -> Examples:
        """The uint8 images `(N, 3, 32, 32)` and int64 labels `(N,)` of `"train"` or `"holdout"`."""
        part_range(part, self.train_range, self.holdout_range, 10**9, "CIFAR-10")  # part, before reading
        images, labels = load_cifar10(self.split, root=self.root, download_missing=self.download)
        start, stop = part_range(part, self.train_range, self.holdout_range, len(images), f"split {self.split!r}")
        return Examples(values=np.array(images[start:stop]), labels=labels[start:stop])

    def converter(self, grid: int | Sequence[int]) -> ImageConverter:
        """Images `(B, 3, 32, 32)` to float32 functions `(B, 3, *grid)` (see `ImageConverter`)."""
        return ImageConverter(image_shape=IMAGE_SHAPE, pad=0, grid=as_grid(grid, 2), smoothing=float(self.smoothing))
