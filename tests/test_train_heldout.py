"""The held-out loss logged while training (`train.heldout`), the training clock, and the pieces of
the warmstart experiment's report: its budget, the from-scratch arm's config, the time to reach a
loss and the comparison of two arms."""

import copy
import json
import re
import time

import equinox as eqx
import hydra
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from omegaconf import OmegaConf

from train import build
from train.config import ConfigError, to_schema, validate
from train.data import Examples
from train.heldout import heldout_batches, make_heldout_loss, TrainingClock
from train.restore import load_run
from train.training import run as train_run
from train.warmstart_report import (
    _arm,
    check_warmstart,
    compare_arms,
    heldout_curve,
    plot_warmstart,
    scratch_config,
    scratch_steps,
    time_to_reach,
)


def compose(*overrides):
    with hydra.initialize_config_module("train.configs", version_base=None):
        return hydra.compose("config", overrides=list(overrides))


def test_heldout_loss_is_deterministic_and_is_the_loss_on_its_fixed_draws():
    """Common random numbers: the same value twice, equal to the run's loss evaluated by hand on
    the same held-out fields with the same keys; another seed draws other times and noise."""
    cfg = compose("+exp=smoke", "train.heldout.every=1", "train.heldout.grid=16", "train.heldout.num=8",
                  "train.heldout.batch_size=4", "train.heldout.seed=3")
    source = build.build_source(cfg.data)
    loss_fn = build.build_loss(cfg, build.build_sde(cfg))
    parts = build.build_parts(cfg, jr.key(0))
    heldout = make_heldout_loss(cfg, source, loss_fn)
    value = heldout(parts)
    assert value == heldout(parts)
    fields = jnp.asarray(source.converter(16)(source.load("holdout").values[:8]))
    assert fields.shape == (8, 1, 16, 16)
    by_hand = eqx.filter_jit(loss_fn)
    values = [float(by_hand(parts, fields[4 * i: 4 * i + 4], jr.fold_in(jr.key(3), i))) for i in range(2)]
    assert value == pytest.approx(np.mean(values), rel=1e-5)
    # with other keys the same loss differs: the draws are part of the estimate
    assert abs(float(by_hand(parts, fields[:4], jr.fold_in(jr.key(4), 0))) - values[0]) > 1e-4 * values[0]
    assert not np.array_equal(jr.key_data(heldout_batches(np.asarray(fields), 4, 4)[1]), jr.key_data(heldout.keys))


def test_training_clock_leaves_out_its_pauses():
    clock = TrainingClock(10.0)
    time.sleep(0.02)
    with clock.paused(jnp.ones(3)):
        inside = clock.seconds()
        time.sleep(0.2)
        assert clock.seconds() == inside
    after = clock.seconds()
    assert 10.02 <= inside and after - inside < 0.1


@pytest.fixture(scope="module")
def warmstart():
    return compose("+exp=warmstart")


def _with(cfg, **fields):
    """A copy of `cfg` with the dotted `fields` (`train__heldout__every`) set."""
    out = copy.deepcopy(cfg)
    for key, value in fields.items():
        OmegaConf.update(out, key.replace("__", "."), value, merge=True)
    return out


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"batch_size": 48}, "train.heldout.batch_size must divide train.heldout.num = 256, got 48."),
        ({"every": -1}, "train.heldout.every must be >= 0, got -1."),
        ({"grid": 2}, "train.heldout.grid must be >= 4, got 2."),
        ({"num": 0}, "train.heldout.num must be a positive int, got 0."),
    ],
)
def test_heldout_fields_are_checked_at_start_up(warmstart, fields, message):
    run = to_schema(_with(warmstart, **{f"train__heldout__{k}": v for k, v in fields.items()}))
    with pytest.raises(ConfigError, match=re.escape(message)):
        run.train.check()


