"""Data of the training program: MNIST as functions on the torus, batched by grain."""

from .mnist import (
    CONTENT_SHA256 as CONTENT_SHA256,
    MIRRORS as MIRRORS,
    ROOT_ENV as ROOT_ENV,
    SPLITS as SPLITS,
    Mnist as Mnist,
    MnistError as MnistError,
    load_mnist as load_mnist,
    parse_idx as parse_idx,
    resolve_root as resolve_root,
)
from .pipeline import (
    NATIVE_GRID as NATIVE_GRID,
    batches as batches,
    images_to_functions as images_to_functions,
    make_dataset as make_dataset,
)
