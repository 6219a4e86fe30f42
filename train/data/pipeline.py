"""The grain pipeline that batches functions of any source, and MNIST digits as functions.

The pipeline (`make_dataset`) takes a source's raw examples and its converter for a grid
(`train.data.source.AbstractSource.converter`). The rest of this module is how an MNIST digit
becomes a function (the other image sources follow the same steps, `source.ImageConverter`).

How an image becomes a function on an $n \\times n$ grid of $[0, 1)^2$:

1. the 28 x 28 image is padded with two rows/columns of background on every side to 32 x 32, so
   that the torus has at least four background pixels between opposite edges of a digit (MNIST
   digits are centred by their centre of mass; in t10k 0.02% of the ink lies on the outermost
   pixel ring of the 28 x 28 image and 0.2% within two pixels of the edge);
2. pixel values $p \\in \\{0, ..., 255\\}$ become $u = 2p/255 - 1 \\in [-1, 1]$ (background $-1$);
3. optionally (`smoothing` $= \\sigma > 0$, in pixels) the image is blurred by the Gaussian
   Fourier multiplier $\\exp(-2\\pi^2 \\sigma^2 |k|^2 / 32^2)$ on the 32-grid;
4. the 32-grid values are resampled spectrally to the $n$-grid (`sdeflow.resample_matrix`, per
   axis): $n > 32$ is trigonometric interpolation (the same band-limited function, no new detail),
   $n < 32$ is the $L^2$ projection (a low-pass image), $n = 32$ keeps the values.

So one digit is the same band-limited function at every resolution; a model trained at 32 and then
64 sees the same data, only sampled more finely, and restricting a 64-grid digit to 32 gives the
32-grid digit exactly. Why the optional blur: MNIST strokes jump from 0 to 255 within a pixel, and
the trigonometric interpolant of such an image rings (Gibbs) with values from -1.87 to 1.81 at
n = 128 (first 1000 t10k digits). With $\\sigma = 0.6$ pixel the values stay within
[-1.04, 1.04] at every n, at the price of an RMS change of 0.11 on the 32-grid pixels. Values are
never clipped (clipping would break the consistency across grids).
"""

from collections.abc import Callable

import absl.flags
import grain
import numpy as np

from .source import ImageConverter

NATIVE_GRID = 32
"""The grid of the padded images, on which pixel values are kept exactly."""

PRECOMPUTE_BYTES = 1 << 30
"""Up to this size (1 GiB: 8,000 digits at 128 x 128) the functions are computed once, up front."""


