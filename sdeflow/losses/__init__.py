"""Denoising losses, time weightings and time sampling."""

from .dsm import (
    apply_batched as apply_batched,
    dsm_loss as dsm_loss,
    perturb_batch as perturb_batch,
    squared_norm as squared_norm,
)
from .time_sampling import TIME_SAMPLINGS as TIME_SAMPLINGS, sample_times as sample_times
from .vdm import vdm_elbo as vdm_elbo
from .weighting import (
    AbstractWeighting as AbstractWeighting,
    LikelihoodWeighting as LikelihoodWeighting,
    make_weighting as make_weighting,
    P2Weighting as P2Weighting,
    SimpleWeighting as SimpleWeighting,
)
