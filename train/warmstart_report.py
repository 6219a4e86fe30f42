"""The report of the `warmstart` experiment (`train.report.name=warmstart`): does training coarse
first, then fine, reach a held-out loss on the fine grid sooner than training on the fine grid from
scratch with the same budget?

The run itself is the warm-start arm: its `train.levels` train coarse grids first and end on the
fine grid `train.heldout.grid`. At its end this report trains the from-scratch arm in the same
process: the same config (model, seed, optimiser, data, held-out evaluation) with one level on the
fine grid, in `<run_dir>/from_scratch/`. The two arms get the same budget of grid points: the sum
over levels of steps x n² (times the batch, the same in both), so the from-scratch arm takes
$\\sum_i s_i n_i^2 / n^2$ steps. Its cost in training FLOPs is close to that of the warm-start arm
for a network whose cost grows as the number of grid points; the measured training times of both
arms are written beside it. Then it writes into the run folder:

- `warmstart.json`: each arm's levels, final held-out loss and training time; the loss level both
  are compared at (the worse of the two final held-out losses) and the training time each first
  reaches it (`time_to_reach`), with and without each level's first step (its compilation);
- `warmstart.png`: the held-out loss on the fine grid against training time, both arms.
"""

import json
import logging
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError

logger = logging.getLogger("train.report")

SCRATCH = "from_scratch"
"""The from-scratch arm's folder inside the run folder."""


def check_warmstart(cfg: DictConfig) -> None:
    """The run must log the held-out loss and train on coarser grids first, ending on its grid."""
    t = cfg.train
    if t.stages:
        raise ConfigError("train.report.name=warmstart compares curricula of train.levels; train.stages must be empty.")
    if not t.heldout.every:
        raise ConfigError("train.report.name=warmstart compares held-out losses: train.heldout.every must be "
                          "a positive int, got 0.")
    grids = [int(level["grid"]) for level in t.levels]
    fine = int(t.heldout.grid)
    if len(grids) < 2 or grids[-1] != fine or not all(n < fine for n in grids[:-1]):
        raise ConfigError(f"train.report.name=warmstart needs train.levels on coarser grids first, then the last on "
                          f"train.heldout.grid = {fine}, got grids {grids}.")
    scratch_steps(t.levels, fine, int(cfg.optim.warmup_steps))


def scratch_steps(levels: Sequence[Any], grid: int, warmup_steps: int = 0) -> int:
    """The steps on `grid` with the budget of `levels` in grid points: $\\sum_i s_i n_i^2 / n^2$, rounded.

    **Arguments:**

    - `levels`: `{grid, steps}` items (a run's `train.levels`).
    - `grid`: the grid $n$ of the from-scratch arm.
    - `warmup_steps`: the optimiser's warm-up, which the arm's steps must exceed.

    **Returns:**

    The from-scratch arm's number of steps.
    """
    points = sum(int(level["steps"]) * int(level["grid"]) ** 2 for level in levels)
    steps = round(points / grid**2)
    if steps <= warmup_steps:
        raise ConfigError(f"train.levels: the from-scratch arm's {steps} steps on {grid}² (the same grid points) "
                          f"must exceed optim.warmup_steps = {warmup_steps}.")
    return steps


def scratch_config(cfg: DictConfig, run_dir: pathlib.Path) -> DictConfig:
    """The from-scratch arm's config: `cfg` with one level on the fine grid of the same budget, its
    own run folder and no report."""
    scratch = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    fine = int(cfg.train.heldout.grid)
    scratch.train.levels = [{"grid": fine, "steps": scratch_steps(cfg.train.levels, fine)}]
    scratch.train.run_dir = str(run_dir / SCRATCH)
    scratch.train.report.name = None
    from .config.programs import typed

    return typed(scratch)


