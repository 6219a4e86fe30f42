"""The top-level schemas of the four programs, their registration in hydra's `ConfigStore`, and the
start-up check of a composed config."""

import dataclasses
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from .autoencoder import VQVAEConfig
from .data import Cifar10Config, FashionMnistConfig, GeneratedConfig, IdxSplit, MnistConfig
from .diffusion import LOSSES, PRIORS, SDES
from .errors import Choice, ConfigError, fail, positive
from .evaluation import ClassifierSettings, EvaluationConfig, Weights
from .loop import AdamWConfig, TrainConfig
from .model import MODELS
from .sampler import SAMPLERS, SamplerConfig


@dataclasses.dataclass
class RunConfig:
    """`python -m train.run`: every group of a training run (`configs/config.yaml` picks the options)."""

    name: str = "default"  # the experiment's name; the default run folder is runs/<name>
    data: Any = MISSING  # the data source and its pipeline (data=mnist | mnist_t10k ...)
    model: Any = MISSING  # the score network (model=fno | uno | unet)
    prior: Any = MISSING  # the Gaussian prior of the noise (prior=matern | laplacian | white | fno | combined)
    sde: Any = MISSING  # the forward SDE (sde=vp | subvp | ve | ou_bridge)
    loss: Any = MISSING  # the training loss (loss=dsm | vdm; a stage may train an autoencoder with {name: vqvae})
    autoencoder: Optional[VQVAEConfig] = None  # null, or a VQ-VAE whose latent maps the network models (the part autoencoder)
    optim: AdamWConfig = dataclasses.field(default_factory=AdamWConfig)  # optimiser, schedule and EMA of every part
    optim_parts: dict[str, AdamWConfig] = dataclasses.field(default_factory=dict)  # per part name: its own optimiser settings instead of optim
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)  # sampler of the sample grids
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)  # the training loop and its curriculum


class SampleTask(Choice):
    """What `python -m train.sample` draws on each grid."""

    samples = "samples"  # unconditional samples
    super_resolution = "super_resolution"  # held-out examples given on observed_grid, completed on the grid
    inpainting = "inpainting"  # held-out examples with a masked central square, filled in
    chain = "chain"  # the state of the sampler at chain_times, then the sample


@dataclasses.dataclass
class SampleConfig:
    """`python -m train.sample`: samples of a trained run on several grids."""

    run_dir: Optional[str] = None  # the training run folder (config.yaml, checkpoints/); required
    step: Optional[int] = None  # the checkpoint step to restore; null: the latest
    weights: Weights = Weights.ema  # ema (the moving average of the weights) | raw (the optimiser's last weights)
    oversample: Optional[float] = None  # FNO/U-NO: evaluate the nonlinearities on a grid this many times finer (>= 1; 2 removes their aliasing; the weights do not depend on it); null: as trained
    data_root: Optional[str] = None  # where the run's data files are now (e.g. moved since training); null: the run's data.root, else its environment variable
    grids: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 128])  # grid sizes n to sample on (any n >= 4)
    num_samples: int = 64  # samples per grid
    batch_size: int = 64  # samples drawn at once (vmapped)
    png_count: int = 64  # samples shown in each PNG grid
    seed: int = 0  # the samples' random key (the same keys on every grid)
    out_dir: Optional[str] = None  # null: <run_dir>/samples/<sampler tag>, then _raw, _oversample<f>, _step<n>, _n<count>, _seed<s> when those differ from the defaults
    resolution_consistent_noise: bool = False  # start every grid from the same prior function (slower to compile)
    task: SampleTask = SampleTask.samples  # samples | super_resolution | inpainting | chain (files <task>_grid<n>.*)
    examples: int = 8  # held-out examples (super_resolution, inpainting) or chains (chain) per grid
    per_example: int = 4  # conditional samples drawn per held-out example
    observed_grid: int = 32  # super_resolution: the grid the held-out examples are given on (no finer than any of grids)
    mask_size: float = 0.5  # inpainting: side of the masked central square as a fraction of each axis, in (0, 1)
    chain_times: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.6, 0.4, 0.25, 0.1, 0.03])  # chain: decreasing times the state is kept at
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)  # the sampler

    def check(self) -> None:
        if self.run_dir is None:
            raise ConfigError("run_dir must name a training run folder, e.g. run_dir=runs/multilevel_mnist.")
        if not self.grids or not all(n >= 4 for n in self.grids):
            fail("grids", "must be a non-empty list of ints >= 4", list(self.grids))
        for field in ("num_samples", "batch_size", "png_count", "examples", "per_example"):
            positive(field, getattr(self, field))
        if self.task == SampleTask.super_resolution and not 4 <= self.observed_grid <= min(self.grids):
            fail("observed_grid", f"must be an int in [4, {min(self.grids)}] (the coarsest of grids)", self.observed_grid)
        if not 0.0 < self.mask_size < 1.0:
            fail("mask_size", "must be a fraction in (0, 1)", self.mask_size)
        times = list(self.chain_times)
        if not times or any(a <= b for a, b in zip(times, times[1:])):
            fail("chain_times", "must be a non-empty list of decreasing times", times)
        if self.task in (SampleTask.super_resolution, SampleTask.inpainting):  # conditioning by replacement
            self.sampler.check_fixed_steps_in_t("sampler", f"for task={self.task.value}",
                                                "conditioning by replacement needs fixed steps")


