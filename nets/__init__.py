"""Score networks for sdeflow: Fourier and U-shaped neural operators and a UNet baseline.

Every network acts on one sample, `model(t, u)` with `t` a scalar and `u` of shape
`(channels, *grid)`, composes with `jax.vmap`/`jit`/`grad`, and offers `model.batched(t, u)` for a
batch `(B, channels, *grid)` (equal to `jax.vmap(model)(t, u)`; computed spatial-major, and faster,
for `FNO` and `UNO`).
"""

from .difference import DifferenceKernel as DifferenceKernel
from .fno import FNO as FNO, FourierBlock as FourierBlock
from .layers import (
    coordinate_features as coordinate_features,
    Pointwise as Pointwise,
    sinusoidal_embedding as sinusoidal_embedding,
    TimeEmbedding as TimeEmbedding,
    value_fourier_features as value_fourier_features,
)
from .spectral_conv import check_modes_fit as check_modes_fit, SpectralConv as SpectralConv
from .summary import count_parameters as count_parameters, summary as summary
from .unet import UNet as UNet
from .uno import level_grid as level_grid, UNO as UNO
