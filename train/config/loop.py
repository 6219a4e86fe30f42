"""Schemas of the `optim` and `train` groups: the optimiser and the training loop."""

import dataclasses
from typing import Any, Optional

from .errors import Choice, ConfigError, fail, number, positive
from .evaluation import EvaluationConfig
from .heldout import HeldoutConfig
from .report import ReportConfig


@dataclasses.dataclass
class AdamWConfig:
    """AdamW with linear warm-up, then cosine decay over each stage's own steps (each stage starts its
    optimiser afresh), or schedule-free AdamW at the constant peak rate (`schedule_free`)."""

    name: str = "adamw"  # the optimiser: adamw (this schema)
    lr: float = 2.0e-3  # peak learning rate, > 0
    warmup_steps: int = 200  # linear warm-up from 0, 0 <= warmup_steps < total steps
    final_lr_fraction: float = 0.05  # learning rate at the last step as a fraction of lr, in [0, 1]
    clip_norm: Optional[float] = 1.0  # clip gradients to this global norm; null: no clipping
    weight_decay: float = 0.0  # decoupled weight decay, >= 0
    b1: float = 0.9  # Adam's first-moment decay, in [0, 1) (in (0, 1) with schedule_free)
    b2: float = 0.999  # Adam's second-moment decay, in [0, 1)
    ema_decay: float = 0.999  # decay of the EMA of the weights (the EMA weights are the ones sampled), in [0, 1)
    ema_warmup: bool = False  # ramp the EMA decay up as min(ema_decay, (1 + n) / (10 + n)) at step n
    schedule_free: bool = False  # schedule-free AdamW (optax.contrib): warm-up then a constant rate, its averaged iterate evaluated (and averaged by the EMA); final_lr_fraction unused

    def check(self, where: str, total_steps: int) -> None:
        number(f"{where}.lr", self.lr, lambda v: v > 0, "a number > 0")
        if not 0 <= self.warmup_steps < total_steps:
            fail(f"{where}.warmup_steps", f"must be an int in [0, {total_steps - 1}] (below the "
                 f"{total_steps} steps of the stage it trains in)", self.warmup_steps)
        number(f"{where}.final_lr_fraction", self.final_lr_fraction, lambda v: 0 <= v <= 1, "a number in [0, 1]")
        if self.clip_norm is not None:
            number(f"{where}.clip_norm", self.clip_norm, lambda v: v > 0, "a number > 0 or null")
        number(f"{where}.weight_decay", self.weight_decay, lambda v: v >= 0, "a number >= 0")
        for field in ("b1", "b2", "ema_decay"):
            number(f"{where}.{field}", getattr(self, field), lambda v: 0 <= v < 1, "a number in [0, 1)")
        if self.schedule_free and self.b1 == 0:  # its averaged iterate's weight divides by b1
            fail(f"{where}.b1", "must be > 0 with schedule_free (its interpolation divides by b1)", self.b1)


class NonFinite(Choice):
    """What a step whose loss or gradient is not finite does to the run (its update is never applied)."""

    stop = "stop"  # stop with the step and where it appeared; the last checkpoint is kept
    skip = "skip"  # go on without that update, counting such steps (up to train.max_skipped)


@dataclasses.dataclass
class LevelConfig:
    """One level of the multilevel curriculum."""

    grid: int = 32  # grid size n of the functions (n on every axis), a positive int
    steps: int = 1000  # training steps at this grid, a positive int


@dataclasses.dataclass
class StageConfig:
    """One stage of a run: the parts it trains, its loss and its curriculum. A new stage starts its
    optimiser afresh (a learning-rate schedule over its own steps); parts it does not train stay
    frozen, with their EMA."""

    name: str = "stage"  # the stage's name in the logs
    trainable: Optional[list[str]] = None  # the parts it trains (e.g. [network]); null: every part
    levels: list[LevelConfig] = dataclasses.field(default_factory=list)  # its curriculum: [{grid, steps}, ...]
    loss: Optional[Any] = None  # its loss, a mapping: {field: value, ...} is the run's loss with those fields replaced, {name: vqvae, ...} that option from its defaults; null: the run's loss


@dataclasses.dataclass(frozen=True)
class Phase:
    """One level of one stage, placed in the run's global step count."""

    stage: int  # index of the stage
    level: int  # index of the level within its stage
    grid: int  # the level's grid size
    start: int  # the first global step of the level
    end: int  # one past its last global step