@dataclasses.dataclass
class EvaluateConfig(EvaluationConfig):
    """`python -m train.evaluate`: the metrics of a trained run against its held-out data."""

    run_dir: Optional[str] = None  # the training run folder; required
    step: Optional[int] = None  # the checkpoint step to restore; null: the latest
    output: Optional[str] = None  # the JSON file; null: <run_dir>/evaluation/<tag>_grid<n>.json, <tag> as out_dir's of train.sample (_step<s>, _n<count>, _seed<s>... when not the defaults), _grid<n>_from<m> when drawn on sample_grid m
    oversample: Optional[float] = None  # FNO/U-NO: evaluate the nonlinearities on a grid this many times finer (>= 1; 2 removes their aliasing; the weights do not depend on it); null: as trained
    data_root: Optional[str] = None  # where the run's data files are now (e.g. moved since training); null: the run's data.root, else its environment variable


@dataclasses.dataclass
class ClassifierConfig:
    """`python -m train.classifier`: the MNIST classifier of the Fréchet features, alone."""

    data: Any = MISSING  # the data whose held-out range it trains on (data=mnist | mnist_t10k)
    classifier: ClassifierSettings = dataclasses.field(default_factory=ClassifierSettings)  # its settings


GROUPS = {
    "data": {
        "mnist": MnistConfig(),
        # machines that hold only the 10,000-digit t10k files: train on t10k[0:8000], hold out the rest
        "mnist_t10k": MnistConfig(split=IdxSplit.t10k, train_range=[0, 8000], holdout_range=[8000, 10000]),
        "fashion_mnist": FashionMnistConfig(),
        "cifar10": Cifar10Config(),
        "generated": GeneratedConfig(),
    },
    "model": {name: schema() for name, schema in MODELS.items()},
    "prior": {name: schema() for name, schema in PRIORS.items()},
    "sde": {name: schema() for name, schema in SDES.items()},
    "loss": {name: schema() for name, schema in LOSSES.items() if name != "vqvae"},  # vqvae: a stage's loss only
    "optim": {"adamw": AdamWConfig()},
    "sampler": SAMPLERS,
    "train": {"default": TrainConfig()},
}
"""The options of every config group: `group=name` on the command line picks one."""


def register() -> None:
    """Store the schemas and the group options in hydra's `ConfigStore` (done on import)."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(name="sample_schema", node=SampleConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="classifier_schema", node=ClassifierConfig)
    for group, options in GROUPS.items():
        for name, node in options.items():
            store.store(group=group, name=name, node=node)


def _schema_of(group: str, node: DictConfig) -> Any:
    """The group option's schema of a saved group node (by its `name` or `_target_`)."""
    for option in GROUPS[group].values():
        key = "_target_" if "_target_" in node else "name"
        if key in node and getattr(option, key, None) == node[key]:
            return type(option)
    raise ConfigError(f"{group}: the saved config names no known option ({OmegaConf.to_yaml(node).strip()}).")


def typed(cfg: DictConfig) -> DictConfig:
    """A plain (e.g. loaded from a run's `config.yaml`) training config, typed by the schemas: the
    same checks apply to it as to a composed one."""
    schema = OmegaConf.structured(RunConfig)
    for group in ("data", "model", "prior", "sde", "loss"):
        schema[group] = OmegaConf.structured(_schema_of(group, cfg[group]))
    return OmegaConf.merge(schema, cfg)


