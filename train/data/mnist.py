"""The MNIST digits from the official IDX gzip files: locate, download, verify and parse.

The four official files are

| file | images | SHA-256 of the decompressed IDX bytes |
|---|---|---|
| `train-images-idx3-ubyte.gz` | 60,000 x 28 x 28 | `ba891046...25776db` |
| `train-labels-idx1-ubyte.gz` | 60,000 | `65a50cbb...f7101c5` |
| `t10k-images-idx3-ubyte.gz` | 10,000 x 28 x 28 | `0fa7898d...d494ce7` |
| `t10k-labels-idx1-ubyte.gz` | 10,000 | `ff7bcfd4...c33f2` |

The checksum that is verified is the one of the *decompressed* IDX bytes: it identifies the data,
whereas the bytes of the `.gz` archive also hold a gzip header (a time stamp, a file name) that
differs between mirrors of the same data (the copy on the development machines is such a re-gzipped
archive). The archive checksums of the official distribution are kept in `ARCHIVE_SHA256` and
accepted as well.

The folder holding the files is, in this order: the `root` argument (config field `data.root`),
the environment variable `SDEFLOW_MNIST_ROOT`, or `~/.cache/sdeflow/mnist`.

The loading itself is the IDX loader shared with Fashion-MNIST (`train.data.idx`); `MnistSource`
is MNIST as a data source (`train.data.source.AbstractSource`).
"""

import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import ClassVar, final

import numpy as np

from . import idx
from .source import DataError

ROOT_ENV = "SDEFLOW_MNIST_ROOT"
DEFAULT_ROOT = pathlib.Path("~/.cache/sdeflow/mnist")

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

SPLITS, SPLIT_SIZES = idx.SPLITS, idx.SPLIT_SIZES  # the same four file names and sizes

CONTENT_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
"""SHA-256 of the decompressed IDX bytes of each official file."""

ARCHIVE_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
"""SHA-256 of the official `.gz` archives as served by the mirrors."""


class MnistError(DataError):
    """MNIST files are missing, corrupt or cannot be downloaded."""


MNIST = idx.IdxDataset(
    title="MNIST",
    slug="mnist",
    splits=SPLITS,
    sizes=SPLIT_SIZES,
    content_sha256=CONTENT_SHA256,
    archive_checksums={name: ("sha256", digest) for name, digest in ARCHIVE_SHA256.items()},
    mirrors=MIRRORS,
    root_env=ROOT_ENV,
    error=MnistError,
    hint="On a machine that holds only the t10k files, use data=mnist_t10k (t10k[0:8000] to train, t10k[8000:10000] held out).",
)
"""The MNIST files for the shared IDX loader."""


@dataclasses.dataclass(frozen=True)
class Mnist:
    """A slice of one MNIST split.

    **Fields:**

    - `images`: uint8 array of shape `(N, 28, 28)`, 0 = background, 255 = ink.
    - `labels`: uint8 array of shape `(N,)`, the digits.
    - `split`: `"train"` or `"t10k"`.
    - `start`, `stop`: the index range of the split that these are.
    """

    images: np.ndarray
    labels: np.ndarray
    split: str
    start: int
    stop: int


def resolve_root(root: str | os.PathLike | None = None) -> pathlib.Path:
    """The folder of the MNIST files: `root` if given, else `$SDEFLOW_MNIST_ROOT`, else `~/.cache/sdeflow/mnist`."""
    return idx.resolve_root(MNIST, root)


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file of unsigned bytes.

    **Arguments:**

    - `data`: the file's content.
    - `name`: the file's name, used in error messages.

    **Returns:**

    The array with the dimensions stored in the header.
    """
    return idx.parse_idx(data, name, MnistError)


def download(name: str, root: pathlib.Path, mirrors: Sequence[str] = MIRRORS, timeout: float = 30.0) -> None:
    """Download one official file into `root`, through a temporary file and an atomic rename.

    The download is verified (archive or content checksum) before it is renamed into place.

    **Arguments:**

    - `name`: the file name, e.g. `"t10k-images-idx3-ubyte.gz"`.
    - `root`: the destination folder (created if needed).
    - `mirrors`: base URLs tried in order.
    - `timeout`: seconds per connection attempt.
    """
    idx.download(MNIST, name, root, mirrors, timeout)


def load_mnist(
    split: str = "t10k",
    index_range: Sequence[int] | None = None,
    *,
    root: str | os.PathLike | None = None,
    download_missing: bool = True,
) -> Mnist:
    """Load (a range of) one MNIST split from the official IDX gzip files, verified by checksum.

    **Arguments:**

    - `split`: `"train"` (60,000 digits) or `"t10k"` (10,000 digits).
    - `index_range`: `[start, stop]` within the split, or `None` for all of it.
    - `root`: the folder of the files (see `resolve_root`).
    - `download_missing`: whether to download missing files from the official mirrors; without
        network (or with `False`) a missing file raises an error saying where to put which file.

    **Returns:**

    An `Mnist` with uint8 `images` `(N, 28, 28)` and `labels` `(N,)`.
    """
    images, labels, start, stop = idx.load_idx(
        MNIST, split, index_range, root=root, download_missing=download_missing
    )
    return Mnist(images=images, labels=labels, split=split, start=start, stop=stop)


@final
@dataclasses.dataclass(frozen=True)
class MnistSource(idx.IdxSource):
    """The MNIST digits as functions on $[0, 1)^2$: 1 channel, native grid 32 x 32, values in $[-1, 1]$.

    **Fields:** as `train.data.idx.IdxSource`: `split` (`"train"`, 60,000 digits, or `"t10k"`,
    10,000), `train_range`, `holdout_range` (disjoint), `smoothing` (default 0.6 pixel), `root`
    (else `$SDEFLOW_MNIST_ROOT`, else `~/.cache/sdeflow/mnist`), `download`.

    `converter(n)` gives exactly `images_to_functions(images, n, smoothing)`; `load` raises
    `MnistError` for missing or corrupt files.
    """

    name: ClassVar[str] = "mnist"

    def dataset(self) -> idx.IdxDataset:
        return MNIST
