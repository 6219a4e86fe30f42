"""Sample-quality metrics for sets of fields or features, computed block by block.

Fields of shape `(n, c, n_1, ..., n_d)` are compared in $L^2(\\mathbb{T}^d; \\mathbb{R}^c)$, whose
squared norm is the mean over grid points (summed over channels), so that values are comparable
across resolutions; arrays of shape `(n, D)` are feature vectors compared in the Euclidean norm.
"""

from .frechet import (
    feature_statistics as feature_statistics,
    frechet_distance as frechet_distance,
    frechet_standard_error as frechet_standard_error,
    gaussian_frechet_distance as gaussian_frechet_distance,
)
from .mmd import riesz_mmd as riesz_mmd
from .power_spectrum import (
    power_spectrum_error as power_spectrum_error,
    radial_power_spectrum as radial_power_spectrum,
    resolved_shells as resolved_shells,
)
from .sliced_wasserstein import (
    sliced_wasserstein as sliced_wasserstein,
    wasserstein_1d as wasserstein_1d,
)
from .vendi import vendi_score as vendi_score
