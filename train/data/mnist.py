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
"""

import dataclasses
import gzip
import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence

import numpy as np


ROOT_ENV = "SDEFLOW_MNIST_ROOT"
DEFAULT_ROOT = pathlib.Path("~/.cache/sdeflow/mnist")

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SPLIT_SIZES = {"train": 60_000, "t10k": 10_000}

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

_IDX_DTYPES = {0x08: np.dtype(np.uint8)}


class MnistError(RuntimeError):
    """MNIST files are missing, corrupt or cannot be downloaded."""


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
    if root is None or str(root) == "":
        root = os.environ.get(ROOT_ENV) or DEFAULT_ROOT
    return pathlib.Path(root).expanduser().resolve()


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file of unsigned bytes.

    **Arguments:**

    - `data`: the file's content.
    - `name`: the file's name, used in error messages.

    **Returns:**

    The array with the dimensions stored in the header.
    """
    if len(data) < 4:
        raise MnistError(f"{name}: not an IDX file (only {len(data)} bytes).")
    zero, dtype_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code not in _IDX_DTYPES or not 1 <= ndim <= 3:
        raise MnistError(
            f"{name}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000080N: unsigned bytes, "
            "N = 1 to 3 dimensions)."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MnistError(f"{name}: truncated IDX header ({len(data)} bytes, needs {header}).")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(dims))
    if len(data) != header + count:
        raise MnistError(
            f"{name}: the header announces dimensions {dims} ({count} values) but the file holds "
            f"{len(data) - header}; the file is truncated or corrupt."
        )
    return np.frombuffer(data, dtype=_IDX_DTYPES[dtype_code], offset=header).reshape(dims)


def _missing_message(root: pathlib.Path, missing: Sequence[str], reason: str) -> str:
    lines = "\n".join(f"  {root / name}" for name in missing)
    return (
        f"MNIST files missing ({reason}). Put these official files (the .gz archives, not "
        f"decompressed) here:\n{lines}\n"
        f"They are available from {MIRRORS[0]} (or {', '.join(MIRRORS[1:])}). To use another folder, "
        f"set the environment variable {ROOT_ENV}=/path/to/mnist or the config field "
        f"data.root=/path/to/mnist. On a machine that holds only the t10k files, use "
        f"data=mnist_t10k (or data.split=t10k)."
    )


def download(name: str, root: pathlib.Path, mirrors: Sequence[str] = MIRRORS, timeout: float = 30.0) -> None:
    """Download one official file into `root`, through a temporary file and an atomic rename.

    The download is verified (archive or content checksum) before it is renamed into place.

    **Arguments:**

    - `name`: the file name, e.g. `"t10k-images-idx3-ubyte.gz"`.
    - `root`: the destination folder (created if needed).
    - `mirrors`: base URLs tried in order.
    - `timeout`: seconds per connection attempt.
    """
    created = [p for p in (root, *root.parents) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    errors = []
    for base in mirrors:
        url = base + name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=root)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
            _verified_content(pathlib.Path(tmp), name)
            os.replace(tmp, root / name)
            return
        except (urllib.error.URLError, OSError, MnistError) as error:
            errors.append(f"{url}: {error}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    for folder in created:  # leave no empty folders behind
        if folder.exists() and not any(folder.iterdir()):
            folder.rmdir()
    raise MnistError("; ".join(errors))


def _verified_content(path: pathlib.Path, name: str) -> bytes:
    """The decompressed bytes of an official archive, after checking its checksum."""
    raw = path.read_bytes()
    try:
        content = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise MnistError(
            f"{path}: not a valid gzip archive ({error}); the file is truncated or corrupt. Delete it "
            "and put the official file there again (or let it be downloaded)."
        ) from None
    digest = hashlib.sha256(content).hexdigest()
    if digest != CONTENT_SHA256[name] and hashlib.sha256(raw).hexdigest() != ARCHIVE_SHA256[name]:
        raise MnistError(
            f"{path}: checksum mismatch: the SHA-256 of its decompressed content is {digest}, the "
            f"official {name} has {CONTENT_SHA256[name]}. The file is corrupt or not the official "
            "one; delete it and put the official file there again (or let it be downloaded)."
        )
    return content


def _check_range(index_range: Sequence[int] | None, size: int, split: str) -> tuple[int, int]:
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
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {sorted(SPLITS)}, got {split!r}.")
    start, stop = _check_range(index_range, SPLIT_SIZES[split], split)
    folder = resolve_root(root)
    names = SPLITS[split]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        if not download_missing:
            raise MnistError(_missing_message(folder, missing, "downloading is disabled"))
        for name in missing:
            try:
                download(name, folder)
            except MnistError as error:
                raise MnistError(
                    _missing_message(folder, missing, f"the download failed: {error}")
                ) from None
    images, labels = (parse_idx(_verified_content(folder / name, name), name) for name in names)
    if images.shape != (SPLIT_SIZES[split], 28, 28) or labels.shape != (SPLIT_SIZES[split],):
        raise MnistError(f"{folder}: unexpected shapes {images.shape}, {labels.shape} for split {split!r}.")
    return Mnist(
        images=np.array(images[start:stop]),
        labels=np.array(labels[start:stop]),
        split=split,
        start=start,
        stop=stop,
    )
