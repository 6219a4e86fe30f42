"""Fashion-MNIST (Zalando's article images) from the official IDX gzip files, as a data source.

The data set has the layout of MNIST: 28 x 28 grey images with labels 0-9 (T-shirt/top, trouser,
pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot), a train split of 60,000 and a
t10k split of 10,000, in four files of the same IDX gzip format:

| file | content | MD5 of the `.gz` |
|---|---|---|
| `train-images-idx3-ubyte.gz` | 60,000 x 28 x 28 | `8d4fb7e6...88bf0d` |
| `train-labels-idx1-ubyte.gz` | 60,000 | `25c81989...5dffbe` |
| `t10k-images-idx3-ubyte.gz` | 10,000 x 28 x 28 | `bef4ecab...940ec79` |
| `t10k-labels-idx1-ubyte.gz` | 10,000 | `bb300cfd...83cd310` |

Only the MD5 checksums of the archives are published, so a file is verified by the MD5 of the
`.gz` itself: a copy that was decompressed and compressed again is refused (put the official
archive there). The folder is, in this order: the `root` argument (config field `data.root`), the
environment variable `SDEFLOW_FASHION_MNIST_ROOT`, or `~/.cache/sdeflow/fashion_mnist`.
"""

import dataclasses
from typing import ClassVar, final

from . import idx
from .source import DataError

ROOT_ENV = "SDEFLOW_FASHION_MNIST_ROOT"

MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
"""The official download links of the project's README, then the copy in its repository."""

SPLITS, SPLIT_SIZES = idx.SPLITS, idx.SPLIT_SIZES  # the same four file names and sizes

ARCHIVE_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
"""MD5 of the official `.gz` archives, as published in the "Get the Data" table of the README of
github.com/zalandoresearch/fashion-mnist (the same values torchvision's FashionMNIST checks)."""


class FashionMnistError(DataError):
    """Fashion-MNIST files are missing, corrupt or cannot be downloaded."""


FASHION_MNIST = idx.IdxDataset(
    title="Fashion-MNIST",
    slug="fashion_mnist",
    splits=SPLITS,
    sizes=SPLIT_SIZES,
    content_sha256={},
    archive_checksums={name: ("md5", digest) for name, digest in ARCHIVE_MD5.items()},
    mirrors=MIRRORS,
    root_env=ROOT_ENV,
    error=FashionMnistError,
    hint=("On a machine that holds only the t10k files, use data.split=t10k data.train_range=[0,8000] "
         "data.holdout_range=[8000,10000]."),
)
"""The Fashion-MNIST files for the shared IDX loader."""


@final
@dataclasses.dataclass(frozen=True)
class FashionMnistSource(idx.IdxSource):
    """Fashion-MNIST as functions on $[0, 1)^2$: 1 channel, native grid 32 x 32, values in $[-1, 1]$.

    The images become functions exactly as MNIST digits do (padded with background to 32 x 32,
    mapped to $[-1, 1]$, optionally blurred, resampled spectrally).

    **Fields:** as `train.data.idx.IdxSource`: `split` (`"train"`, 60,000 images, or `"t10k"`,
    10,000), `train_range`, `holdout_range` (disjoint), `smoothing` (default 0.6 pixel), `root`
    (else `$SDEFLOW_FASHION_MNIST_ROOT`, else `~/.cache/sdeflow/fashion_mnist`), `download`.

    `load` raises `FashionMnistError` for missing or corrupt files.
    """

    name: ClassVar[str] = "fashion_mnist"

    def dataset(self) -> idx.IdxDataset:
        return FASHION_MNIST
