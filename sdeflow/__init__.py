"""sdeflow: score-based diffusion models in function space, in JAX and Equinox."""

from . import (
    custom_types as custom_types,
    likelihood as likelihood,
    losses as losses,
    metrics as metrics,
    parameterisation as parameterisation,
    priors as priors,
    samplers as samplers,
    sde as sde,
)
from .custom_types import (
    Field as Field,
    Grid as Grid,
    RealScalarLike as RealScalarLike,
    Spectrum as Spectrum,
)
from .grid import (
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