def check_keys(node: Any, where: str = "") -> None:
    """Refuse keys that are no field of their schema. Hydra refuses them by itself, except those
    added with `+key=value` (which appends to any node)."""
    if isinstance(node, DictConfig):
        schema = OmegaConf.get_type(node)
        names = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
        for key in node.keys():
            field = f"{where}.{key}" if where else str(key)
            if names is not None and key not in names:
                raise ConfigError(f"{field} is not a field of {schema.__name__} (misspelled?).")
            if not OmegaConf.is_missing(node, key):
                check_keys(node[key], field)
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            check_keys(item, f"{where}[{i}]")


def to_schema(cfg: DictConfig) -> Any:
    """The config as the dataclasses of its schema, after checking that it holds no unknown key."""
    check_keys(cfg)
    return OmegaConf.to_object(cfg)


def part_names(run: Any) -> tuple[str, ...]:
    """The trainable parts of a run (`train.build.build_parts`), in a fixed order: the score
    network, then any part that the run's loss or prior learns beside it, the autoencoder whose
    latent maps the network models, and the bridge's fitted target.

    **Arguments:**

    - `run`: the run's config, as its schema (`RunConfig`) or as composed (`DictConfig`).

    **Returns:**

    The parts' names, the keys of the run's dict of parts.
    """
    from .diffusion import prior_learns

    loss = run.loss
    learned_schedule = loss.name == "vdm" and bool(loss.learned_schedule)  # loss=vdm: its schedule gamma(t)
    autoencoder = run.get("autoencoder") if hasattr(run, "keys") else getattr(run, "autoencoder", None)
    fitted_target = run.sde.name == "ou_bridge" and str(run.sde.target) != "zero"  # the bridge's x*
    return (("network",) + (("schedule",) if learned_schedule else ()) + (("prior",) if prior_learns(run.prior) else ())
            + (("autoencoder",) if autoencoder is not None else ()) + (("target",) if fitted_target else ()))


def stage_loss(stage: Any, run_loss: Any, where: str = "train.stages[]") -> Any:
    """The loss of a stage, typed by its option's schema (a stage's `loss` is a plain mapping).

    A mapping without a `name` is the run's loss with the fields it names replaced
    (`{consistency: 30.0}` adds a penalty and keeps everything else of the run's); a mapping with a
    `name` is that option from its defaults, with the fields it names.

    **Arguments:**

    - `stage`: the stage's config (`StageConfig`), whose `loss` is not null.
    - `run_loss`: the run's loss, as its schema's dataclass (`RunConfig.loss`).
    - `where`: the stage's path in the config, for errors.

    **Returns:**

    The stage's loss as its schema's dataclass.
    """
    fields = dict(stage.loss)
    if "name" not in fields:
        base = run_loss
    elif fields["name"] in LOSSES:
        base = LOSSES[fields["name"]]
    else:
        fail(f"{where}.loss.name", f"must be one of {', '.join(LOSSES)}", fields["name"])
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(base), fields))
    except Exception as error:  # omegaconf's own errors name the key
        raise ConfigError(f"{where}.loss: {error}") from None


