"""The configs of the programs: hydra structured configs, one schema (a dataclass) per config group.

The schemas are stored in hydra's `ConfigStore` when this package is imported; the YAML files of
`train/configs/` only pick group options and override fields. Hydra refuses an unknown key or a
value of the wrong type when it composes a config, naming the field; `validate` checks the values
at start-up, before anything is compiled, and raises `ConfigError` naming the field.
"""

from .data import MnistConfig as MnistConfig, PipelineConfig as PipelineConfig
from .diffusion import (
    DsmConfig as DsmConfig,
    LaplacianConfig as LaplacianConfig,
    MaternConfig as MaternConfig,
    SubVPConfig as SubVPConfig,
    VEConfig as VEConfig,
    VPConfig as VPConfig,
    WhiteConfig as WhiteConfig,
)
from .errors import Choice as Choice, ConfigError as ConfigError
from .evaluation import EvaluationConfig as EvaluationConfig, Weights as Weights
from .loop import AdamWConfig as AdamWConfig, LevelConfig as LevelConfig, TrainConfig as TrainConfig
from .model import FNOConfig as FNOConfig, UNetConfig as UNetConfig, UNOConfig as UNOConfig
from .programs import (
    ClassifierConfig as ClassifierConfig,
    EvaluateConfig as EvaluateConfig,
    GROUPS as GROUPS,
    register as register,
    RunConfig as RunConfig,
    SampleConfig as SampleConfig,
    to_schema as to_schema,
    typed as typed,
    validate as validate,
)
from .sampler import SamplerConfig as SamplerConfig, SamplerName as SamplerName


register()
