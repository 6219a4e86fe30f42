"""Data sources: MNIST, Fashion-MNIST, CIFAR-10 and generated fields behind one interface.

Fashion-MNIST and CIFAR-10 are tested on small files written here in the official formats (IDX
gzip, the python tarball of pickled batches); their checksums cannot be the official ones, so
the tests put the synthetic files' checksums into the tables, and check separately that the
official tables refuse them.
"""

import dataclasses
import gzip
import hashlib
import io
import logging
import pickle
import urllib.error
import urllib.request

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cifar_batch, write_tarball

import sdeflow
from train.data import (
    AbstractSource,
    Cifar10Error,
    Cifar10Source,
    FashionMnistError,
    FashionMnistSource,
    GeneratedDataError,
    GeneratedSource,
    MnistSource,
    as_grid,
    batches,
    cifar10,
    fashion_mnist,
    gaussian_fields,
    generated,
    images_to_functions,
    load_mnist,
    make_dataset,
    make_source,
    matern_spectrum,
)


def _restrict(batch: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    return np.stack([np.asarray(sdeflow.restrict(jnp.asarray(u), grid)) for u in batch])


def _offline(*args, **kwargs):
    raise urllib.error.URLError("no network")


# ----------------------------------------------------------------------------- the interface


def test_as_grid():
    assert as_grid(16, 2) == (16, 16) and as_grid(8, 1) == (8,)
    assert as_grid([16, 24], 2) == (16, 24)
    with pytest.raises(ValueError, match="2 sizes"):
        as_grid((16,), 2)
    with pytest.raises(ValueError, match="positive"):
        as_grid(0, 2)


def test_attributes_and_ranges(tmp_path):
    mnist = MnistSource(split="t10k", train_range=[0, 8000], holdout_range=[8000, 10000])
    fashion = FashionMnistSource(split="t10k", train_range=[0, 8000], holdout_range=[8000, 10000])
    cifar = Cifar10Source()
    field = GeneratedSource("grf", "gaussian_fields", count=8, native_grid=(16, 16), channels=2, cache_dir=tmp_path)
    line = GeneratedSource("grf1d", "gaussian_fields", count=8, native_grid=32, dim=1, cache_dir=tmp_path)
    for source, attributes in (
        (mnist, ("mnist", 1, 2, (32, 32), (-1.0, 1.0), 10)),
        (fashion, ("fashion_mnist", 1, 2, (32, 32), (-1.0, 1.0), 10)),
        (cifar, ("cifar10", 3, 2, (32, 32), (-1.0, 1.0), 10)),
        (field, ("grf", 2, 2, (16, 16), (-np.inf, np.inf), None)),
        (line, ("grf1d", 1, 1, (32,), (-np.inf, np.inf), None)),
    ):
        assert isinstance(source, AbstractSource)
        got = (source.name, source.channels, source.dim, source.native_grid, source.value_range, source.num_classes)
        assert got == attributes
        assert pickle.loads(pickle.dumps(source)) == source  # grain workers receive sources intact
        converter = source.converter(8)
        assert pickle.loads(pickle.dumps(converter)) == converter
    assert mnist.train_range == (0, 8000) and mnist.holdout_range == (8000, 10000)
    for cls, split in ((MnistSource, "t10k"), (FashionMnistSource, "t10k"), (Cifar10Source, "test")):
        with pytest.raises(ValueError, match="overlap"):
            cls(split=split, train_range=[0, 9000], holdout_range=[8000, 10000])
        with pytest.raises(ValueError, match="overlap"):
            cls(split=split, train_range=None, holdout_range=[8000, 10000])
        with pytest.raises(ValueError, match="split"):
            cls(split="validation")
    with pytest.raises(ValueError, match=r"stop <= 10000"):
        MnistSource(split="t10k", train_range=[0, 8000], holdout_range=[8000, 12000])
    with pytest.raises(ValueError, match="overlap"):
        GeneratedSource("g", "gaussian_fields", count=8, native_grid=8, dim=1, train_range=[0, 6], holdout_range=[5, 8])
    with pytest.raises(ValueError, match="part"):
        mnist.load("test")
    with pytest.raises(ValueError, match="unknown generator"):
        GeneratedSource("g", "no_such_generator")


def test_make_source(tmp_path):
    source = make_source("mnist", split="t10k", train_range=[0, 8000], holdout_range=[8000, 10000], smoothing=0.6)
    assert source == MnistSource("t10k", (0, 8000), (8000, 10000), 0.6)
    generated_source = make_source("generated", name="g", generator="gaussian_fields", native_grid=[8, 8],
                                   params={"tau": 2.0}, count=4, cache_dir=str(tmp_path))
    assert generated_source.native_grid == (8, 8) and generated_source.params == {"tau": 2.0}
    default = make_source("generated", cache_dir=str(tmp_path))  # Gaussian fields on the 64 x 64 grid
    assert (default.name, default.generator, default.native_grid, default.dim) == ("generated", "gaussian_fields",
                                                                                   (64, 64), 2)
    with pytest.raises(ValueError, match="known.*cifar10"):
        make_source("imagenet")
    with pytest.raises(ValueError, match=r"no field\(s\) \['worker_count'\]"):
        make_source("cifar10", worker_count=0)


# ----------------------------------------------------------------------------- MNIST (real t10k)


def test_mnist_source_is_the_mnist_pipeline():
    source = MnistSource(split="t10k", train_range=(0, 8000), holdout_range=(8000, 10000), smoothing=0.6,
                         download=False)
    held = source.load("holdout")
    reference = load_mnist("t10k", (8000, 10000), download_missing=False)
    assert held.values.shape == (2000, 28, 28) and held.values.dtype == np.uint8
    np.testing.assert_array_equal(held.values, reference.images)
    assert held.labels.dtype == np.int64
    np.testing.assert_array_equal(held.labels, reference.labels)
    images = held.values[:6]
    for grid in (16, 32, 64):
        np.testing.assert_array_equal(source.to_functions(images, grid), images_to_functions(images, grid, 0.6))
    exact = MnistSource(split="t10k", train_range=(0, 8000), holdout_range=None, smoothing=0).to_functions(images, 32)
    assert exact.min() == -1.0 and exact.max() == 1.0  # the value range, attained at the native grid
    np.testing.assert_allclose(exact[:, 0, 2:30, 2:30], images / 127.5 - 1.0, atol=1e-6)
    assert source.to_functions(images, (16, 24)).shape == (6, 1, 16, 24)


# ----------------------------------------------------------------------------- Fashion-MNIST (synthetic)


def _idx_gz(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    """A folder of small Fashion-MNIST files (train 12, t10k 6 images) and the tables that accept them."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion"
    folder.mkdir()
    content, checksums = {}, {}
    for split, size in (("train", 12), ("t10k", 6)):
        images = rng.integers(0, 256, (size, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size, dtype=np.uint8)
        for name, array in zip(fashion_mnist.SPLITS[split], (images, labels), strict=True):
            data = _idx_gz(array)
            (folder / name).write_bytes(data)
            checksums[name] = ("md5", hashlib.md5(data).hexdigest())
        content[split] = (images, labels)
    official = fashion_mnist.FASHION_MNIST
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST", dataclasses.replace(
        official, sizes={"train": 12, "t10k": 6}, archive_checksums=checksums))
    monkeypatch.delenv(fashion_mnist.ROOT_ENV, raising=False)
    return folder, content, official


def test_fashion_mnist_loads_parts(fashion, monkeypatch):
    folder, content, _ = fashion
    source = FashionMnistSource(split="train", train_range=[0, 9], holdout_range=[9, 12], smoothing=0.0,
                                root=folder, download=False)
    train, held = source.load("train"), source.load("holdout")
    images, labels = content["train"]
    np.testing.assert_array_equal(train.values, images[:9])
    np.testing.assert_array_equal(held.values, images[9:])
    np.testing.assert_array_equal(np.concatenate([train.labels, held.labels]), labels)
    u = source.to_functions(held.values, 32)
    assert u.shape == (3, 1, 32, 32) and u.dtype == np.float32
    assert -1.0 <= u.min() and u.max() <= 1.0
    np.testing.assert_allclose(u[:, 0, 2:30, 2:30], images[9:] / 127.5 - 1.0, atol=1e-6)
    assert np.all(u[:, 0, :2] == -1.0)  # the padding is background
    # The folder from the environment variable; the test split.
    monkeypatch.setenv(fashion_mnist.ROOT_ENV, str(folder))
    test = FashionMnistSource(split="t10k", train_range=[0, 4], holdout_range=[4, 6], download=False)
    np.testing.assert_array_equal(test.load("holdout").values, content["t10k"][0][4:])
    with pytest.raises(ValueError, match="stop <= 6"):
        FashionMnistSource(split="t10k", train_range=[0, 4], holdout_range=[4, 8])


def test_fashion_mnist_missing_files(fashion, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    source = FashionMnistSource(split="t10k", train_range=[0, 4], holdout_range=[4, 6], root=empty, download=False)
    with pytest.raises(FashionMnistError) as info:
        source.load("train")
    message = str(info.value)
    for name in fashion_mnist.SPLITS["t10k"]:
        assert str(empty / name) in message
    assert "SDEFLOW_FASHION_MNIST_ROOT" in message and "data.root" in message
    assert "fashion-mnist.s3-website" in message and "downloading is disabled" in message
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    with pytest.raises(FashionMnistError, match="download failed.*no network") as info:
        dataclasses.replace(source, download=True).load("train")
    assert str(empty / fashion_mnist.SPLITS["t10k"][0]) in str(info.value)
    assert not empty.exists()  # no partial files or empty folders left behind


def test_fashion_mnist_download_is_verified(fashion, tmp_path, monkeypatch):
    folder, content, _ = fashion
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        data = (folder / url.rsplit("/", 1)[1]).read_bytes()
        return io.BytesIO(data[: len(data) // 2] if url.startswith(fashion_mnist.MIRRORS[0]) else data)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    source = FashionMnistSource(split="t10k", train_range=[0, 4], holdout_range=[4, 6], root=tmp_path / "new")
    np.testing.assert_array_equal(source.load("train").values, content["t10k"][0][:4])
    assert len(calls) == 4  # each truncated copy was refused and the second mirror used
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(fashion_mnist.SPLITS["t10k"])


def test_fashion_mnist_corrupt_files_refused(fashion, monkeypatch):
    folder, _, official = fashion
    source = FashionMnistSource(split="t10k", train_range=[0, 4], holdout_range=[4, 6], root=folder, download=False)
    images_name, labels_name = fashion_mnist.SPLITS["t10k"]
    path = folder / labels_name
    good = path.read_bytes()
    broken = bytearray(good)
    broken[len(broken) // 2] ^= 0xFF
    path.write_bytes(bytes(broken))
    with pytest.raises(FashionMnistError, match=f"{labels_name}.*corrupt"):
        source.load("train")
    # A valid archive of other content has another MD5.
    path.write_bytes(_idx_gz(np.zeros(6, dtype=np.uint8)))
    with pytest.raises(FashionMnistError, match=f"{labels_name}: checksum mismatch: its MD5"):
        source.load("train")
    path.write_bytes(good)
    source.load("train")
    # The official table refuses these synthetic files, naming the file and the published MD5.
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST", dataclasses.replace(official, sizes={"train": 12, "t10k": 6}))
    published = fashion_mnist.ARCHIVE_MD5[images_name]
    with pytest.raises(FashionMnistError, match=f"{images_name}: checksum mismatch.*{published}"):
        source.load("train")


# ----------------------------------------------------------------------------- CIFAR-10 (synthetic)


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    """A small cifar-10-python.tar.gz: five data batches of 2 images, a test batch of 3."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (13, 3, 32, 32), dtype=np.uint8)
    images[0, 0], images[0, 1], images[0, 2] = 255, 0, 128  # red, no green, half blue
    images[1, 0] = np.arange(32, dtype=np.uint8)[:, None] * 8  # red increasing down the rows
    labels = [int(v) for v in rng.integers(0, 10, 13)]
    members = {f"cifar-10-batches-py/data_batch_{i + 1}": cifar_batch(images[2 * i : 2 * i + 2], labels[2 * i : 2 * i + 2])
               for i in range(5)}
    members["cifar-10-batches-py/test_batch"] = cifar_batch(images[10:], labels[10:])
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [b"airplane"]}, protocol=2)
    folder = tmp_path / "cifar"
    folder.mkdir()
    md5 = write_tarball(folder / cifar10.ARCHIVE, members)
    monkeypatch.setitem(cifar10.ARCHIVE_MD5, cifar10.ARCHIVE, md5)
    monkeypatch.delenv(cifar10.ROOT_ENV, raising=False)
    return folder, images, np.array(labels), members


