"""MNIST loading (files, checksums, IDX, download) and the grain pipeline of functions."""

import gzip
import io
import pathlib
import shutil
import urllib.error
import urllib.request

import jax.numpy as jnp
import numpy as np
import pytest

import sdeflow
from train.data import (
    MnistError,
    MnistSource,
    batches,
    images_to_functions,
    load_mnist,
    make_dataset,
    parse_idx,
    resolve_root,
)
from train.data import mnist as mnist_module

T10K = mnist_module.SPLITS["t10k"]


@pytest.fixture(scope="module")
def t10k():
    return load_mnist("t10k", download_missing=False)


def _copy_t10k(folder: pathlib.Path) -> pathlib.Path:
    for name in T10K:
        shutil.copy(resolve_root() / name, folder / name)
        (folder / name).chmod(0o644)
    return folder


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_t10k_split_and_ranges(t10k):
    assert t10k.images.shape == (10_000, 28, 28) and t10k.images.dtype == np.uint8
    # Every digit occurs, about a tenth of the time; the border of every image is background.
    counts = np.bincount(t10k.labels, minlength=10)
    assert counts.sum() == 10_000 and counts.min() > 850 and counts.max() < 1150
    train = load_mnist("t10k", (0, 8000), download_missing=False)
    held = load_mnist("t10k", [8000, 10000], download_missing=False)
    assert (train.start, train.stop, held.start, held.stop) == (0, 8000, 8000, 10000)
    np.testing.assert_array_equal(np.concatenate([train.images, held.images]), t10k.images)
    np.testing.assert_array_equal(np.concatenate([train.labels, held.labels]), t10k.labels)
    with pytest.raises(ValueError, match="index_range"):
        load_mnist("t10k", (9000, 12000), download_missing=False)
    with pytest.raises(ValueError, match="split"):
        load_mnist("test", download_missing=False)


def test_parse_idx_round_trip_and_errors():
    array = np.arange(2 * 3 * 5).reshape(2, 3, 5).astype(np.uint8)
    np.testing.assert_array_equal(parse_idx(_idx_bytes(array), "x.idx"), array)
    with pytest.raises(MnistError, match="x.idx.*truncated"):
        parse_idx(_idx_bytes(array)[:-1], "x.idx")
    with pytest.raises(MnistError, match="x.idx.*magic"):
        parse_idx(b"\x00\x00\x0d\x03" + _idx_bytes(array)[4:], "x.idx")


def test_missing_files_message(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist_module.ROOT_ENV, raising=False)
    with pytest.raises(MnistError) as info:
        load_mnist("train", root=tmp_path, download_missing=False)
    message = str(info.value)
    for name in mnist_module.SPLITS["train"]:
        assert str(tmp_path / name) in message
    assert "SDEFLOW_MNIST_ROOT" in message and "data.root" in message and "data=mnist_t10k" in message

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(MnistError, match="download failed.*no network") as info:
        load_mnist("t10k", root=tmp_path)
    assert str(tmp_path / T10K[0]) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no partial files left behind
    # A root that cannot be a folder (a file on its path) gives the same message, not an OSError.
    (tmp_path / "file").write_text("")
    with pytest.raises(MnistError, match=r"download failed: the folder .*file/mnist cannot be made") as info:
        load_mnist("t10k", root=tmp_path / "file" / "mnist")
    assert "SDEFLOW_MNIST_ROOT" in str(info.value)


def test_download_is_verified_and_atomic(tmp_path, monkeypatch, t10k):
    served = {name: (resolve_root() / name).read_bytes() for name in T10K}
    calls = []

    def fake_urlopen(url, timeout):
        calls.append(url)
        name = url.rsplit("/", 1)[1]
        if url.startswith(mnist_module.MIRRORS[0]):
            return io.BytesIO(served[name][:1000])  # a broken mirror: truncated download
        return io.BytesIO(served[name])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    loaded = load_mnist("t10k", root=tmp_path / "new")
    np.testing.assert_array_equal(loaded.images, t10k.images)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(T10K)
    assert len(calls) == 4  # the truncated copy was rejected and the next mirror used