class Distributed(Choice):
    """Whether a run starts JAX's distributed runtime (`jax.distributed.initialize`)."""

    auto = "auto"  # when a cluster environment asks for several processes (SLURM, Open MPI, JAX_COORDINATOR_ADDRESS, a TPU pod) or coordinator is set
    on = "on"  # always (JAX detects the cluster, or the fields below say it)
    off = "off"  # one process


@dataclasses.dataclass
class DistributedConfig:
    """Several processes (hosts) training one model: one global mesh over every process's devices."""

    mode: Distributed = Distributed.auto  # auto | on | off
    coordinator: Optional[str] = None  # host:port of process 0's coordinator; null: from the cluster environment
    num_processes: Optional[int] = None  # the number of processes; null: from the cluster environment
    process_id: Optional[int] = None  # this process's index in 0..num_processes-1; null: from the cluster environment
    heartbeat_timeout: int = 60  # seconds without a heartbeat after which a process counts as dead and the others stop

    def check(self, where: str) -> None:
        given = [self.coordinator is not None, self.num_processes is not None, self.process_id is not None]
        if any(given) and not all(given):
            fail(f"{where}.coordinator", "num_processes and process_id are given together or not at all",
                 [self.coordinator, self.num_processes, self.process_id])
        if self.num_processes is not None:
            positive(f"{where}.num_processes", self.num_processes)
            if not 0 <= self.process_id < self.num_processes:
                fail(f"{where}.process_id", f"must be in 0..{self.num_processes - 1}", self.process_id)
        positive(f"{where}.heartbeat_timeout", self.heartbeat_timeout)


class InitWhat(Choice):
    """What a new run takes from another run's checkpoint (`train.init_from`)."""

    weights = "weights"  # the parts and their EMA; a fresh optimiser
    everything = "everything"  # the parts, their EMA and the optimiser state (its moments and schedule count)


@dataclasses.dataclass
class InitFromConfig:
    """Start a new run from another run's checkpoint: to fine-tune at a new resolution or on new data."""

    run_dir: Optional[str] = None  # the other run's folder; null: start from a fresh initialisation
    step: Optional[int] = None  # its checkpoint to start from; null: the latest
    what: InitWhat = InitWhat.weights  # weights | everything

    def check(self, where: str) -> None:
        import pathlib

        if self.step is not None:
            positive(f"{where}.step", self.step)
        if self.run_dir is not None and not (pathlib.Path(self.run_dir) / "config.yaml").is_file():
            fail(f"{where}.run_dir", "must be the folder of a training run (it holds no config.yaml)", self.run_dir)


class Sink(Choice):
    """Where the metrics go besides metrics.jsonl (`train.sinks`)."""

    tensorboard = "tensorboard"  # event files in <run_dir>/tensorboard (needs tensorboardX: the [tensorboard] extra)
    wandb = "wandb"  # a Weights & Biases run (needs wandb: the [wandb] extra)


class WandbMode(Choice):
    """How the Weights & Biases run connects."""

    auto = "auto"  # online when an API key is known and the server answers, else offline
    online = "online"
    offline = "offline"  # kept under <run_dir>/wandb, for `wandb sync`


@dataclasses.dataclass
class WandbConfig:
    """The Weights & Biases run of `train.sinks=[wandb]`."""

    project: str = "sdeflow"  # the W&B project; the run is named after the run folder
    mode: WandbMode = WandbMode.auto  # auto | online | offline