def test_cifar10_loads_rgb_planes(cifar):
    folder, images, labels, _ = cifar
    source = Cifar10Source(split="train", train_range=[0, 8], holdout_range=[8, 10], root=folder, download=False)
    train, held = source.load("train"), source.load("holdout")
    assert train.values.shape == (8, 3, 32, 32) and train.values.dtype == np.uint8
    np.testing.assert_array_equal(np.concatenate([train.values, held.values]), images[:10])
    np.testing.assert_array_equal(np.concatenate([train.labels, held.labels]), labels[:10])
    u = source.to_functions(train.values, 32)
    assert u.shape == (8, 3, 32, 32) and u.dtype == np.float32 and -1.0 <= u.min() and u.max() <= 1.0
    np.testing.assert_array_equal(u[0, 0], 1.0)  # the red plane lands in channel 0
    np.testing.assert_array_equal(u[0, 1], -1.0)
    np.testing.assert_allclose(u[0, 2], 128 / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_allclose(u[1, 0, :, 5], np.arange(32) * 8 / 127.5 - 1.0, atol=1e-6)  # rows are rows
    test = Cifar10Source(split="test", train_range=[0, 1], holdout_range=[1, 3], root=folder, download=False)
    np.testing.assert_array_equal(test.load("holdout").values, images[11:])
    with pytest.raises(ValueError, match="stop <= 3"):
        Cifar10Source(split="test", train_range=[0, 1], holdout_range=[1, 4], root=folder).load("holdout")
    assert source.to_functions(train.values[:2], (16, 48)).shape == (2, 3, 16, 48)


def test_cifar10_missing_and_corrupt(cifar, tmp_path, monkeypatch):
    folder, _, _, members = cifar
    empty = tmp_path / "empty"
    # ranges beyond the split are refused when the source is built, before the files are read
    with pytest.raises(ValueError, match=r"`train_range` \[0, 45000\] must satisfy stop <= 10000"):
        Cifar10Source(split="test", root=empty, download=False)
    source = Cifar10Source(split="test", train_range=[0, 1], holdout_range=[1, 3], root=empty, download=False)
    with pytest.raises(Cifar10Error) as info:
        source.load("train")
    message = str(info.value)
    assert str(empty / "cifar-10-python.tar.gz") in message and "SDEFLOW_CIFAR10_ROOT" in message
    assert "data.root" in message and "www.cs.toronto.edu" in message
    monkeypatch.setattr(urllib.request, "urlopen", _offline)
    with pytest.raises(Cifar10Error, match="download failed.*no network") as info:
        dataclasses.replace(source, download=True).load("train")
    assert str(empty / "cifar-10-python.tar.gz") in str(info.value) and not empty.exists()
    # The official MD5 refuses the synthetic tarball, naming it and the published MD5.
    official = Cifar10Source(split="test", train_range=[0, 1], holdout_range=[1, 3], root=folder, download=False)
    monkeypatch.setitem(cifar10.ARCHIVE_MD5, cifar10.ARCHIVE, "c58f30108f718f92721af3b95e74349a")
    with pytest.raises(Cifar10Error, match="tar.gz: checksum mismatch.*c58f30108f718f92721af3b95e74349a"):
        official.load("train")
    # A truncated tarball (whose checksum were right) and a batch with a foreign object are refused.
    path = folder / cifar10.ARCHIVE
    path.write_bytes(path.read_bytes()[:-200])
    monkeypatch.setitem(cifar10.ARCHIVE_MD5, cifar10.ARCHIVE, hashlib.md5(path.read_bytes()).hexdigest())
    with pytest.raises(Cifar10Error, match="cifar-10-python.tar.gz.*corrupt"):
        official.load("train")
    evil = dict(members)
    evil["cifar-10-batches-py/test_batch"] = pickle.dumps({b"data": print, b"labels": []}, protocol=2)
    monkeypatch.setitem(cifar10.ARCHIVE_MD5, cifar10.ARCHIVE, write_tarball(path, evil))
    with pytest.raises(Cifar10Error, match="test_batch: not a CIFAR-10 batch.*unexpected object .*print"):
        official.load("train")
    del evil["cifar-10-batches-py/test_batch"]
    monkeypatch.setitem(cifar10.ARCHIVE_MD5, cifar10.ARCHIVE, write_tarball(path, evil))
    with pytest.raises(Cifar10Error, match="lacks cifar-10-batches-py/test_batch"):
        official.load("train")


def test_cifar10_download(cifar, tmp_path, monkeypatch):
    folder, images, _, _ = cifar
    served = (folder / cifar10.ARCHIVE).read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(served))
    source = Cifar10Source(split="test", train_range=[0, 1], holdout_range=[1, 3], root=tmp_path / "new")
    np.testing.assert_array_equal(source.load("train").values, images[10:11])
    assert [p.name for p in (tmp_path / "new").iterdir()] == [cifar10.ARCHIVE]


