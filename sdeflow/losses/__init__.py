"""Denoising losses, time weightings, time sampling and the norms of the error."""

from .consistency import ResolutionConsistency as ResolutionConsistency
from .dsm import (
    apply_batched as apply_batched,
    dsm_loss as dsm_loss,
    perturb_batch as perturb_batch,
)
from .norms import (
    AbstractNorm as AbstractNorm,
    CameronMartinNorm as CameronMartinNorm,
    InterpolatedNorm as InterpolatedNorm,
    L1Norm as L1Norm,
    L2Norm as L2Norm,
    NORMS as NORMS,
)
from .time_sampling import (
    AbstractTimeSampling as AbstractTimeSampling,
    AntitheticTimeSampling as AntitheticTimeSampling,
    StratifiedTimeSampling as StratifiedTimeSampling,
    TIME_SAMPLINGS as TIME_SAMPLINGS,
    UniformTimeSampling as UniformTimeSampling,
)
from .vdm import (
    AbstractDecoder as AbstractDecoder,
    DECODERS as DECODERS,
    DiscretisedDecoder as DiscretisedDecoder,
    GaussianDecoder as GaussianDecoder,
    elbo_undefined as elbo_undefined,
    vdm_elbo as vdm_elbo,
    vdm_terms as vdm_terms,
)
from .weighting import (
    AbstractWeighting as AbstractWeighting,
    LikelihoodWeighting as LikelihoodWeighting,
    P2Weighting as P2Weighting,
    SimpleWeighting as SimpleWeighting,
    WEIGHTINGS as WEIGHTINGS,
)