def test_heldout_num_beyond_the_held_out_data_is_refused():
    class Source:  # a data source holding 3 held-out examples
        def load(self, part):
            return Examples(values=np.zeros((3, 1, 8, 8), np.float32), labels=None)

    cfg = OmegaConf.create({"train": {"heldout": {"num": 4, "grid": 8, "batch_size": 4, "seed": 0}}})
    with pytest.raises(ConfigError, match=re.escape("train.heldout.num must be at most the 3 held-out examples "
                                                    "of the data (data.holdout_range), got 4.")):
        make_heldout_loss(cfg, Source(), lambda parts, x0, key: 0.0)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"train__heldout__every": 0}, "train.heldout.every must be a positive int"),
        ({"train__levels": [{"grid": 64, "steps": 300}]},
         "coarser grids first, then the last on train.heldout.grid = 64, got grids [64]"),
        ({"train__heldout__grid": 32}, "then the last on train.heldout.grid = 32, got grids [32, 64]"),
        ({"train__stages": [{"levels": [{"grid": 32, "steps": 100}]}]}, "train.stages must be empty"),
        ({"train__levels": [{"grid": 32, "steps": 4}, {"grid": 64, "steps": 40}]}, "the from-scratch arm's 41 steps on 64²"),
    ],
)
def test_warmstart_report_checks_the_run(warmstart, fields, message):
    check_warmstart(warmstart)
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_warmstart(_with(warmstart, **fields))


def test_the_from_scratch_arm_has_the_same_grid_points(warmstart, tmp_path):
    assert scratch_steps(warmstart.train.levels, 64) == 1000 // 4 + 250
    assert scratch_steps([{"grid": 16, "steps": 10}, {"grid": 32, "steps": 3}], 32) == 6  # 2.5 + 3, rounded
    scratch = validate(scratch_config(warmstart, tmp_path / "run"))
    assert [(level.grid, level.steps) for level in scratch.train.levels] == [(64, 500)]
    assert scratch.train.run_dir == str(tmp_path / "run" / "from_scratch") and scratch.train.report.name is None
    run = to_schema(warmstart)
    assert scratch.model == run.model and scratch.train.heldout == run.train.heldout and scratch.optim == run.optim


def test_time_to_reach_on_made_up_curves():
    times, losses = [0.0, 10.0, 20.0, 30.0], [1.0, 0.5, 0.3, 0.2]
    assert time_to_reach(times, losses, 0.4) == pytest.approx(15.0)  # halfway from 0.5 to 0.3
    assert time_to_reach(times, losses, 0.5) == 10.0
    assert time_to_reach(times, losses, 2.0) == 0.0
    assert time_to_reach(times, losses, 0.1) is None
    # the first crossing, not a later one after the curve rose again
    assert time_to_reach([0.0, 1.0, 2.0, 3.0], [1.0, 0.2, 0.6, 0.1], 0.3) == pytest.approx(0.875)


def _records(times, losses, first_steps, every=10):
    out = [{"event": "first_step", "step": s + 1, "grid": g, "seconds": sec, "train_time": t} for s, g, sec, t in first_steps]
    out += [{"event": "heldout", "step": every * i, "grid": 64, "heldout_loss": loss, "train_time": t}
            for i, (t, loss) in enumerate(zip(times, losses))]
    return out + [{"step": 10, "loss": 0.4}]


def test_comparison_of_two_made_up_arms(tmp_path):
    warm = _arm(_records([0, 20, 40, 60, 80], [1.0, 0.4, 0.3, 0.2, 0.15], [(0, 32, 5.0, 0.0), (20, 64, 6.0, 41.0)]),
                [{"grid": 32, "steps": 20}, {"grid": 64, "steps": 20}], tmp_path)
    scratch = _arm(_records([0, 30, 60, 90], [1.0, 0.5, 0.3, 0.25], [(0, 64, 5.0, 0.0)]),
                   [{"grid": 64, "steps": 25}], tmp_path / "from_scratch")
    assert warm["grid_points"] == scratch["grid_points"] == 25 * 64**2
    result = compare_arms({"warm_start": warm, "from_scratch": scratch}, {"grid": 64, "num": 8})
    assert result["level"] == 0.25  # the worse final loss
    assert result["time_to_reach"] == {"warm_start": pytest.approx(50.0), "from_scratch": 90.0}
    assert result["time_to_reach_without_first_steps"] == {"warm_start": pytest.approx(39.0), "from_scratch": 85.0}
    assert result["speedup"] == pytest.approx(90 / 50)
    # a resumed run's log holds a step twice: the last record counts
    steps, times, losses = heldout_curve(_records([0, 5], [1.0, 0.9], []) + [{"event": "heldout", "step": 10,
                                                                            "heldout_loss": 0.8, "train_time": 6}])
    assert steps.tolist() == [0, 10] and losses.tolist() == [1.0, 0.8] and times.tolist() == [0, 6]
    from train.progress import plt

    plot_warmstart(result, tmp_path / "warmstart.png", plt)
    assert (tmp_path / "warmstart.png").stat().st_size > 1000


