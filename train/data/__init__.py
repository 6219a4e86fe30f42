"""Data of the training programs: sources of functions on the torus, batched by grain.

A source (`AbstractSource`: `MnistSource`, `FashionMnistSource`, `Cifar10Source`,
`GeneratedSource`; `make_source` builds one by name) loads the raw examples of its `"train"` and
`"holdout"` parts and converts them into functions on any grid; `make_dataset` batches them.
"""

from .cifar10 import (
    Cifar10Error as Cifar10Error,
)
from .cifar10 import (
    Cifar10Source as Cifar10Source,
)
from .factory import (
    SOURCES as SOURCES,
)
from .factory import (
    make_source as make_source,
)
from .fashion_mnist import (
    FashionMnistError as FashionMnistError,
)
from .fashion_mnist import (
    FashionMnistSource as FashionMnistSource,
)
from .generated import (
    GENERATORS as GENERATORS,
)
from .generated import (
    GeneratedDataError as GeneratedDataError,
)
from .generated import (
    GeneratedSource as GeneratedSource,
)
from .generated import (
    gaussian_fields as gaussian_fields,
)
from .generated import (
    matern_spectrum as matern_spectrum,
)
from .generated import (
    register_generator as register_generator,
)
from .mixture import (
    GaussianMixtureFields as GaussianMixtureFields,
)
from .mixture import (
    gaussian_mixture_fields as gaussian_mixture_fields,
)
from .mnist import (
    CONTENT_SHA256 as CONTENT_SHA256,
)
from .mnist import (
    MIRRORS as MIRRORS,
)
from .mnist import (
    ROOT_ENV as ROOT_ENV,
)
from .mnist import (
    SPLITS as SPLITS,
)
from .mnist import (
    Mnist as Mnist,
)
from .mnist import (
    MnistError as MnistError,
)
from .mnist import (
    MnistSource as MnistSource,
)
from .mnist import (
    load_mnist as load_mnist,
)
from .mnist import (
    parse_idx as parse_idx,
)
from .mnist import (
    resolve_root as resolve_root,
)
from .pipeline import (
    NATIVE_GRID as NATIVE_GRID,
)
from .pipeline import (
    batches as batches,
)
from .pipeline import (
    images_to_functions as images_to_functions,
)
from .pipeline import (
    make_dataset as make_dataset,
)
from .reaction_diffusion import (
    AbstractReactionDiffusion as AbstractReactionDiffusion,
)
from .reaction_diffusion import (
    FitzHughNagumo as FitzHughNagumo,
)
from .reaction_diffusion import (
    reaction_diffusion_fields as reaction_diffusion_fields,
)
from .reaction_diffusion import (
    solve_reaction_diffusion as solve_reaction_diffusion,
)
from .sdf import (
    digit_sdf as digit_sdf,
)
from .sdf import (
    mnist_sdf as mnist_sdf,
)
from .sdf import (
    periodic_signed_distance as periodic_signed_distance,
)
from .source import (
    PARTS as PARTS,
)
from .source import (
    AbstractSource as AbstractSource,
)
from .source import (
    DataError as DataError,
)
from .source import (
    Examples as Examples,
)
from .source import (
    as_grid as as_grid,
)
