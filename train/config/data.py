"""Schemas of the `data` group: where the examples come from and how the pipeline batches them."""

import dataclasses
from typing import Optional

from .errors import Choice, ConfigError, fail, index_range, number, positive


@dataclasses.dataclass
class PipelineConfig:
    """The grain pipeline's fields, shared by every data source."""

    worker_count: int = 0  # grain worker processes preparing batches (0: in the main process; fine on CPU)
    worker_buffer_size: int = 2  # batches each worker keeps ready
    read_threads: int = 1  # threads preparing batches in the main process (when worker_count is 0)
    prefetch_buffer: int = 4  # batches those threads keep ready

    def check_pipeline(self, where: str) -> None:
        positive(f"{where}.worker_count", self.worker_count, 0)
        positive(f"{where}.worker_buffer_size", self.worker_buffer_size)
        positive(f"{where}.read_threads", self.read_threads)
        positive(f"{where}.prefetch_buffer", self.prefetch_buffer)


class MnistSplit(Choice):
    """The official MNIST files: `train` (60,000 digits) or `t10k` (10,000)."""

    train = "train"
    t10k = "t10k"


def check_ranges(where: str, train_range, holdout_range, size: int, split: str) -> None:
    """Train and held-out index ranges inside `size` examples of `split`, not overlapping."""
    train = index_range(f"{where}.train_range", train_range, size, f"split {split}") or (0, size)
    held = index_range(f"{where}.holdout_range", holdout_range, size, f"split {split}")
    if held is not None and max(train[0], held[0]) < min(train[1], held[1]):
        raise ConfigError(
            f"{where}.holdout_range {list(held)} overlaps {where}.train_range {list(train)}: held-out "
            "examples must not be trained on."
        )


@dataclasses.dataclass
class MnistConfig(PipelineConfig):
    """MNIST digits as functions on the torus $[0,1)^2$ (`train.data` says how)."""

    name: str = "mnist"  # the data source: mnist (this schema) | mnist_t10k (the same, t10k only)
    root: Optional[str] = None  # folder of the IDX .gz files; null: $SDEFLOW_MNIST_ROOT, else ~/.cache/sdeflow/mnist
    download: bool = True  # download missing files from the official mirrors when the network allows
    split: MnistSplit = MnistSplit.train  # train (60,000 digits) | t10k (10,000)
    train_range: Optional[list[int]] = dataclasses.field(default_factory=lambda: [0, 50000])  # [start, stop) trained on; null: all
    holdout_range: Optional[list[int]] = dataclasses.field(default_factory=lambda: [50000, 60000])  # [start, stop) held out for evaluation
    smoothing: float = 0.6  # Gaussian blur (std in pixels) before resampling; tames Gibbs ringing; 0: exact pixels

    def check(self, where: str = "data") -> None:
        from ..data.mnist import SPLIT_SIZES

        if self.name != "mnist":
            fail(f"{where}.name", "is set by the group option (data=mnist, data=mnist_t10k ...)", self.name)
        check_ranges(where, self.train_range, self.holdout_range, SPLIT_SIZES[self.split.value], self.split.value)
        number(f"{where}.smoothing", self.smoothing, lambda v: v >= 0, "a number >= 0 (pixels)")
        self.check_pipeline(where)

    def train_count(self) -> int:
        """The number of examples trained on."""
        from ..data.mnist import SPLIT_SIZES

        start, stop = self.train_range or (0, SPLIT_SIZES[self.split.value])
        return stop - start
