"""Score networks for sdeflow: Fourier and U-shaped neural operators and a UNet baseline; and a
VQ-VAE (`VQVAE`, `vqvae_loss`) whose discrete latents a model can be trained on.

Every score network acts on one sample, `model(t, u)` with `t` a scalar and `u` of shape
`(channels, *grid)`, composes with `jax.vmap`/`jit`/`grad`, and offers `model.batched(t, u)` for a
batch `(B, channels, *grid)` (equal to `jax.vmap(model)(t, u)`; computed spatial-major, and faster,
for `FNO` and `UNO`).

As in `sdeflow`, calls are checked against the jaxtyping annotations (`SDEFLOW_TYPECHECK=0` turns
the checks off).
"""

from sdeflow.typecheck import install as _install_typecheck


_install_typecheck("nets")  # before the submodules below are imported

from .circular_conv import CircularConv as CircularConv  # noqa: E402
from .clipped_estimate import ClippedEstimate as ClippedEstimate  # noqa: E402
from .consistency import discretisation_gaps as discretisation_gaps  # noqa: E402
from .difference import DifferenceKernel as DifferenceKernel  # noqa: E402
from .fno import FNO as FNO, FourierBlock as FourierBlock  # noqa: E402
from .layers import (  # noqa: E402
    coordinate_features as coordinate_features,
    Pointwise as Pointwise,
    sinusoidal_embedding as sinusoidal_embedding,
    TimeEmbedding as TimeEmbedding,
    value_fourier_features as value_fourier_features,
)
from .resampling import band_limited as band_limited  # noqa: E402
from .spectral_conv import (  # noqa: E402
    check_modes_fit as check_modes_fit,
    clipped_modes as clipped_modes,
    SpectralConv as SpectralConv,
)
from .summary import count_parameters as count_parameters, summary as summary  # noqa: E402
from .unet import UNet as UNet  # noqa: E402
from .uno import level_grid as level_grid, UNO as UNO  # noqa: E402
from .vqvae import VectorQuantiser as VectorQuantiser, VQVAE as VQVAE, vqvae_loss as vqvae_loss  # noqa: E402
