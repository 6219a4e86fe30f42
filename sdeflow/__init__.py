"""sdeflow: score-based diffusion models in function space, in JAX and Equinox.

Every function and class of the package checks its arguments against its jaxtyping annotations
(shapes, dtypes, named dimensions) when called, under `jit` once per trace: a wrong shape names
the parameter and the annotation it misses. `SDEFLOW_TYPECHECK=0` in the environment turns the
checks off.
"""

from .typecheck import install as _install_typecheck


_install_typecheck("sdeflow")  # before the submodules below are imported

from . import (  # noqa: E402
    custom_types as custom_types,
    likelihood as likelihood,
    losses as losses,
    metrics as metrics,
    parameterisation as parameterisation,
    priors as priors,
    samplers as samplers,
    sde as sde,
)
from .custom_types import (  # noqa: E402
    Field as Field,
    Grid as Grid,
    RealScalarLike as RealScalarLike,
    Spectrum as Spectrum,
)
from .grid import (  # noqa: E402
    coordinates as coordinates,
    field_grid as field_grid,
    fourier as fourier,
    integer_frequencies as integer_frequencies,
    inverse_fourier as inverse_fourier,
    kept_modes as kept_modes,
    prolong as prolong,
    resample as resample,
    resample_matrix as resample_matrix,
    restrict as restrict,
    rfft_frequencies as rfft_frequencies,
    rfft_shape as rfft_shape,
    squared_wavenumber as squared_wavenumber,
)


__version__ = "0.1.0"
