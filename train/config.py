"""Checks of the composed hydra config, run at start-up before anything is built or compiled.

Every user-settable field is checked here; a wrong value raises `ConfigError` naming the field, e.g.
`train.levels[1].grid must be a positive int, got -3`. The model group's fields are checked by the
network's constructor, whose errors `train.build` reports under `model.`.
"""

import math
import pathlib
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A config field has a wrong value."""


PRIORS = ("matern", "laplacian", "white")
SDES = ("vp", "subvp", "ve")
SCHEDULES = ("linear", "cosine")
SPACINGS = ("uniform", "log_snr")
PARAMETERISATIONS = ("epsilon", "x0", "v", "score")
WEIGHTINGS = ("simple", "likelihood", "p2")
TIME_SAMPLINGS = ("stratified", "uniform", "antithetic")
NORMS = ("l2", "cameron_martin")
SAMPLERS = ("euler_maruyama", "pc", "ode")  # of the sample grids of a run
SAMPLER_NAMES = ("euler_maruyama", "shark", "ode", "ddim", "pc")  # of train.sample and train.evaluate
ODE_SOLVERS = ("tsit5", "heun", "euler")
SPLITS = {"train": 60_000, "t10k": 10_000}
WEIGHTS = ("ema", "raw")  # the weights a trained model is sampled with: the EMA ones or the last ones


def _fail(field: str, requirement: str, value: Any) -> None:
    raise ConfigError(f"{field} {requirement}, got {value!r}.")


def _get(cfg, field: str) -> Any:
    node: Any = cfg
    for part in field.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            raise ConfigError(f"{field} is missing from the config.")
        node = node[part]
    return node


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _int(cfg, field, low=None, high=None, what=None) -> int:
    value = _get(cfg, field)
    ok = _is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        if what is None:
            what = "a positive int" if low == 1 and high is None else (
                "an int >= 0" if low == 0 and high is None else f"an int in [{low}, {high}]")
        _fail(field, f"must be {what}", value)
    return value


def _number(cfg, field, check: Callable[[float], bool], what: str) -> float:
    value = _get(cfg, field)
    if not _is_number(value) or not check(value):
        _fail(field, f"must be {what}", value)
    return float(value)


def _choice(cfg, field, choices) -> str:
    value = _get(cfg, field)
    if value not in choices:
        _fail(field, f"must be one of {', '.join(choices)}", value)
    return value


def _bool(cfg, field) -> bool:
    value = _get(cfg, field)
    if not isinstance(value, bool):
        _fail(field, "must be true or false", value)
    return value


def _range(cfg, field, size: int, split: str) -> tuple[int, int] | None:
    value = _get(cfg, field)
    if value is None:
        return None
    if (
        not isinstance(value, (ListConfig, list))
        or len(value) != 2
        or not all(_is_int(v) for v in value)
        or not 0 <= value[0] < value[1] <= size
    ):
        _fail(field, f"must be [start, stop] with 0 <= start < stop <= {size} (split {split}) or null", value)
    return int(value[0]), int(value[1])


def validate(cfg: DictConfig) -> None:
    """Check every field of a composed training config; raise `ConfigError` naming the first bad one.

    **Arguments:**

    - `cfg`: the config composed by hydra (`configs/config.yaml` and its groups).
    """
    if not isinstance(_get(cfg, "name"), str) or not _get(cfg, "name"):
        _fail("name", "must be a non-empty string", _get(cfg, "name"))
    _validate_data(cfg)
    _validate_prior(cfg)
    _validate_sde(cfg)
    _validate_loss(cfg)
    levels = _validate_train(cfg)
    _validate_optim(cfg, sum(level[1] for level in levels))
    _validate_sampler(cfg)
    if not isinstance(_get(cfg, "model"), DictConfig) or not isinstance(_get(cfg, "model.name"), str):
        _fail("model.name", "must name a network (a file of configs/model/)", _get(cfg, "model"))


def _validate_data(cfg):
    _choice(cfg, "data.name", ("mnist",))
    root = _get(cfg, "data.root")
    if root is not None and not isinstance(root, str):
        _fail("data.root", "must be a folder path or null", root)
    _bool(cfg, "data.download")
    split = _choice(cfg, "data.split", tuple(SPLITS))
    train = _range(cfg, "data.train_range", SPLITS[split], split)
    held = _range(cfg, "data.holdout_range", SPLITS[split], split)
    train = train or (0, SPLITS[split])
    if held is not None and max(train[0], held[0]) < min(train[1], held[1]):
        raise ConfigError(
            f"data.holdout_range {list(held)} overlaps data.train_range {list(train)}: held-out digits "
            "must not be trained on."
        )
    _number(cfg, "data.smoothing", lambda v: v >= 0, "a number >= 0 (pixels)")
    _int(cfg, "data.worker_count", 0)
    _int(cfg, "data.worker_buffer_size", 1)
    _int(cfg, "data.read_threads", 1)
    _int(cfg, "data.prefetch_buffer", 1)


def _validate_prior(cfg):
    name = _choice(cfg, "prior.name", PRIORS)
    dim = 2
    if name in ("matern", "laplacian"):
        _number(cfg, "prior.s", lambda v: v > dim / 2, f"> d/2 = {dim / 2:g} for a trace-class prior on 2-D fields")
    if name == "matern":
        _number(cfg, "prior.tau", lambda v: v > 0, "a number > 0")
    _number(cfg, "prior.variance", lambda v: v > 0, "a number > 0")


def _validate_sde(cfg):
    name = _choice(cfg, "sde.name", SDES)
    t1 = _number(cfg, "sde.t1", lambda v: v > 0, "a number > 0")
    _number(cfg, "sde.t0", lambda v: 0 <= v < t1, f"a number in [0, sde.t1 = {t1:g})")
    if name in ("vp", "subvp"):
        schedule = _choice(cfg, "sde.schedule", SCHEDULES)
        if schedule == "linear":
            low = _number(cfg, "sde.beta_min", lambda v: v > 0, "a number > 0")
            _number(cfg, "sde.beta_max", lambda v: v >= low, f"a number >= sde.beta_min = {low:g}")
        else:
            _number(cfg, "sde.cosine_offset", lambda v: v > 0, "a number > 0")
            _number(cfg, "sde.min_alpha_bar", lambda v: 0 < v < 1, "a number in (0, 1)")
    else:
        low = _number(cfg, "sde.sigma_min", lambda v: v > 0, "a number > 0")
        _number(cfg, "sde.sigma_max", lambda v: v > low, f"a number > sde.sigma_min = {low:g}")


def _validate_loss(cfg):
    _choice(cfg, "loss.name", ("dsm",))
    _choice(cfg, "loss.parameterisation", PARAMETERISATIONS)
    _choice(cfg, "loss.weighting", WEIGHTINGS)
    _choice(cfg, "loss.time_sampling", TIME_SAMPLINGS)
    _choice(cfg, "loss.norm", NORMS)


def _validate_train(cfg) -> list[tuple[int, int]]:
    _int(cfg, "train.seed", 0)
    batch = _int(cfg, "train.batch_size", 1)
    levels = _get(cfg, "train.levels")
    if not isinstance(levels, ListConfig) or len(levels) == 0:
        _fail("train.levels", "must be a non-empty list of {grid, steps}", levels)
    out = []
    for i, level in enumerate(levels):
        field = f"train.levels[{i}]"
        if not isinstance(level, DictConfig) or set(level.keys()) != {"grid", "steps"}:
            _fail(field, "must be {grid: int, steps: int}", OmegaConf.to_container(level) if isinstance(level, DictConfig) else level)
        for key in ("grid", "steps"):
            if not _is_int(level[key]) or level[key] < 1:
                _fail(f"{field}.{key}", "must be a positive int", level[key])
        out.append((level.grid, level.steps))
    run_dir = _get(cfg, "train.run_dir")
    if not isinstance(run_dir, str) or not run_dir:
        _fail("train.run_dir", "must be a folder path", run_dir)
    _int(cfg, "train.log_every", 1)
    _int(cfg, "train.ckpt_every", 1)
    _int(cfg, "train.keep_checkpoints", 1)
    _int(cfg, "train.sample_every", 0)
    grids = _get(cfg, "train.sample_grids")
    if not isinstance(grids, ListConfig) or not all(_is_int(g) and g >= 1 for g in grids):
        _fail("train.sample_grids", "must be a list of positive ints", grids)
    _int(cfg, "train.num_samples", 1)
    devices = _get(cfg, "train.devices")
    if devices != "auto" and not (_is_int(devices) and devices >= 1):
        _fail("train.devices", "must be auto or a positive int", devices)
    if _is_int(devices) and batch % devices != 0:
        raise ConfigError(f"train.batch_size {batch} must be a multiple of train.devices {devices}.")
    stop = _get(cfg, "train.stop_after")
    if stop is not None and not (_is_int(stop) and stop >= 1):
        _fail("train.stop_after", "must be a positive int or null", stop)
    _bool(cfg, "train.progress_bar")
    evaluation = _get(cfg, "train.evaluation")
    if evaluation is not None:
        if not isinstance(evaluation, DictConfig):
            _fail("train.evaluation", "must be null or a mapping of configs/evaluate.yaml fields", evaluation)
        known = _evaluate_defaults()
        for field in evaluation:
            if field not in known or field == "run_dir":
                raise ConfigError(
                    f"train.evaluation.{field} is not a field of configs/evaluate.yaml that a run sets."
                )
        # The fields the end of the run will use (its overrides over configs/evaluate.yaml), checked
        # now rather than after the training.
        view = OmegaConf.create({"sde": _get(cfg, "sde"), "train": {"evaluation": evaluation_fields(cfg)}})
        _choice(view, "train.evaluation.weights", WEIGHTS)
        grid = _int(view, "train.evaluation.grid", 4, what="an int >= 4")
        _int(view, "train.evaluation.num_samples", 1)
        _int(view, "train.evaluation.batch_size", 1)
        _validate_sampler(view, "train.evaluation.sampler", SAMPLER_NAMES, [grid])
    split = _get(cfg, "data.split")
    start, stop_index = _range(cfg, "data.train_range", SPLITS[split], split) or (0, SPLITS[split])
    if batch > stop_index - start:
        raise ConfigError(
            f"train.batch_size {batch} must not exceed the {stop_index - start} digits of data.train_range."
        )
    return out


def _validate_optim(cfg, total_steps: int):
    _choice(cfg, "optim.name", ("adamw",))
    _number(cfg, "optim.lr", lambda v: v > 0, "a number > 0")
    _int(cfg, "optim.warmup_steps", 0, total_steps - 1,
         what=f"an int in [0, {total_steps - 1}] (below the {total_steps} steps of train.levels)")
    _number(cfg, "optim.final_lr_fraction", lambda v: 0 <= v <= 1, "a number in [0, 1]")
    if _get(cfg, "optim.clip_norm") is not None:
        _number(cfg, "optim.clip_norm", lambda v: v > 0, "a number > 0 or null")
    _number(cfg, "optim.weight_decay", lambda v: v >= 0, "a number >= 0")
    _number(cfg, "optim.b1", lambda v: 0 <= v < 1, "a number in [0, 1)")
    _number(cfg, "optim.b2", lambda v: 0 <= v < 1, "a number in [0, 1)")
    _number(cfg, "optim.ema_decay", lambda v: 0 <= v < 1, "a number in [0, 1)")


def _evaluate_defaults() -> DictConfig:
    """`configs/evaluate.yaml` without its hydra-only parts (defaults, hydra, data)."""
    base = OmegaConf.load(pathlib.Path(__file__).resolve().parents[1] / "configs" / "evaluate.yaml")
    for key in ("defaults", "hydra", "data"):
        base.pop(key, None)
    return base


def evaluation_fields(cfg: DictConfig) -> DictConfig:
    """The evaluation at the end of a run: `configs/evaluate.yaml` under its `train.evaluation` overrides."""
    return OmegaConf.merge(_evaluate_defaults(), _get(cfg, "train.evaluation"))


def _validate_sampler(cfg, prefix: str = "sampler", names=SAMPLERS, grids=None):
    """The sampler fields at `prefix`; with `coarse_grid`, it must not exceed any of `grids`
    (default: `train.sample_grids`)."""
    sampler = _get(cfg, prefix)
    name = _choice(cfg, f"{prefix}.name", names)
    _bool(cfg, f"{prefix}.denoise")
    if "spacing" in sampler:
        _choice(cfg, f"{prefix}.spacing", SPACINGS)
    if sampler.get("t_end") is not None:
        _number(cfg, f"{prefix}.t_end", lambda v: 0 < v < _get(cfg, "sde.t1"), "null or a number in (0, sde.t1)")
    if sampler.get("coarse_grid") is not None:
        coarse = _int(cfg, f"{prefix}.coarse_grid", 4, what="null or an int >= 4")
        t0, t1 = _get(cfg, "sde.t0"), _get(cfg, "sde.t1")
        switch = _number(cfg, f"{prefix}.switch_time", lambda v: t0 < v < t1, "a number in (sde.t0, sde.t1)")
        t_end = sampler.get("t_end")
        if t_end is not None and not t_end < switch:
            raise ConfigError(f"{prefix}.t_end {t_end} must be below {prefix}.switch_time {switch}.")
        if grids is None:
            grids, where = list(_get(cfg, "train.sample_grids")), "train.sample_grids"
        else:
            where = "the grids it samples"
        if any(g < coarse for g in grids):
            raise ConfigError(f"{prefix}.coarse_grid {coarse} must not exceed any of {where} {list(grids)}.")
        if _get(cfg, f"{prefix}.steps") is not None:
            _int(cfg, f"{prefix}.steps", 2, what="an int >= 2 (split between the two grids) or null")
    if name in ("euler_maruyama", "pc", "ddim"):
        _int(cfg, f"{prefix}.steps", 1)
        if name == "pc":
            _int(cfg, f"{prefix}.corrector_steps", 1)
            _number(cfg, f"{prefix}.snr", lambda v: v > 0, "a number > 0")
        return
    solver = _choice(cfg, f"{prefix}.solver", ODE_SOLVERS) if name == "ode" else "tsit5"
    if _get(cfg, f"{prefix}.steps") is None:
        if solver != "tsit5":
            raise ConfigError(
                f"{prefix}.steps is null (adaptive steps), which needs {prefix}.solver = tsit5, got {solver!r}."
            )
        _number(cfg, f"{prefix}.rtol", lambda v: v > 0, "a number > 0")
        _number(cfg, f"{prefix}.atol", lambda v: v > 0, "a number > 0")
    else:
        _int(cfg, f"{prefix}.steps", 1, what="a positive int or null")
    if name == "ode" and "variables" in sampler:
        _choice(cfg, f"{prefix}.variables", ("t", "sigma", "log_sigma"))


def total_steps(cfg: DictConfig) -> int:
    """The number of steps of the whole curriculum."""
    return int(sum(level.steps for level in cfg.train.levels))


def level_at(cfg: DictConfig, step: int) -> int:
    """The index of the curriculum level that global step `step` (0-based, the next to take) belongs to."""
    end = 0
    for i, level in enumerate(cfg.train.levels):
        end += int(level.steps)
        if step < end:
            return i
    return len(cfg.train.levels) - 1