def validate(cfg: DictConfig) -> RunConfig:
    """Check every field of a composed training config; raise `ConfigError` naming the first bad one.

    Types and unknown keys were checked by hydra when it composed `cfg`; here the values: the
    program's own rules per group, then the library's, by building the prior, the SDE and the
    samplers (their constructors check what they need).

    **Arguments:**

    - `cfg`: the config composed by hydra (`train/configs/config.yaml` and its groups).

    **Returns:**

    The config as its schema's dataclasses (`RunConfig`).
    """
    from .. import build

    run: RunConfig = to_schema(cfg)
    if not run.name:
        fail("name", "must be a non-empty string", run.name)
    run.data.check("data")
    run.sde.check("sde")
    run.loss.check("loss")
    if run.autoencoder is not None:
        run.autoencoder.check("autoencoder")
        if run.train.sample_grids or run.train.evaluate or run.sampler.coarse_grid is not None:
            fail("train.sample_grids", "must be [] with train.evaluate=false and sampler.coarse_grid=null in a run "
                 "with an autoencoder: its samples are decoded latent maps, written by its report "
                 "(train.report.name=vqvae_bridge)", list(run.train.sample_grids))
    if "schedule" in part_names(run) and run.sde.name != "vp":
        fail("loss.learned_schedule", f"needs sde=vp (a learned schedule is the VP SDE's), not sde={run.sde.name}",
             run.loss.learned_schedule)
    run.train.check("train")
    parts = part_names(run)
    for i, stage in enumerate(run.train.stage_list()):
        where = f"train.stages[{i}]"
        steps = sum(level.steps for level in stage.levels)
        names = parts if stage.trainable is None else stage.trainable
        unknown = sorted(set(names) - set(parts))
        if unknown or not names:
            fail(f"{where}.trainable", f"must name some of the parts {list(parts)}", stage.trainable)
        autoencoder_loss = stage.loss is not None and dict(stage.loss).get("name", run.loss.name) == "vqvae"
        if autoencoder_loss and list(names) != ["autoencoder"]:
            fail(f"{where}.trainable", "must be [autoencoder] in a stage whose loss is vqvae (it trains the "
                 "autoencoder alone)", stage.trainable)
        if "autoencoder" in names and not autoencoder_loss:
            fail(f"{where}.trainable", "must not hold the autoencoder in a stage with a diffusion loss: the "
                 "diffusion prior learns the frozen encoder's latent maps (train the autoencoder in a stage "
                 "with loss {name: vqvae})", stage.trainable)
        for name in names:
            settings, at = (run.optim_parts[name], f"optim_parts.{name}") if name in run.optim_parts else (run.optim, "optim")
            settings.check(at, steps)
        if stage.loss is not None:
            loss = stage_loss(stage, run.loss, where)
            loss.check(f"{where}.loss")
            if loss.name == "vqvae":  # trains the autoencoder alone (checked above)
                continue
            if loss.name == "vdm" and loss.learned_schedule and "schedule" not in parts:
                fail(f"{where}.loss.learned_schedule", "needs the run's loss to learn the schedule (loss=vdm with "
                     "loss.learned_schedule=true): a stage trains the run's parts", loss.learned_schedule)
            if loss.parameterisation != run.loss.parameterisation:
                fail(f"{where}.loss.parameterisation", f"must be the run's loss.parameterisation "
                     f"{run.loss.parameterisation.value} (the samplers read the network's output by it)",
                     loss.parameterisation.value)
            if build.self_conditioned(loss) != build.self_conditioned(run.loss):
                fail(f"{where}.loss.self_conditioning", f"must be the run's loss.self_conditioning "
                     f"{build.self_conditioned(run.loss)} (the network's input channels follow it)",
                     build.self_conditioned(loss))
    unknown = sorted(set(run.optim_parts) - set(parts))
    if unknown:
        fail("optim_parts", f"must name parts of the run {list(parts)}", unknown)
    t0, t1 = run.sde.t0, run.sde.t1
    run.sampler.check("sampler", t0, t1, run.train.sample_grids)
    if run.train.evaluate:
        run.train.evaluation.check("train.evaluation", t0, t1)
    if build.self_conditioned(run.loss):
        run.sampler.check_self_conditioned("sampler")
        if run.train.evaluate:
            run.train.evaluation.sampler.check_self_conditioned("train.evaluation.sampler")
    build.build_source(cfg.data)
    build.build_sde(cfg)
    build.build_sampler(cfg)
    if run.train.evaluate:
        build.build_sampler(cfg, cfg.train.evaluation.sampler, "train.evaluation.sampler")
    if run.train.report.name is not None:
        from ..reports import REPORTS

        REPORTS[run.train.report.name].check(cfg)
    build.check_run_grids(cfg, _grids(run))
    return run


def _grids(run: RunConfig) -> list[tuple[str, int]]:
    """Every grid a run puts its network on, with the field that sets it."""
    grids = []
    for i, stage in enumerate(run.train.stage_list()):
        at = f"train.stages[{i}]" if run.train.stages else "train"
        grids += [(f"{at}.levels[{j}].grid", level.grid) for j, level in enumerate(stage.levels)]
    grids += [(f"train.sample_grids[{i}]", n) for i, n in enumerate(run.train.sample_grids)]
    if run.sampler.coarse_grid is not None:
        grids.append(("sampler.coarse_grid", run.sampler.coarse_grid))
    if run.train.heldout.every:
        grids.append(("train.heldout.grid", run.train.heldout.grid))
    if run.train.evaluate:
        grids += run.train.evaluation.network_grids("train.evaluation")
    if run.train.report.name is not None:
        grids += [(f"train.report.grids[{i}]", n) for i, n in enumerate(run.train.report.grids)]
    return grids