@dataclasses.dataclass
class TrainConfig:
    """The training loop: one model trained on each grid of `levels` in turn."""

    seed: int = 0  # seed of the model's initialisation, the data order and the noise (0 <= seed < 2**32)
    batch_size: int = 64  # examples per step; a multiple of the number of devices
    levels: list[LevelConfig] = dataclasses.field(
        default_factory=lambda: [LevelConfig(32, 2000), LevelConfig(64, 500)]
    )  # the curriculum: [{grid, steps}, ...], trained in order (the step compiles once per grid); used when stages is empty
    stages: list[StageConfig] = dataclasses.field(default_factory=list)  # the run's stages in order; empty: one stage of every part over levels
    run_dir: str = "runs/${name}"  # the run folder; started again with the same folder, a run resumes
    log_every: int = 25  # steps between metrics-log records and progress-bar updates
    ckpt_every: int = 500  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 3  # number of latest checkpoints kept
    sample_every: int = 0  # steps between sample grids (0: only at the end)
    sample_grids: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 128])  # grids of the sample PNGs (any, also never trained on)
    num_samples: int = 36  # samples per grid
    evaluate: bool = False  # at the end of the run, write train.evaluate's metrics to <run_dir>/evaluation.json (drawn with evaluation.sampler and evaluation.weights; when these are the PNGs' sampler and EMA weights on one of their grids and sample_every is 0, its first samples are that grid's PNG)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)  # that evaluation's fields (as train.evaluate's)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)  # an experiment's own end-of-run report (train.reports), if any
    heldout: HeldoutConfig = dataclasses.field(default_factory=HeldoutConfig)  # the loss of held-out data on one grid, logged every heldout.every steps (0: never)
    devices: Any = "auto"  # number of devices of the data mesh: auto (the fastest on CPU, all accelerators) or an int
    stop_after: Optional[int] = None  # stop (checkpointed) after this global step, to resume later; null: run to the end
    progress_bar: bool = True  # show the tqdm bar (the metrics log is written either way)
    nonfinite: NonFinite = NonFinite.stop  # a step with a NaN or inf loss or gradient: stop | skip (its update is never applied)
    max_skipped: int = 10  # with nonfinite=skip: stop once more steps than this were skipped
    distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)  # several processes: jax.distributed
    sinks: list[Sink] = dataclasses.field(default_factory=list)  # metrics, sample PNGs and the loss curve also go to: tensorboard, wandb
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)  # the W&B run of sinks=[wandb]
    init_from: InitFromConfig = dataclasses.field(default_factory=InitFromConfig)  # a new run starts from another run's checkpoint (a resumed run from its own)

    def check(self, where: str = "train") -> None:
        positive(f"{where}.seed", self.seed, 0)
        if self.seed >= 2**32:
            fail(f"{where}.seed", "must be below 2**32 (the data order's seed is 32 bits)", self.seed)
        positive(f"{where}.batch_size", self.batch_size)
        for i, stage in enumerate(self.stage_list()):
            at = f"{where}.stages[{i}]" if self.stages else where
            if not stage.levels:
                fail(f"{at}.levels", "must be a non-empty list of {grid, steps}", [])
            for j, level in enumerate(stage.levels):
                positive(f"{at}.levels[{j}].grid", level.grid)
                positive(f"{at}.levels[{j}].steps", level.steps)
        if not self.run_dir:
            fail(f"{where}.run_dir", "must be a folder path", self.run_dir)
        for field in ("log_every", "ckpt_every", "keep_checkpoints", "num_samples"):
            positive(f"{where}.{field}", getattr(self, field))
        positive(f"{where}.sample_every", self.sample_every, 0)
        if not all(g >= 1 for g in self.sample_grids):
            fail(f"{where}.sample_grids", "must be a list of positive ints", list(self.sample_grids))
        is_int = isinstance(self.devices, int) and not isinstance(self.devices, bool)
        if self.devices != "auto" and not (is_int and self.devices >= 1):
            fail(f"{where}.devices", "must be auto or a positive int", self.devices)
        if is_int and self.batch_size % self.devices:
            raise ConfigError(f"{where}.batch_size {self.batch_size} must be a multiple of {where}.devices {self.devices}.")
        if self.stop_after is not None:
            positive(f"{where}.stop_after", self.stop_after)
        positive(f"{where}.max_skipped", self.max_skipped, 0)
        self.distributed.check(f"{where}.distributed")
        self.init_from.check(f"{where}.init_from")
        self.report.check(f"{where}.report")
        self.heldout.check(f"{where}.heldout")

    def stage_list(self) -> list[StageConfig]:
        """The stages of the run: `stages`, or one stage of every part over `levels`."""
        return list(self.stages) or [StageConfig(name="train", levels=list(self.levels))]

    def phases(self) -> list[Phase]:
        """Every level of every stage, in order, with its global steps."""
        out, end = [], 0
        for i, stage in enumerate(self.stage_list()):
            for j, level in enumerate(stage.levels):
                out.append(Phase(i, j, level.grid, end, end + level.steps))
                end += level.steps
        return out

    def total_steps(self) -> int:
        """The number of steps of the whole run."""
        return sum(level.steps for stage in self.stage_list() for level in stage.levels)

    def checkpoint_stage(self, step: int) -> int:
        """The stage whose optimiser state a checkpoint written after `step` steps holds: that
        of its last step (a checkpoint at a stage's end still holds that stage's)."""
        return self.phase_at(max(step - 1, 0)).stage

    def phase_at(self, step: int) -> Phase:
        """The level that global step `step` (0-based, the next to take) belongs to; past the end, the last."""
        phases = self.phases()
        return next((phase for phase in phases if step < phase.end), phases[-1])

