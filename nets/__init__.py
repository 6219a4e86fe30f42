"""Score networks for sdeflow: Fourier and U-shaped neural operators and a UNet baseline.

Every network acts on one sample, `model(t, u)` with `t` a scalar and `u` of shape
`(channels, *grid)`, and is vmapped over batches.
"""

from .fno import FNO as FNO, FourierBlock as FourierBlock
from .layers import (
    Pointwise as Pointwise,
    sinusoidal_embedding as sinusoidal_embedding,
    TimeEmbedding as TimeEmbedding,
)
from .spectral_conv import check_modes_fit as check_modes_fit, SpectralConv as SpectralConv
