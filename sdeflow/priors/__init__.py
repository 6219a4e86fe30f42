"""Gaussian priors $N(0, C)$ with covariance diagonal in the Fourier basis."""

from ._base import AbstractPrior as AbstractPrior
from ._lattice import lattice_trace as lattice_trace, radial_lattice_sum as radial_lattice_sum
from ._noise import frequency_noise as frequency_noise
from .band_limited import BandLimited as BandLimited
from .combined import Combined as Combined
from .laplacian import Laplacian as Laplacian
from .matern import Matern as Matern
from .radial_multiplier import RadialMultiplier as RadialMultiplier
from .spectral_multiplier import SpectralMultiplier as SpectralMultiplier
from .white import WhiteNoise as WhiteNoise
