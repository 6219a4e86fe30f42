"""Data of the training programs: sources of functions on the torus, batched by grain.

A source (`AbstractSource`: `MnistSource`, `FashionMnistSource`, `Cifar10Source`,
`GeneratedSource`; `make_source` builds one by name) loads the raw examples of its `"train"` and
`"holdout"` parts and converts them into functions on any grid; `make_dataset` batches them.
"""

from .cifar10 import (
    Cifar10Error as Cifar10Error,
    Cifar10Source as Cifar10Source,
)
from .factory import (
    SOURCES as SOURCES,
    make_source as make_source,
)
from .fashion_mnist import (
    FashionMnistError as FashionMnistError,
    FashionMnistSource as FashionMnistSource,
)
from .generated import (
    GENERATORS as GENERATORS,
    GeneratedDataError as GeneratedDataError,
    GeneratedSource as GeneratedSource,
    gaussian_fields as gaussian_fields,
    matern_spectrum as matern_spectrum,
    register_generator as register_generator,
)
from .mnist import (
    CONTENT_SHA256 as CONTENT_SHA256,
    MIRRORS as MIRRORS,
    ROOT_ENV as ROOT_ENV,
    SPLITS as SPLITS,
    Mnist as Mnist,
    MnistError as MnistError,
    MnistSource as MnistSource,
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
from .source import (
    PARTS as PARTS,
    AbstractSource as AbstractSource,
    DataError as DataError,
    Examples as Examples,
    as_grid as as_grid,
)
