"""Schemas of the `data` group: where the examples come from and how the pipeline batches them.

The source (`train.data`) checks its own fields when it is built at start-up (ranges inside the
split and apart from each other, a blur >= 0...); the schemas type them and check the pipeline's.
"""

import dataclasses
from typing import Any, Optional

from .errors import Choice, fail, positive


@dataclasses.dataclass
class PipelineConfig:
    """The grain pipeline's fields, shared by every data source."""

    worker_count: int = 0  # grain worker processes preparing batches (0: in the main process; fine on CPU)
    worker_buffer_size: int = 2  # batches each worker keeps ready
    read_threads: int = 1  # threads preparing batches: in each worker process, or in the main process when worker_count is 0
    prefetch_buffer: int = 4  # batches those threads keep ready

    def check(self, where: str = "data") -> None:
        expected = SOURCE_NAMES[type(self)]
        if self.name != expected:
            fail(f"{where}.name", f"is {expected!r} for this schema; choose another source with data=NAME", self.name)
        positive(f"{where}.worker_count", self.worker_count, 0)
        positive(f"{where}.worker_buffer_size", self.worker_buffer_size)
        positive(f"{where}.read_threads", self.read_threads)
        positive(f"{where}.prefetch_buffer", self.prefetch_buffer)


class IdxSplit(Choice):
    """The official files of MNIST and Fashion-MNIST."""

    train = "train"  # 60,000 images
    t10k = "t10k"  # 10,000 images


class CifarSplit(Choice):
    """The official batches of CIFAR-10."""

    train = "train"  # data_batch_1..5: 50,000 images
    test = "test"  # test_batch: 10,000 images


@dataclasses.dataclass
class MnistConfig(PipelineConfig):
    """MNIST digits (official IDX files) as functions on the torus $[0,1)^2$: padded to 32 x 32 with
    background, mapped to [-1, 1], optionally blurred, resampled spectrally to each grid."""

    name: str = "mnist"  # the source kind (set by the group option)
    root: Optional[str] = None  # folder of the IDX .gz files; null: $SDEFLOW_MNIST_ROOT, else ~/.cache/sdeflow/mnist
    download: bool = True  # download missing files from the official mirrors when the network allows
    split: IdxSplit = IdxSplit.train  # train (60,000 images) | t10k (10,000)
    train_range: Optional[list[int]] = dataclasses.field(default_factory=lambda: [0, 50000])  # [start, stop) of the split trained on
    holdout_range: Optional[list[int]] = dataclasses.field(default_factory=lambda: [50000, 60000])  # [start, stop) held out for evaluation
    smoothing: float = 0.6  # Gaussian blur (std in pixels) before resampling; tames Gibbs ringing; 0: exact pixels


@dataclasses.dataclass
class FashionMnistConfig(MnistConfig):
    """Fashion-MNIST (the same IDX format and processing as MNIST)."""

    name: str = "fashion_mnist"  # the source kind (set by the group option)
    root: Optional[str] = None  # folder of the IDX .gz files; null: $SDEFLOW_FASHION_MNIST_ROOT, else ~/.cache/sdeflow/fashion_mnist


@dataclasses.dataclass
class Cifar10Config(PipelineConfig):
    """CIFAR-10 (the official python-pickle tarball): 3-channel 32 x 32 images mapped to [-1, 1]."""

    name: str = "cifar10"  # the source kind (set by the group option)
    root: Optional[str] = None  # folder of cifar-10-python.tar.gz; null: $SDEFLOW_CIFAR10_ROOT, else ~/.cache/sdeflow/cifar10
    download: bool = True  # download the tarball from the official site when the network allows
    split: CifarSplit = CifarSplit.train  # train (50,000 images) | test (10,000)
    train_range: Optional[list[int]] = dataclasses.field(default_factory=lambda: [0, 45000])  # [start, stop) of the split trained on
    holdout_range: Optional[list[int]] = dataclasses.field(default_factory=lambda: [45000, 50000])  # [start, stop) held out for evaluation
    smoothing: float = 0.0  # Gaussian blur (std in pixels) before resampling; 0: exact pixels


@dataclasses.dataclass
class GeneratedConfig(PipelineConfig):
    """Fields the project generates itself (`train.data.GENERATORS`), cached on disk with a checksum."""

    name: str = "generated"  # the source kind (set by the group option)
    generator: str = "gaussian_fields"  # the generator's name in train.data.GENERATORS
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # the generator's own parameters
    count: int = 1000  # number of fields generated
    native_grid: list[int] = dataclasses.field(default_factory=lambda: [64, 64])  # the grid they are generated on (its length is the dimension)
    channels: int = 1  # channels of each field
    seed: int = 0  # the generator's seed
    train_range: Optional[list[int]] = dataclasses.field(default_factory=lambda: [0, 900])  # [start, stop) trained on
    holdout_range: Optional[list[int]] = dataclasses.field(default_factory=lambda: [900, 1000])  # [start, stop) held out for evaluation
    cache_dir: Optional[str] = None  # the cache folder; null: $SDEFLOW_DATA_CACHE, else ~/.cache/sdeflow/generated


SOURCE_NAMES = {MnistConfig: "mnist", FashionMnistConfig: "fashion_mnist", Cifar10Config: "cifar10",
                GeneratedConfig: "generated"}
"""Each schema's source kind (`train.data.make_source`)."""