def logged_records(run_dir, event):
    """The `event` records of a run folder's metrics log, read line by line."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == event]


def test_tiny_warmstart_run_trains_the_from_scratch_arm_and_compares_the_logged_losses(tmp_path):
    """A tiny run of the warmstart experiment (16² then 32²) and its report: the from-scratch arm it
    trains (its budget, its folder, its first held-out loss the warm start's), and the comparison it
    writes of the held-out losses and times both arms logged in their metrics."""
    run_dir = tmp_path / "run"
    cfg = compose(
        "+exp=warmstart", f"train.run_dir={run_dir}", "data.train_range=[0,64]", "data.holdout_range=[64,80]",
        "model.width=4", "model.levels=[1.0,0.5,1.0]", "model.multipliers=[1,2,1]", "model.modes=4",
        "model.projection=8", "model.time_features=8", "model.time_dim=8", "model.groups=2", "train.batch_size=8",
        "train.levels=[{grid:16,steps:4},{grid:32,steps:2}]", "train.log_every=1", "train.ckpt_every=10",
        "train.sample_grids=[]", "optim.warmup_steps=1", "train.heldout.every=2", "train.heldout.grid=32",
        "train.heldout.num=8", "train.heldout.batch_size=4",
    )
    state = train_run(cfg, progress_bar=False)
    assert int(state.step) == 6
    report = json.loads((run_dir / "warmstart.json").read_text())
    warm, scratch = report["arms"]["warm_start"], report["arms"]["from_scratch"]
    # The from-scratch arm: the same grid points on 32² (4 steps on 16² count as one), trained to
    # its end in its own folder; it started from the same weights, evaluated on the same draws.
    assert scratch["levels"] == [{"grid": 32, "steps": 3}] and scratch["run_dir"] == str(run_dir / "from_scratch")
    assert warm["levels"] == [{"grid": 16, "steps": 4}, {"grid": 32, "steps": 2}]
    assert warm["grid_points"] == scratch["grid_points"] == 3 * 32**2
    assert load_run(run_dir / "from_scratch")[3] == 3
    folders = {"warm_start": run_dir, "from_scratch": run_dir / "from_scratch"}
    logged = {name: logged_records(folder, "heldout") for name, folder in folders.items()}
    assert [r["step"] for r in logged["warm_start"]] == [0, 2, 4, 6]
    assert [r["step"] for r in logged["from_scratch"]] == [0, 2, 3]
    assert logged["warm_start"][0]["heldout_loss"] == pytest.approx(logged["from_scratch"][0]["heldout_loss"], rel=1e-6)
    # The compared losses and times are those logged; the level is the worse final loss.
    for name, records in logged.items():
        arm = report["arms"][name]
        assert arm["curve"]["step"] == [r["step"] for r in records]
        assert arm["curve"]["heldout_loss"] == [r["heldout_loss"] for r in records]
        assert arm["final_heldout_loss"] == records[-1]["heldout_loss"] and arm["train_time"] == records[-1]["train_time"]
        assert np.all(np.isfinite(arm["curve"]["heldout_loss"])) and min(arm["curve"]["heldout_loss"]) > 0
        assert [first["grid"] for first in arm["first_steps"]] == [level["grid"] for level in arm["levels"]]
    finals = [records[-1]["heldout_loss"] for records in logged.values()]
    assert report["level"] == max(finals) and report["heldout"]["grid"] == 32 and report["step"] == 6
    for name, records in logged.items():
        expected = time_to_reach([r["train_time"] for r in records], [r["heldout_loss"] for r in records], max(finals))
        assert expected is not None and report["time_to_reach"][name] == pytest.approx(expected)
        compiled = sum(r["seconds"] for r in logged_records(folders[name], "first_step") if r["train_time"] < expected)
        assert report["time_to_reach_without_first_steps"][name] == pytest.approx(expected - compiled)
    reach = report["time_to_reach"]
    if reach["warm_start"] > 0 and reach["from_scratch"] > 0:
        assert report["speedup"] == pytest.approx(reach["from_scratch"] / reach["warm_start"])
    assert (run_dir / "warmstart.png").stat().st_size > 1000