def images_to_functions(images: np.ndarray, grid: int, smoothing: float = 0.0) -> np.ndarray:
    """MNIST images (uint8, `(B, 28, 28)`) to functions with values in about $[-1, 1]$ on a torus grid.

    **Arguments:**

    - `images`: uint8 array of shape `(B, 28, 28)`.
    - `grid`: the target grid size $n$ (any positive int).
    - `smoothing`: the standard deviation $\\sigma \\ge 0$, in pixels, of a Gaussian blur applied
        before resampling (0: none, the 32-grid values are the pixels exactly).

    **Returns:**

    A float32 array of shape `(B, 1, n, n)` (channels first).
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"`images` must have shape (B, 28, 28), got {images.shape}.")
    if int(grid) < 1:
        raise ValueError(f"`grid` must be a positive int, got {grid}.")
    if not smoothing >= 0:
        raise ValueError(f"`smoothing` must be >= 0 (pixels), got {smoothing}.")
    pad = (NATIVE_GRID - 28) // 2
    return ImageConverter((28, 28), pad, (int(grid), int(grid)), float(smoothing))(images)


def make_dataset(
    values: np.ndarray,
    converter: Callable[[np.ndarray], np.ndarray],
    *,
    batch_size: int,
    seed: int,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    read_threads: int = 1,
    prefetch_buffer: int = 4,
    precompute: bool | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
) -> grain.IterDataset:
    """An endless, shuffled, batched grain dataset of functions on a grid, for any source.

    Epoch $e$ visits the examples in a permutation seeded by `seed + e` (grain's `shuffle` before
    `repeat`); incomplete batches at the end of the endless stream never occur. The state of its
    iterator (`get_state` / `set_state`) is a small dict saved in checkpoints, and two pipelines
    built from the same values, `batch_size`, `seed` and `precompute` but converters for other
    grids have interchangeable states (the multilevel curriculum carries the state from one grid
    to the next).

    Called as `make_dataset(examples.values, source.converter(grid), batch_size=..., seed=...)`.

    **Arguments:**

    - `values`: the raw examples `(N, ...)` of a source (`Examples.values`).
    - `converter`: a picklable callable turning a batch of values into float32 functions
        `(B, c, *grid)` (`AbstractSource.converter(grid)`).
    - `batch_size`: examples per batch.
    - `seed`: the shuffling seed.
    - `worker_count`: processes that prepare batches ahead (0: in the main process).
    - `worker_buffer_size`: batches each worker keeps ready.
    - `read_threads`: threads preparing batches ahead: in each worker process, or in the main
      process when `worker_count=0`.
    - `prefetch_buffer`: batches those threads keep ready.
    - `precompute`: convert all examples once, up front (default: when the functions take at most
        `PRECOMPUTE_BYTES`), rather than batch by batch; the batches are the same either way.
    - `shard_index`, `shard_count`: this process's share of every batch, for training over
        several processes: the global batch of `batch_size` examples is cut into `shard_count`
        consecutive blocks and this dataset yields block `shard_index` of each, so the
        processes' blocks, in process order, are the batch one process would read, and no two
        processes read the same example in an epoch.

    **Returns:**

    A `grain.IterDataset` of float32 batches `(batch_size // shard_count, c, *grid)`.
    """
    if batch_size < 1 or batch_size > len(values):
        raise ValueError(f"`batch_size` must be in 1..{len(values)} (the number of examples), got {batch_size}.")
    if worker_count < 0:
        raise ValueError(f"`worker_count` must be >= 0, got {worker_count}.")
    if not (shard_count >= 1 and 0 <= shard_index < shard_count and batch_size % shard_count == 0):
        raise ValueError(f"need 0 <= `shard_index` < `shard_count` dividing `batch_size` {batch_size}, "
                         f"got {shard_index} of {shard_count}.")
    block = int(batch_size) // int(shard_count)

    def share(dataset: grain.MapDataset) -> grain.MapDataset:
        # blocks of the global batches, in order; this process's are every shard_count-th
        dataset = dataset.batch(block, drop_remainder=True, batch_fn=np.stack)
        return dataset if shard_count == 1 else dataset.slice(slice(int(shard_index), None, int(shard_count)))

    if precompute is None:
        precompute = len(values) * converter(values[:1]).nbytes <= PRECOMPUTE_BYTES
    if precompute:
        # All functions at once (in chunks): batches are then plain copies, and the CPU is left to
        # the training step instead of a thread that competes with it for every batch.
        functions = np.concatenate([converter(values[i : i + 1024]) for i in range(0, len(values), 1024)])
        dataset = share(grain.MapDataset.source(functions).shuffle(seed=int(seed)).repeat())
    else:
        dataset = share(grain.MapDataset.source(values).shuffle(seed=int(seed)).repeat()).map(converter)
    options = grain.ReadOptions(num_threads=int(read_threads), prefetch_buffer_size=int(prefetch_buffer))
    iter_dataset = dataset.to_iter_dataset(options)
    if worker_count > 0:
        # grain's worker processes read absl flags; under a non-absl entry point (hydra, pytest) they
        # are unparsed and grain raises UnparsedFlagAccessError: mark them parsed.
        if not absl.flags.FLAGS.is_parsed():
            absl.flags.FLAGS.mark_as_parsed()
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=int(worker_count), per_worker_buffer_size=int(worker_buffer_size))
        )
    return iter_dataset


def batches(dataset: grain.IterDataset, state: dict | None = None) -> grain.DatasetIterator:
    """An iterator over `dataset`, positioned at a saved `state` if one is given."""
    iterator = iter(dataset)
    if state is not None:
        iterator.set_state(state)
    return iterator
