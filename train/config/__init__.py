"""The configs of the programs: hydra structured configs, one schema (a dataclass) per config group.

The schemas are stored in hydra's `ConfigStore` when this package is imported; the YAML files of
`train/configs/` only pick group options and override fields. Hydra refuses an unknown key or a
value of the wrong type when it composes a config, naming the field; `validate` checks the values
at start-up, before anything is compiled, and raises `ConfigError` naming the field.
"""

from .data import (
    Cifar10Config as Cifar10Config,
)
from .data import (
    FashionMnistConfig as FashionMnistConfig,
)
from .data import (
    GeneratedConfig as GeneratedConfig,
)
from .data import (
    MnistConfig as MnistConfig,
)
from .data import (
    PipelineConfig as PipelineConfig,
)
from .diffusion import (
    CombinedConfig as CombinedConfig,
    DsmConfig as DsmConfig,
    OUBridgeConfig as OUBridgeConfig,
    SpectralMultiplierConfig as SpectralMultiplierConfig,
)
from .diffusion import (
    LaplacianConfig as LaplacianConfig,
)
from .diffusion import (
    MaternConfig as MaternConfig,
)
from .diffusion import (
    SubVPConfig as SubVPConfig,
)
from .diffusion import (
    VEConfig as VEConfig,
)
from .diffusion import (
    VPConfig as VPConfig,
)
from .diffusion import (
    WhiteConfig as WhiteConfig,
)
from .autoencoder import (
    VQVAEConfig as VQVAEConfig,
    VqvaeLossConfig as VqvaeLossConfig,
)
from .errors import Choice as Choice
from .errors import ConfigError as ConfigError
from .evaluation import ClassifierSettings as ClassifierSettings
from .evaluation import EvaluationConfig as EvaluationConfig
from .evaluation import Weights as Weights
from .heldout import HeldoutConfig as HeldoutConfig
from .loop import AdamWConfig as AdamWConfig
from .loop import LevelConfig as LevelConfig
from .loop import StageConfig as StageConfig
from .loop import TrainConfig as TrainConfig
from .model import FNOConfig as FNOConfig
from .model import UNetConfig as UNetConfig
from .model import UNOConfig as UNOConfig
from .programs import (
    GROUPS as GROUPS,
)
from .programs import (
    ClassifierConfig as ClassifierConfig,
)
from .programs import (
    EvaluateConfig as EvaluateConfig,
)
from .programs import (
    RunConfig as RunConfig,
)
from .programs import (
    SampleConfig as SampleConfig,
    SampleTask as SampleTask,
)
from .programs import (
    register as register,
)
from .programs import (
    to_schema as to_schema,
)
from .programs import (
    typed as typed,
)
from .programs import (
    validate as validate,
)
from .report import ReportConfig as ReportConfig
from .sampler import SamplerConfig as SamplerConfig
from .vdm import VdmConfig as VdmConfig
from .sampler import SamplerName as SamplerName

register()