def test_image_sources_are_one_function_on_every_grid(cifar):
    folder, images, _, _ = cifar
    for smoothing in (0.0, 0.8):
        source = Cifar10Source(split="train", train_range=[0, 10], holdout_range=None, smoothing=smoothing,
                               root=folder, download=False)
        fine = source.to_functions(images[:3], 64)
        for n in (16, 32):
            np.testing.assert_allclose(_restrict(fine, (n, n)), source.to_functions(images[:3], n), atol=2e-5)
    with pytest.raises(ValueError, match="no holdout part"):
        source.load("holdout")


# ----------------------------------------------------------------------------- generated fields


@pytest.fixture
def counted(monkeypatch):
    """A registered generator `counted` (gaussian_fields) that records its calls."""
    calls = []

    def counted_fields(count, grid, channels, seed, **params):
        calls.append(params)
        return gaussian_fields(count, grid, channels, seed, **params)

    monkeypatch.setitem(generated.GENERATORS, "counted", counted_fields)
    return calls


def test_generated_cache_written_reused_and_keyed(tmp_path, counted, monkeypatch):
    source = GeneratedSource("grf", "counted", {"tau": 4.0, "s": 1.5}, count=10, native_grid=(16, 16),
                             channels=2, train_range=[0, 8], holdout_range=[8, 10], cache_dir=tmp_path)
    train = source.load("train")
    assert train.values.shape == (8, 2, 16, 16) and train.values.dtype == np.float32 and train.labels is None
    path = source.cache_path()
    assert path.parent == tmp_path and path.name.startswith("grf-counted-")
    assert path.with_suffix(".sha256").read_text().split() == [hashlib.sha256(path.read_bytes()).hexdigest(), path.name]
    assert '"tau": 4.0' in path.with_suffix(".json").read_text()
    # Another source of the same parameters reads the cache: the generator is not called again.
    same = GeneratedSource("grf", "counted", {"s": 1.5, "tau": 4.0}, count=10, native_grid=[16, 16], channels=2,
                           train_range=[0, 8], holdout_range=[8, 10], cache_dir=tmp_path)
    held = same.load("holdout")
    assert len(counted) == 1 and held.values.shape == (2, 2, 16, 16)
    np.testing.assert_array_equal(np.concatenate([train.values, held.values]), np.load(path))
    # Every parameter is part of the key.
    variants = [dataclasses.replace(source, params={"tau": 4.0, "s": 2.0}), dataclasses.replace(source, seed=1),
                dataclasses.replace(source, count=12), dataclasses.replace(source, channels=1),
                dataclasses.replace(source, native_grid=(16, 8))]
    paths = {path} | {v.cache_path() for v in variants}
    assert len(paths) == 6
    other = variants[0].load("train").values
    assert len(counted) == 2 and not np.allclose(other, train.values)
    # A generator registered again with a higher version (its output changed) is not read from
    # the old cache: the key holds the version, and the generator runs again.
    counter = generated.GENERATORS["counted"]
    monkeypatch.setattr(counter, "version", getattr(counter, "version", 1) + 1, raising=False)
    assert source.cache_path() not in paths
    source.load("train")
    assert len(counted) == 3


