"""Reverse-time samplers of score-based diffusions, on diffrax, at any resolution."""

from ._noise import ReverseNoiseTerm as ReverseNoiseTerm
from .base import (
    AbstractSampler as AbstractSampler,
    check_results as check_results,
    SampleResult as SampleResult,
)
from .batching import VmapAsBatched as VmapAsBatched
from .conditional import (
    AbstractObservation as AbstractObservation,
    Inpainting as Inpainting,
    ReplacementSolver as ReplacementSolver,
    SuperResolution as SuperResolution,
    edit as edit,
)
from .ddim import DDIM as DDIM, DDIMSolver as DDIMSolver
from .keys import time_key as time_key
from .mixture_oracle import GaussianMixtureOracle as GaussianMixtureOracle
from .multilevel import MultilevelSampler as MultilevelSampler
from .oracle import GaussianOracle as GaussianOracle
from .predictor_corrector import (
    PredictorCorrector as PredictorCorrector,
    PredictorCorrectorSolver as PredictorCorrectorSolver,
    langevin_step as langevin_step,
)
from .probability_flow import ProbabilityFlow as ProbabilityFlow, probability_flow as probability_flow
from .reverse_sde import EulerMaruyama as EulerMaruyama, ReverseSDE as ReverseSDE, reverse_drift as reverse_drift
from .score import PreconditionedScore as PreconditionedScore
from .step_to_grid import StepToGrid as StepToGrid
from .self_conditioning import SelfConditioningSolver as SelfConditioningSolver
from .wrapped import AbstractDelegatingSolver as AbstractDelegatingSolver
from .spacing import (
    AbstractSpacing as AbstractSpacing,
    LogSNRSpacing as LogSNRSpacing,
    SPACINGS as SPACINGS,
    time_grid as time_grid,
    UniformSpacing as UniformSpacing,
)
from .variables import (
    AbstractNoiseLevel as AbstractNoiseLevel,
    AbstractVariables as AbstractVariables,
    LogNoiseLevel as LogNoiseLevel,
    NoiseLevel as NoiseLevel,
    ReversedTime as ReversedTime,
    VARIABLES as VARIABLES,
)