def heldout_curve(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(steps, train_times, losses)` of the `heldout` records of a metrics log, by step (the last
    record of a step kept)."""
    by_step = {r["step"]: r for r in records if r.get("event") == "heldout"}
    rows = [by_step[step] for step in sorted(by_step)]
    return (np.array([r["step"] for r in rows], int), np.array([r["train_time"] for r in rows], float),
            np.array([r["heldout_loss"] for r in rows], float))


def time_to_reach(times: Sequence[float], losses: Sequence[float], level: float) -> float | None:
    """The first time a curve reaches `level`: linear in time between the last point above it and
    the first at or below it; `None` if it never does.

    **Arguments:**

    - `times`: increasing times of the points.
    - `losses`: the curve's values there.
    - `level`: the loss to reach.

    **Returns:**

    The time, or `None`.
    """
    times, losses = np.asarray(times, float), np.asarray(losses, float)
    below = np.flatnonzero(losses <= level)
    if below.size == 0:
        return None
    i = int(below[0])
    if i == 0:
        return float(times[0])
    fraction = (losses[i - 1] - level) / (losses[i - 1] - losses[i])
    return float(times[i - 1] + fraction * (times[i] - times[i - 1]))


def _arm(records: list[dict], levels: Sequence[Any], run_dir: pathlib.Path) -> dict:
    """One arm's levels, budget, held-out curve, final loss and first steps, from its metrics log."""
    steps, times, losses = heldout_curve(records)
    first_steps = [r for r in records if r.get("event") == "first_step"]
    return {
        "run_dir": str(run_dir),
        "levels": [{"grid": int(level["grid"]), "steps": int(level["steps"])} for level in levels],
        "grid_points": int(sum(int(level["steps"]) * int(level["grid"]) ** 2 for level in levels)),
        "final_heldout_loss": float(losses[-1]),
        "train_time": float(times[-1]),
        "first_steps": [{"grid": int(r["grid"]), "seconds": float(r["seconds"]), "train_time": float(r["train_time"])}
                        for r in first_steps],  # each level's first step (its compilation included), when it began
        "curve": {"step": steps.tolist(), "train_time": times.tolist(), "heldout_loss": losses.tolist()},
    }


def _without_first_steps(arm: dict, time: float | None) -> float | None:
    """`time` less the first steps (with their compilation) of the levels begun by then."""
    if time is None:
        return None
    return time - sum(first["seconds"] for first in arm["first_steps"] if first["train_time"] < time)


def compare_arms(arms: dict[str, dict], heldout: dict) -> dict:
    """The comparison of the arms (`_arm`s, the warm start's first): the level both are compared
    at (the worse of their final held-out losses) and the training time each first reaches it.

    **Arguments:**

    - `arms`: `{name: arm}`, each with its `curve` of held-out losses against training time.
    - `heldout`: the `train.heldout` fields of the evaluation.

    **Returns:**

    The content of `warmstart.json`.
    """
    level = max(arm["final_heldout_loss"] for arm in arms.values())
    reach = {name: time_to_reach(arm["curve"]["train_time"], arm["curve"]["heldout_loss"], level)
             for name, arm in arms.items()}
    warm, scratch = reach.values()
    return {
        "heldout": heldout,
        "budget": "the same grid points: sum over levels of steps x n^2 (x the batch, the same in both arms)",
        "level": level,
        "level_is": "the worse of the two final held-out losses",
        "time_to_reach": reach,
        "time_to_reach_without_first_steps": {name: _without_first_steps(arms[name], reach[name]) for name in arms},
        "speedup": scratch / warm if warm and scratch else None,
        "arms": arms,
    }


def write_warmstart(state, sde, cfg: DictConfig, run_dir: pathlib.Path, step: int) -> list[pathlib.Path]:
    """Train the from-scratch arm, then write `warmstart.json` and `warmstart.png`."""
    from .progress import MetricsLog, plt
    from .training import run

    scratch = scratch_config(cfg, run_dir)
    logger.info(f"warmstart report: the from-scratch arm, {scratch.train.levels[0].steps} steps on "
                f"{scratch.train.levels[0].grid}², in {scratch.train.run_dir}")
    run(scratch, progress_bar=bool(cfg.train.progress_bar))
    arms = {
        "warm_start": _arm(MetricsLog(run_dir / "metrics.jsonl").read(), cfg.train.levels, run_dir),
        SCRATCH: _arm(MetricsLog(run_dir / SCRATCH / "metrics.jsonl").read(), scratch.train.levels, run_dir / SCRATCH),
    }
    result = compare_arms(arms, OmegaConf.to_container(cfg.train.heldout, resolve=True, enum_to_str=True))
    path = run_dir / "warmstart.json"
    path.write_text(json.dumps({"step": step, **result}, indent=1))
    png = run_dir / "warmstart.png"
    plot_warmstart(result, png, plt)
    reach = result["time_to_reach"]
    logger.info(f"warmstart report: held-out loss {result['level']:.4g} reached after {reach['warm_start']:.1f} s "
                f"(warm start) and {reach[SCRATCH]:.1f} s (from scratch); {path}, {png}")
    return [path, png]


def plot_warmstart(result: dict, png: pathlib.Path, plt) -> None:
    """The held-out loss of both arms against training time, the level and when each reached it."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    grid = result["heldout"]["grid"]
    for color, (name, arm) in zip(("C0", "C1"), result["arms"].items()):
        curve = arm["curve"]
        grids = " then ".join(f"{level['grid']}² ({level['steps']} steps)" for level in arm["levels"])
        axis.plot(curve["train_time"], curve["heldout_loss"], marker="o", ms=2.5, lw=1.2, color=color,
                  label=f"{name.replace('_', ' ')}: {grids}")
        for first in arm["first_steps"][1:]:  # where a later level began
            axis.axvline(first["train_time"], color=color, ls=":", lw=0.9)
        reached = result["time_to_reach"][name]
        if reached is not None:
            axis.plot([reached], [result["level"]], marker="x", ms=9, mew=2, color=color)
    axis.axhline(result["level"], color="0.4", ls="--", lw=0.8, label=f"level {result['level']:.4g}")
    axis.set(yscale="log", xlabel="training time (s; evaluations, checkpoints and samples excluded)",
             ylabel=f"held-out loss on {grid}²",
             title=f"held-out loss at {grid}² ({result['heldout']['num']} examples, fixed draws)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    plt.close(figure)