def test_generated_cache_default_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(generated.CACHE_ENV, str(tmp_path / "cache"))
    source = GeneratedSource("g", "gaussian_fields", count=2, native_grid=8, dim=1)
    assert source.cache_path().parent == tmp_path / "cache"


def test_generated_corrupt_cache_is_regenerated(tmp_path, counted, caplog):
    source = GeneratedSource("grf", "counted", count=6, native_grid=32, dim=1, cache_dir=tmp_path)
    first = source.load("train").values
    path = source.cache_path()
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # a flipped bit in the last field
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="train.data"):
        again = source.load("train").values
    np.testing.assert_array_equal(again, first)
    assert len(counted) == 2
    [record] = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert str(path) in record.getMessage() and "SHA-256" in record.getMessage() and "\n" not in record.getMessage()
    path.with_suffix(".sha256").unlink()  # no checksum: not trusted either
    source.load("train")
    assert len(counted) == 3
    source.load("train")
    assert len(counted) == 3


def test_generated_values_are_checked(tmp_path, monkeypatch):
    monkeypatch.setitem(generated.GENERATORS, "wide", lambda count, grid, channels, seed: np.full(
        (count, channels, *grid), 5.0, dtype=np.float32))
    monkeypatch.setitem(generated.GENERATORS, "wrong", lambda count, grid, channels, seed: np.zeros((count, *grid)))
    with pytest.raises(GeneratedDataError, match=r"values from 5.0 to 5.0 lie outside the value_range \[-1.0, 1.0\]"):
        wide = GeneratedSource("w", "wide", count=2, native_grid=4, dim=1, value_range=(-1, 1), cache_dir=tmp_path)
        wide.load("train")
    with pytest.raises(GeneratedDataError, match=r"expected float32 of shape \(2, 1, 4\)"):
        GeneratedSource("w", "wrong", count=2, native_grid=4, dim=1, cache_dir=tmp_path).load("train")
    assert list(tmp_path.iterdir()) == []  # bad fields are not cached