def test_corrupt_files_give_checksum_errors(tmp_path):
    folder = _copy_t10k(tmp_path)
    path = folder / T10K[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(MnistError, match=f"{T10K[1]}.*corrupt"):
        load_mnist("t10k", root=folder, download_missing=False)
    # A valid gzip archive of other content fails the content checksum.
    content = bytearray(gzip.decompress((resolve_root() / T10K[1]).read_bytes()))
    content[100] = (content[100] + 1) % 10
    path.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(MnistError, match=f"{T10K[1]}: checksum mismatch"):
        load_mnist("t10k", root=folder, download_missing=False)


def test_functions_on_grids_are_one_function(t10k):
    images = t10k.images[:8]
    u32 = images_to_functions(images, 32)
    assert u32.shape == (8, 1, 32, 32) and u32.dtype == np.float32
    # On the native grid the values are the pixels, padded with background -1.
    np.testing.assert_allclose(u32[:, 0, 2:30, 2:30], images / 127.5 - 1.0, atol=1e-6)
    assert np.all(u32[:, 0, :2] == -1.0) and np.all(u32[:, 0, :, -2:] == -1.0)
    for smoothing in (0.0, 0.6):
        fine = images_to_functions(images, 128, smoothing)
        for n in (16, 32, 64):
            coarse = images_to_functions(images, n, smoothing)
            restricted = np.stack([np.asarray(sdeflow.restrict(jnp.asarray(v), (n, n))) for v in fine])
            np.testing.assert_allclose(restricted, coarse, atol=2e-5)
            # The mean (the k = 0 mode) is the same function value at every grid.
            np.testing.assert_allclose(coarse.mean(axis=(2, 3)), fine.mean(axis=(2, 3)), atol=1e-5)
    # The Gaussian smoothing tames the Gibbs overshoot of sharp strokes.
    ring = images_to_functions(t10k.images[:200], 128, 0.0)
    smooth = images_to_functions(t10k.images[:200], 128, 0.6)
    assert ring.max() > 1.3 and -1.06 < smooth.min() and smooth.max() < 1.06


def _digits(grid: int):
    """The converter of raw MNIST images to functions on the `grid` grid (no blur)."""
    return MnistSource(smoothing=0.0).converter(grid)


def test_pipeline_shuffles_repeats_and_resumes(t10k):
    images = t10k.images[:48]
    dataset = make_dataset(images, _digits(16), batch_size=8, seed=3)
    iterator = batches(dataset)
    stream = [next(iterator) for _ in range(12)]  # two epochs of 6 batches
    assert all(b.shape == (8, 1, 16, 16) and b.dtype == np.float32 for b in stream)
    reference = images_to_functions(images, 16)
    for epoch in (stream[:6], stream[6:]):
        # Each epoch is a permutation of all images.
        got = np.concatenate(epoch)
        order = [int(np.argmin(np.abs(reference - x).sum(axis=(1, 2, 3)))) for x in got]
        assert sorted(order) == list(range(48))
        np.testing.assert_allclose(got, reference[order], atol=1e-6)
    assert not np.array_equal(np.concatenate(stream[:6]), np.concatenate(stream[6:]))
    assert not np.array_equal(np.concatenate(stream[:6]), reference)
    # Same seed -> same stream; another seed -> another order.
    again = batches(make_dataset(images, _digits(16), batch_size=8, seed=3))
    np.testing.assert_array_equal(next(again), stream[0])
    other = batches(make_dataset(images, _digits(16), batch_size=8, seed=4))
    assert not np.array_equal(next(other), stream[0])
    # The saved state resumes exactly, also on another grid (the multilevel curriculum).
    iterator = batches(dataset)
    for _ in range(5):
        next(iterator)
    state = iterator.get_state()
    resumed = batches(dataset, state)
    for expected in stream[5:9]:
        np.testing.assert_array_equal(next(resumed), expected)
    finer = batches(make_dataset(images, _digits(32), batch_size=8, seed=3), state)
    batch = next(finer)
    restricted = np.stack([np.asarray(sdeflow.restrict(jnp.asarray(v), (16, 16))) for v in batch])
    np.testing.assert_allclose(restricted, stream[5], atol=2e-5)
    # Precomputed functions or batch-by-batch transformation: the same batches.
    lazy = batches(make_dataset(images, _digits(16), batch_size=8, seed=3, precompute=False), state)
    np.testing.assert_allclose(next(lazy), stream[5], atol=1e-6)


def test_pipeline_with_worker_processes(t10k):
    images = t10k.images[:64]
    serial = batches(make_dataset(images, _digits(16), batch_size=8, seed=1))
    expected = [next(serial) for _ in range(10)]
    dataset = make_dataset(images, _digits(16), batch_size=8, seed=1, worker_count=2)
    parallel = batches(dataset)
    for b in expected[:4]:
        np.testing.assert_array_equal(next(parallel), b)
    state = parallel.get_state()
    for b in expected[4:7]:
        np.testing.assert_array_equal(next(parallel), b)
    parallel.set_state(state)  # rewind, as a resumed run does
    for b in expected[4:10]:
        np.testing.assert_array_equal(next(parallel), b)


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    """`write_atomically`: a writer that fails half-way leaves the file as it was and no temporary
    file; one that finishes replaces it whole."""
    from train.data.files import write_atomically, write_text_atomically

    target = tmp_path / "config.yaml"
    write_text_atomically(target, "old: 1\n")

    def half(out):
        out.write(b"new: ")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, half)
    assert target.read_text() == "old: 1\n" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
    write_text_atomically(target, "new: 2\n")
    assert target.read_text() == "new: 2\n" and [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