@pytest.mark.parametrize("grid", [(64,), (16, 12)])
def test_generated_fields_are_one_function_on_every_grid(tmp_path, grid):
    source = GeneratedSource("grf", "gaussian_fields", {"tau": 2.0, "s": 1.5}, count=4, native_grid=grid,
                             channels=2, cache_dir=tmp_path)
    values = source.load("train").values
    assert values.shape == (4, 2, *grid)
    np.testing.assert_array_equal(source.to_functions(values, grid), values)  # exact at the native grid
    fine = source.to_functions(values, tuple(2 * n for n in grid))
    assert fine.shape == (4, 2, *(2 * n for n in grid)) and fine.dtype == np.float32
    np.testing.assert_allclose(_restrict(fine, grid), values, atol=1e-5)
    coarse = tuple(n // 2 for n in grid)
    np.testing.assert_allclose(_restrict(fine, coarse), source.to_functions(values, coarse), atol=1e-5)
    np.testing.assert_allclose(fine.mean(axis=tuple(range(2, fine.ndim))),
                               values.mean(axis=tuple(range(2, values.ndim))), atol=1e-5)


def test_gaussian_fields_variance_matches_the_spectrum():
    # 1-D, unscaled spectrum: pointwise variance sum_k lambda_k, covariance sum_k lambda_k cos(2 pi k h).
    grid, tau, s = (64,), 3.0, 1.0
    u = gaussian_fields(1000, grid, channels=2, seed=0, tau=tau, s=s, variance=None).reshape(-1, 64)
    spectrum = matern_spectrum(grid, tau, s)
    k = np.fft.fftfreq(64, d=1.0 / 64)
    for lag in (0, 1, 4):
        per_field = (u * np.roll(u, lag, axis=1)).mean(axis=1)  # stationary: average over the points
        expected = float(np.sum(spectrum * np.cos(2 * np.pi * k * lag / 64)))
        error = per_field.std(ddof=1) / np.sqrt(len(per_field))
        assert abs(per_field.mean() - expected) < 4 * error, (lag, per_field.mean(), expected, error)
    per_field_mean = u.mean(axis=1)
    assert abs(per_field_mean.mean()) < 4 * per_field_mean.std(ddof=1) / np.sqrt(len(per_field_mean))
    # 2-D, scaled to variance 2.
    v = gaussian_fields(500, 16, seed=3, dim=2, tau=5.0, s=2.0, variance=2.0)
    assert v.shape == (500, 1, 16, 16) and v.dtype == np.float32
    np.testing.assert_allclose(matern_spectrum((16, 16), 5.0, 2.0, 2.0).sum(), 2.0)
    per_field = (v**2).mean(axis=(1, 2, 3))
    assert abs(per_field.mean() - 2.0) < 4 * per_field.std(ddof=1) / np.sqrt(len(per_field))
    # Deterministic in the seed.
    np.testing.assert_array_equal(gaussian_fields(3, (8, 8), seed=3), gaussian_fields(3, (8, 8), seed=3))
    assert not np.array_equal(gaussian_fields(3, (8, 8), seed=3), gaussian_fields(3, (8, 8), seed=4))


# ----------------------------------------------------------------------------- the pipeline


def test_pipeline_with_any_source(cifar, tmp_path):
    folder, images, _, _ = cifar
    source = Cifar10Source(split="train", train_range=[0, 10], holdout_range=None, root=folder, download=False)
    values = source.load("train").values
    dataset = make_dataset(values, source.converter(16), batch_size=4, seed=2)
    iterator = batches(dataset)
    stream = [next(iterator) for _ in range(4)]
    assert all(b.shape == (4, 3, 16, 16) and b.dtype == np.float32 for b in stream)
    state = iterator.get_state()
    # The state carries over to another grid; converting batch by batch gives the same batches.
    finer = batches(make_dataset(values, source.converter(32), batch_size=4, seed=2), state)
    resumed = batches(dataset, state)
    expected = next(resumed)
    np.testing.assert_allclose(_restrict(next(finer), (16, 16)), expected, atol=2e-5)
    lazy = batches(make_dataset(values, source.converter(16), batch_size=4, seed=2, precompute=False), state)
    np.testing.assert_allclose(next(lazy), expected, atol=1e-6)
    # Generated fields, converted in a worker process (the converter is pickled to it).
    field = GeneratedSource("grf", "gaussian_fields", count=12, native_grid=(8,), cache_dir=tmp_path)
    fields = field.load("train").values
    serial = batches(make_dataset(fields, field.converter(16), batch_size=3, seed=0, precompute=False))
    parallel = batches(make_dataset(fields, field.converter(16), batch_size=3, seed=0, precompute=False,
                                    worker_count=1))
    for _ in range(5):
        a, b = next(serial), next(parallel)
        assert a.shape == (3, 1, 16)
        np.testing.assert_array_equal(a, b)
