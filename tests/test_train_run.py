"""The training program end to end on the smoke experiment: run folder contents, and exact resume."""

import json
import os
import re

import equinox as eqx
import hydra
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from test_train_sinks import read_events, scalars
from sdeflow import restrict as sdeflow_restrict
from train.checkpoint import Checkpointer
from train.progress import MetricsLog
from train.restore import load_run
from train.sampling import output_tag
from train.config import ConfigError, EvaluateConfig, SampleConfig
from train.step import make_mesh
from train.training import run, start_from


def compose(*overrides):
    with hydra.initialize_config_module("train.configs", version_base=None):
        return hydra.compose("config", overrides=["+exp=smoke", *overrides])


def _leaves(state):
    return [
        np.asarray(jr.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
        for x in jax.tree.leaves(eqx.filter(state, eqx.is_array))
    ]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    cfg = compose(f"train.run_dir={run_dir}", "train.sample_grids=[16]", "train.sinks=[tensorboard]")
    return run_dir, cfg, run(cfg, progress_bar=False)


@pytest.mark.slow
def test_smoke_run_folder(uninterrupted):
    run_dir, cfg, state = uninterrupted
    steps = sum(level.steps for level in cfg.train.levels)
    assert int(state.step) == steps
    text = (run_dir / "config.yaml").read_text()
    assert f"run_dir: {run_dir}" in text and "name: smoke" in text
    assert json.loads((run_dir / "devices.json").read_text())["count"] == 1
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    events = [r.get("event") for r in records if "event" in r]
    assert events == ["start", "level", "level", "end"]
    logged = [r for r in records if "loss" in r]
    assert [r["grid"] for r in logged] == [16] * 3 + [32] * 2
    assert all(np.isfinite(r["loss"]) and r["steps_per_s"] > 0 and r["lr"] >= 0 for r in logged)
    # The loss decreases over the 10 steps (a tiny model on 512 digits; the first loss is ~1).
    assert logged[-1]["loss"] < logged[0]["loss"]
    with Checkpointer(run_dir / "checkpoints", keep=cfg.train.keep_checkpoints) as checkpointer:
        assert checkpointer.all_steps() == [8, 10]
    assert Image.open(run_dir / "loss.png").size == (600, 400)
    # The TensorBoard sink got the same losses, the loss curve at each checkpoint and the samples.
    events = read_events(run_dir / "tensorboard")
    assert scalars(events)["train/loss"] == [(r["step"], pytest.approx(r["loss"])) for r in logged]
    images = sorted((e.step, v.tag) for e in events for v in e.summary.value if v.HasField("image"))
    assert images == [(4, "loss"), (8, "loss"), (10, "loss"), (10, "step0000010_grid16")]
    grid = Image.open(run_dir / "samples" / f"step{steps:07d}_grid16.png")
    assert grid.size == (2 * 18 + 2, 2 * 18 + 2)  # 4 samples, 2 per row, 2 pixels of padding
    pixels = np.asarray(grid)[2:18, 2:18]
    assert pixels.std() > 0  # a sample, not a blank tile
    # The sampling programs restore the EMA or the raw weights (one test: one run of the fixture
    # per test worker)
    for weights, expected in (("ema", state.ema["network"]), ("raw", state.parts["network"])):
        run_cfg, model, _, step = load_run(run_dir, weights=weights)
        assert step == int(state.step) and run_cfg.name == "smoke"
        for a, b in zip(_leaves(model), _leaves(expected), strict=True):
            np.testing.assert_array_equal(a, b)
    # after 10 steps at decay 0.9 the average still differs from the last weights
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(_leaves(state.ema["network"]), _leaves(state.parts["network"])))
    with pytest.raises(ValueError, match=re.escape("weights must be one of ema | raw, got 'best'")):
        load_run(run_dir, weights="best")
    sampler = {"name": "euler_maruyama", "steps": 8}
    assert output_tag(OmegaConf.create({"sampler": sampler, "weights": "raw"})) == "euler_maruyama_8_raw"
    assert output_tag(OmegaConf.create({"sampler": sampler, "weights": "ema"})) == "euler_maruyama_8"
    # an earlier checkpoint's outputs get their own name, not the latest's
    assert output_tag(OmegaConf.create({"sampler": sampler, "weights": "ema", "step": 500})) == "euler_maruyama_8_step500"
    # and so do other counts or seeds than the program's defaults
    for schema in (SampleConfig, EvaluateConfig):
        plain = {"sampler": sampler, "weights": "ema", "num_samples": schema.num_samples, "seed": schema.seed}
        assert output_tag(OmegaConf.create(plain), schema) == "euler_maruyama_8"
        other = dict(plain, num_samples=schema.num_samples + 1, seed=3)
        assert output_tag(OmegaConf.create(other), schema) == f"euler_maruyama_8_n{schema.num_samples + 1}_seed3"


@pytest.mark.slow
def test_sampling_programs_can_oversample_the_nonlinearities(uninterrupted, tmp_path):
    """`oversample=` of train.sample and train.evaluate: the run's weights, unchanged, in a network
    whose GELUs are evaluated on a finer grid (a static option: the checkpoint is the same)."""
    run_dir, _, state = uninterrupted
    _, plain, _, _ = load_run(run_dir)
    _, finer, _, _ = load_run(run_dir, oversample=2.0)
    for a, b in zip(_leaves(finer), _leaves(state.ema["network"]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert plain.oversample == 1.0 and finer.oversample == 2.0 and all(b.oversample == 2.0 for b in finer.blocks)
    u = jr.normal(jr.key(0), (2, plain.in_channels, 16, 16))
    gap = jnp.linalg.norm(finer.batched(0.3, u) - plain.batched(0.3, u)) / jnp.linalg.norm(plain.batched(0.3, u))
    assert 1e-4 < float(gap) < 0.5  # the same network, its aliasing removed
    sampler = {"name": "euler_maruyama", "steps": 8}
    tag = output_tag(OmegaConf.create({"sampler": sampler, "weights": "ema", "oversample": 2}))
    assert tag == "euler_maruyama_8_oversample2"
    with pytest.raises(ConfigError, match=r"oversample must be a factor >= 1 \(1: off\), got 0.5"):
        load_run(run_dir, oversample=0.5)
    unet = tmp_path / "unet"
    unet.mkdir()
    config = OmegaConf.load(run_dir / "config.yaml")
    config.model = {"_target_": "nets.UNet"}  # the UNet's defaults (train.config.UNetConfig)
    OmegaConf.save(config, unet / "config.yaml")
    with pytest.raises(ConfigError, match=r"oversample=2: the run's network \(nets.UNet\) has no oversampled"):
        load_run(unet, oversample=2.0)


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_uninterrupted(uninterrupted, tmp_path):
    _, _, reference = uninterrupted
    run_dir = tmp_path / "run"
    # with the held-out loss logged: it changes nothing of the training
    heldout = ("train.heldout.every=2", "train.heldout.grid=16", "train.heldout.num=8", "train.heldout.batch_size=8")
    stopped = run(compose(f"train.run_dir={run_dir}", "train.stop_after=5", "train.sample_grids=[]", *heldout),
                  progress_bar=False)
    assert int(stopped.step) == 5
    with Checkpointer(run_dir / "checkpoints") as checkpointer:
        assert checkpointer.latest_step() == 5  # written at the stop, mid-level
    resumed = run(compose(f"train.run_dir={run_dir}", "train.sample_grids=[]", *heldout), progress_bar=False)
    assert int(resumed.step) == int(reference.step)
    # Same batches, same random numbers, same devices: the same bits.
    for a, b in zip(_leaves(resumed), _leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    events = [r.get("event") for r in records if r.get("event") not in (None, "heldout", "first_step")]
    assert events == ["start", "level", "stop", "resume", "level", "end"]
    # Only the run-control fields changed (train.stop_after): the config it started with stands alone.
    assert not list(run_dir.glob("config.resumed-*")) and not list(run_dir.glob(".*.part"))
    # The held-out loss at steps 0, 2, ..., 10 on both sides of the resume, with the training time
    # that reached it (continued from the checkpoint's); each level's first step (compiled in it).
    logged = [r for r in records if r.get("event") == "heldout"]
    assert [r["step"] for r in logged] == [0, 2, 4, 6, 8, 10] and {r["grid"] for r in logged} == {16}
    assert np.all(np.diff([r["train_time"] for r in logged]) > 0) and logged[-1]["heldout_loss"] < logged[0]["heldout_loss"]
    first = [r for r in records if r.get("event") == "first_step"]
    assert [(r["step"], r["grid"]) for r in first] == [(1, 16), (7, 32)] and all(r["seconds"] > 0 for r in first)
    reference_losses = {r["step"]: r["loss"] for r in MetricsLog(uninterrupted[0] / "metrics.jsonl").read() if "loss" in r}
    # Logged losses are means over windows of train.log_every steps: compare the windows that
    # started after the resume (the one straddling it is shorter).
    after = {r["step"]: r["loss"] for r in records if "loss" in r and r["step"] - 2 >= 5}
    assert sorted(after) == [8, 10] and all(after[s] == reference_losses[s] for s in after)



STAGES = ("train.stages=[{name:first,levels:[{grid:16,steps:4}]},"
          "{name:second,trainable:[network],loss:{name:dsm,weighting:likelihood},"
          "levels:[{grid:16,steps:2},{grid:32,steps:2}]}]")


@pytest.mark.slow
def test_staged_run_resumes_inside_a_stage_and_at_its_boundary(tmp_path):
    """Two stages (each its own loss and a fresh optimiser): stopped inside the first, again
    exactly at the boundary and one step after it, then resumed, the run ends with the bits of an
    uninterrupted one. The EMA goes on across the boundary: one step into the second stage it is
    decay * (the first stage's last EMA) + (1 - decay) * (the new weights), not restarted."""
    common = [STAGES, "train.sample_grids=[]", "train.log_every=1", "optim.warmup_steps=1"]
    reference = run(compose(f"train.run_dir={tmp_path / 'whole'}", *common), progress_bar=False)
    run_dir = tmp_path / "stopped"
    states = {}
    for stop in (2, 4, 5):
        states[stop] = run(compose(f"train.run_dir={run_dir}", f"train.stop_after={stop}", *common), progress_bar=False)
        assert int(states[stop].step) == stop
    decay = compose(*common).optim.ema_decay
    for e5, e4, w5 in zip(_leaves(states[5].ema["network"]), _leaves(states[4].ema["network"]),
                          _leaves(states[5].parts["network"]), strict=True):
        np.testing.assert_allclose(e5, decay * e4 + (1 - decay) * w5, rtol=0, atol=1e-6)
    assert max(float(np.max(np.abs(e - w))) for e, w in zip(_leaves(states[5].ema["network"]),
                                                            _leaves(states[5].parts["network"]))) > 1e-4
    resumed = run(compose(f"train.run_dir={run_dir}", *common), progress_bar=False)
    assert int(resumed.step) == int(reference.step) == 8
    for a, b in zip(_leaves(resumed), _leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    events = [(r["event"], r.get("stage")) for r in records if "event" in r]
    assert events == [("start", None), ("level", 0), ("stop", None), ("resume", None), ("stop", None),
                      ("resume", None), ("stage", 1), ("level", 1), ("stop", None), ("resume", None),
                      ("level", 1), ("end", None)]
    # the second stage's optimiser started afresh at step 4: its step counts are 4, not 8, and the
    # logged rate (of the next step) jumps from the first stage's final rate back to the peak
    counts = [int(x) for x in jax.tree.leaves(resumed.opt_state) if jnp.issubdtype(x.dtype, jnp.integer)]
    assert counts and set(counts) == {4}
    lr = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert lr[4] == pytest.approx(0.05 * 3e-3) and lr[5] == pytest.approx(3e-3)
    # the sampling programs restore a staged run too: the template holds the last stage's optimiser
    _, network, _, step = load_run(run_dir, weights="raw")
    assert step == 8
    for a, b in zip(_leaves(network), _leaves(resumed.parts["network"]), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_and_the_run_resumes(uninterrupted, tmp_path, caplog):
    """SIGTERM during training: the step finishes, a checkpoint is written there, the run returns
    (the program then exits with status 0), and running again ends with the uninterrupted bits."""
    import os
    import signal
    import threading
    import time as time_lib

    _, _, reference = uninterrupted
    run_dir = tmp_path / "run"
    log = run_dir / "metrics.jsonl"

    def send_when_training():  # once the first loss is logged (step 2 of 10)
        for _ in range(6000):
            if log.exists() and '"loss"' in log.read_text():
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time_lib.sleep(0.01)

    thread = threading.Thread(target=send_when_training)
    thread.start()
    stopped = run(compose(f"train.run_dir={run_dir}", "train.sample_grids=[]"), progress_bar=False)
    thread.join()
    step = int(stopped.step)
    assert 2 <= step < int(reference.step)
    with Checkpointer(run_dir / "checkpoints") as checkpointer:
        assert checkpointer.latest_step() == step
    stop = [r for r in MetricsLog(log).read() if r.get("event") == "stop"]
    assert stop == [dict(stop[0], step=step, reason="on SIGTERM")]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    assert f"stopped at step {step} on SIGTERM with a checkpoint there; run the same command again" in caplog.text
    resumed = run(compose(f"train.run_dir={run_dir}", "train.sample_grids=[]"), progress_bar=False)
    for a, b in zip(_leaves(resumed), _leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_signal_in_the_last_step_leaves_the_outputs_to_the_next_start(tmp_path, monkeypatch, caplog):
    """SIGTERM during the last step: the run checkpoints it and stops before the end-of-run samples
    and evaluation (minutes, which the signal asked not to wait for); the same command again
    writes them from that checkpoint, without training."""
    import os
    import signal

    from train import distributed

    gather = distributed.any_process
    calls = []

    def signalled_at_the_end(flag):
        calls.append(flag)
        if len(calls) == 4:  # the gathering after the last of the 4 steps
            os.kill(os.getpid(), signal.SIGTERM)
        return gather(flag)

    monkeypatch.setattr(distributed, "any_process", signalled_at_the_end)
    run_dir = tmp_path / "run"
    overrides = (f"train.run_dir={run_dir}", "train.levels=[{grid:16,steps:4}]", "train.sample_grids=[]",
                 "optim.warmup_steps=1")
    assert int(run(compose(*overrides), progress_bar=False).step) == 4
    events = [r.get("event") for r in MetricsLog(run_dir / "metrics.jsonl").read()]
    assert "stop" in events and "end" not in events  # (the end's outputs follow its record)
    assert "trained to the end (step 4), stopped on SIGTERM before the end-of-run samples" in caplog.text
    monkeypatch.setattr(distributed, "any_process", gather)
    assert int(run(compose(*overrides), progress_bar=False).step) == 4 and len(calls) == 4
    assert "end" in [r.get("event") for r in MetricsLog(run_dir / "metrics.jsonl").read()]


@pytest.mark.slow
@pytest.mark.parametrize("policy, ckpt_every", [("stop", None), ("skip", None), ("stop", 1)])
def test_a_non_finite_loss_stops_the_run_with_its_step(policy, ckpt_every, tmp_path, monkeypatch):
    """Every loss NaN: `stop` ends the run at the first logged window naming step 1 and the loss,
    with nothing applied and no checkpoint written; `skip` goes on, counting the skipped steps in the
    metrics log, until more than `train.max_skipped` were skipped. A checkpoint due between two
    logged steps (every step here, logs every 2) is not written after the bad step either: the run
    stops there, so that the checkpoint it keeps can resume it."""
    from train import build

    dsm = build._dsm
    monkeypatch.setattr(build, "_dsm", lambda parts, x0, key, **kw: dsm(parts, x0, key, **kw) * jnp.nan)
    run_dir = tmp_path / "run"
    cfg = compose(f"train.run_dir={run_dir}", "train.sample_grids=[]", f"train.nonfinite={policy}",
                  "train.max_skipped=3", *([] if ckpt_every is None else [f"train.ckpt_every={ckpt_every}"]))
    expected = "the loss is not finite at step 1 (the first such step; its update was not applied)"
    with pytest.raises(FloatingPointError, match=re.escape(expected)) as info:
        run(cfg, progress_bar=False)
    assert "The last checkpoint (none) is kept" in str(info.value)
    skipped = [r["skipped"] for r in MetricsLog(run_dir / "metrics.jsonl").read() if "loss" in r]
    # windows of train.log_every = 2 steps; with a checkpoint due at step 1, none was logged
    assert skipped == ([] if ckpt_every == 1 else [2] if policy == "stop" else [2, 4])
    if policy == "skip":
        assert "4 steps were skipped (more than train.max_skipped = 3)" in str(info.value)
        # no update was applied, so the schedule never left its start: the logged rate is that of
        # the first update (0 at the start of the warm-up), not the schedule's at steps 2 and 4
        assert [r["lr"] for r in MetricsLog(run_dir / "metrics.jsonl").read() if "loss" in r] == [0.0, 0.0]
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())


def test_weights_made_non_finite_by_an_update_stop_the_run_before_its_checkpoint(tmp_path, monkeypatch):
    """An update that overflows (here: every update NaN) with finite losses and gradients: the run
    stops at the checkpoint due after that step, naming the weights, and writes none."""
    import optax

    from train import build

    make = build.build_optimiser
    monkeypatch.setattr(build, "build_optimiser", lambda *a, **kw: optax.chain(make(*a, **kw), optax.scale(jnp.nan)))
    run_dir = tmp_path / "run"
    cfg = compose(f"train.run_dir={run_dir}", "train.sample_grids=[]", "train.ckpt_every=1", "train.log_every=4")
    with pytest.raises(FloatingPointError, match=re.escape("the weights are not finite at step 1: an update made "
                                                           "them so")):
        run(cfg, progress_bar=False)
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())


@pytest.mark.slow
def test_skipped_steps_are_counted_across_stages(tmp_path, monkeypatch):
    """`train.max_skipped` bounds the run's skipped steps, not each stage's: 4 in the first stage
    and 2 more in the second are 6 > 5, naming the run's first bad step."""
    from train import build

    dsm = build._dsm
    monkeypatch.setattr(build, "_dsm", lambda parts, x0, key, **kw: dsm(parts, x0, key, **kw) * jnp.nan)
    cfg = compose(f"train.run_dir={tmp_path / 'run'}", STAGES, "train.sample_grids=[]", "train.nonfinite=skip",
                  "train.max_skipped=5", "optim.warmup_steps=1")
    with pytest.raises(FloatingPointError, match=r"6 steps were skipped \(more than train.max_skipped = 5\); the "
                                                 r"loss is not finite at step 1 .* or raise train.max_skipped\."):
        run(cfg, progress_bar=False)


@pytest.mark.slow
def test_a_new_run_starts_from_another_runs_weights(uninterrupted, tmp_path):
    """Fine-tuning at a new resolution: the parts and EMA come from the other run's checkpoint."""
    run_dir, cfg, state = uninterrupted
    # One step with a learning rate so small that the weights stay those it started from.
    tuned = run(compose(f"train.run_dir={tmp_path / 'tuned'}", f"train.init_from.run_dir={run_dir}",
                        "train.levels=[{grid:24,steps:1}]", "optim.lr=1e-12", "optim.warmup_steps=0",
                        "train.sample_grids=[]"), progress_bar=False)
    for a, b in zip(_leaves(tuned.parts["network"]), _leaves(state.parts["network"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    # EMA: decay * (the other run's EMA) + (1 - decay) * (the weights after the step).
    decay = cfg.optim.ema_decay
    for a, e, w in zip(_leaves(tuned.ema["network"]), _leaves(state.ema["network"]), _leaves(state.parts["network"]), strict=True):
        np.testing.assert_allclose(a, decay * e + (1 - decay) * w, rtol=0, atol=1e-6)
    # A field that holds no weights may change: the run takes the arrays and keeps its own field.
    dealiased = run(compose(f"train.run_dir={tmp_path / 'dealiased'}", f"train.init_from.run_dir={run_dir}",
                            "train.levels=[{grid:24,steps:1}]", "optim.lr=1e-12", "optim.warmup_steps=0",
                            "model.oversample=2", "train.sample_grids=[]"), progress_bar=False)
    assert dealiased.parts["network"].oversample == 2.0 and state.parts["network"].oversample == 1.0
    for a, b in zip(_leaves(dealiased.parts["network"]), _leaves(state.parts["network"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    # Another architecture is refused naming the first array that differs.
    with pytest.raises(ConfigError, match=r"the parts of .* do not fit this run's: array \['network'\]\.\S+ "
                                          r"float32\[\d+, \d+\] in that run vs .* float32\[\d+, \d+\] in this run\."):
        run(compose(f"train.run_dir={tmp_path / 'wide'}", f"train.init_from.run_dir={run_dir}", "model.width=12",
                    "train.sample_grids=[]"), progress_bar=False)
    # what=everything takes the optimiser state too; what=weights leaves the new run's.
    zeroed = eqx.tree_at(lambda s: s.opt_state, state, jax.tree.map(jnp.zeros_like, state.opt_state))
    mesh = make_mesh(jax.devices()[:1])
    for what, expected in (("everything", state.opt_state), ("weights", zeroed.opt_state)):
        spec = OmegaConf.create({"run_dir": str(run_dir), "step": None, "what": what})
        started = start_from(zeroed, spec, mesh)
        for a, b in zip(_leaves(started.opt_state), _leaves(expected), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_sample_program_super_resolves_inpaints_and_draws_chains(uninterrupted, tmp_path):
    """The conditional samplers from the command line: held-out digits given on the 16-grid are
    completed on the 32-grid with their restriction to 16 kept exactly (replacement of the low
    modes); inpainting keeps every observed point exactly; a chain holds the state at each time."""
    from train import sample as sample_program

    run_dir, _, _ = uninterrupted

    def task(name, *extra):
        with hydra.initialize_config_module("train.configs", version_base=None):
            cfg = hydra.compose("sample", overrides=[f"run_dir={run_dir}", f"out_dir={tmp_path}", f"task={name}",
                                                     "examples=2", "per_example=3", "sampler.steps=4", *extra])
        written = sample_program.main(cfg)
        assert all(p.exists() for p in written) and {p.suffix for p in written} == {".npz", ".png"}
        return np.load(next(p for p in written if p.suffix == ".npz"))

    sr = task("super_resolution", "grids=[32]", "observed_grid=16")
    assert sr["observed"].shape == (2, 1, 16, 16) and sr["samples"].shape == (2, 3, 1, 32, 32)
    restricted = np.stack([[np.asarray(sdeflow_restrict(jnp.asarray(x), (16, 16))) for x in row] for row in sr["samples"]])
    np.testing.assert_allclose(restricted, np.broadcast_to(sr["observed"][:, None], restricted.shape), atol=1e-4)
    assert json.loads(str(sr["figures"]))["observation_error_max"] <= 1e-4
    assert np.std(sr["samples"][:, 0] - sr["samples"][:, 1]) > 1e-3  # the fine modes are drawn, not fixed
    inpainted = task("inpainting", "grids=[16]", "mask_size=0.5")
    mask, truth, drawn = inpainted["mask"], inpainted["truth"], inpainted["samples"]
    assert mask.shape == (1, 16, 16) and mask.sum() == 256 - 64 and not mask[0, 4:12, 4:12].any()
    np.testing.assert_array_equal(np.where(mask, drawn, 0.0), np.broadcast_to(np.where(mask, truth[:, None], 0.0), drawn.shape))
    assert np.std(drawn[:, :, ~mask]) > 1e-3
    chain = task("chain", "grids=[16]", "chain_times=[0.9,0.5,0.1]")
    assert chain["states"].shape == (2, 3, 1, 16, 16) and np.allclose(chain["times"], [0.9, 0.5, 0.1])
    # keeping the states does not change the path: the chains end in the program's plain samples
    with hydra.initialize_config_module("train.configs", version_base=None):
        plain = sample_program.main(hydra.compose("sample", overrides=[
            f"run_dir={run_dir}", f"out_dir={tmp_path / 'plain'}", "grids=[16]", "num_samples=2", "batch_size=2",
            "sampler.steps=4"]))
    np.testing.assert_allclose(chain["samples"], np.load(plain[0])["samples"], atol=1e-5)
    # and the state nears the sample as t falls
    distance = np.linalg.norm((chain["states"] - chain["samples"][:, None]).reshape(2, 3, -1), axis=-1)
    assert np.all(distance[:, 2] < distance[:, 0])
    # sampler.t_end holds for the tasks as for plain samples (the tasks ignored it): the chain stopped
    # at 0.3 ends in the plain samples stopped there, and the inpaintings differ from those above
    stopped = task("chain", "grids=[16]", "chain_times=[0.9,0.5]", "sampler.t_end=0.3")
    with hydra.initialize_config_module("train.configs", version_base=None):
        plain_stopped = sample_program.main(hydra.compose("sample", overrides=[
            f"run_dir={run_dir}", f"out_dir={tmp_path / 'plain'}", "grids=[16]", "num_samples=2", "batch_size=2",
            "sampler.steps=4", "sampler.t_end=0.3"]))
    np.testing.assert_allclose(stopped["samples"], np.load(plain_stopped[0])["samples"], atol=1e-5)
    assert np.max(np.abs(stopped["samples"] - chain["samples"])) > 1e-2
    inpainted_stopped = task("inpainting", "grids=[16]", "mask_size=0.5", "sampler.t_end=0.3")["samples"]
    assert np.max(np.abs(inpainted_stopped - drawn)) > 1e-2
    with pytest.raises(ConfigError, match="observed_grid"):
        task("super_resolution", "grids=[16]", "observed_grid=32")


def test_the_sampling_programs_refuse_bad_settings_before_drawing(uninterrupted, tmp_path):
    """Settings that failed late, with a traceback, after minutes of work (the classifier trained,
    samples drawn) are refused at start-up naming the field: an ELBO grid the network cannot take,
    a conditional task with an adaptive sampler, and a classifier of other data or of no steps."""
    from train import classifier as classifier_program
    from train import evaluate as evaluate_program
    from train import sample as sample_program

    run_dir, _, _ = uninterrupted

    def program(name, *overrides):
        with hydra.initialize_config_module("train.configs", version_base=None):
            return hydra.compose(name, overrides=list(overrides))

    with pytest.raises(ConfigError, match=r"elbo.grids\[0\]"):  # the smoke FNO's modes need more than 8 points
        evaluate_program.main(program("evaluate", f"run_dir={run_dir}", "grid=16", "elbo.grids=[8]",
                                      f"output={tmp_path / 'e.json'}"))
    for task in ("inpainting", "super_resolution"):
        with pytest.raises(ConfigError, match=rf"sampler.steps must be a positive int for task={task}"):
            sample_program.main(program("sample", f"run_dir={run_dir}", f"out_dir={tmp_path}", f"task={task}",
                                        "grids=[16]", "observed_grid=8", "sampler=ode"))
    with pytest.raises(ConfigError, match="sampler.variables must be t for task=inpainting"):
        sample_program.main(program("sample", f"run_dir={run_dir}", f"out_dir={tmp_path}", "task=inpainting",
                                    "grids=[16]", "sampler=ode", "sampler.steps=4", "sampler.variables=sigma"))
    with pytest.raises(ConfigError, match="classifier.steps"):
        classifier_program.main(program("classifier", "data=mnist_t10k", "classifier.steps=0",
                                        f"classifier.dir={tmp_path / 'clf'}"))
    with pytest.raises(ConfigError, match="data=generated is not MNIST"):
        classifier_program.main(program("classifier", "data=generated", f"classifier.dir={tmp_path / 'clf'}"))


def test_the_sampling_programs_read_moved_data_from_data_root(uninterrupted, tmp_path, monkeypatch):
    """`data_root` (train.sample, train.evaluate) is where the run's data files are now: the run's
    own root or environment variable no longer holds them."""
    import shutil

    from train.build import build_source
    from train.data import mnist as mnist_module

    run_dir, _, _ = uninterrupted
    moved = tmp_path / "moved"
    shutil.copytree(os.environ[mnist_module.ROOT_ENV], moved)
    monkeypatch.setenv(mnist_module.ROOT_ENV, str(tmp_path / "gone"))
    with pytest.raises(mnist_module.MnistError, match="gone"):
        build_source(load_run(run_dir)[0].data).load("holdout")
    cfg = load_run(run_dir, data_root=str(moved))[0]
    assert cfg.data.root == str(moved) and len(build_source(cfg.data).load("holdout").values) > 0
    for name in ("sample", "evaluate"):  # a field of both programs, passed to load_run
        with hydra.initialize_config_module("train.configs", version_base=None):
            assert hydra.compose(name, overrides=[f"data_root={moved}"]).data_root == str(moved)


def test_a_failed_evaluation_leaves_every_sample_png(tmp_path, monkeypatch, caplog):
    """The grid the end-of-run evaluation would have drawn for its PNG gets its own samples when the
    evaluation fails before sampling, and the error still stops the run."""
    import train.training

    def fails(*args, **kwargs):
        raise RuntimeError("no held-out data")

    monkeypatch.setattr(train.training, "write_evaluation", fails)
    caplog.set_level("INFO", logger="train")
    cfg = compose(f"train.run_dir={tmp_path / 'run'}", "train.levels=[{grid:16,steps:2}]", "optim.warmup_steps=1", "train.sample_grids=[16]",
                  "train.evaluate=true", "train.evaluation.grid=16", "train.evaluation.num_samples=4",
                  "train.evaluation.sampler.steps=10")
    with pytest.raises(RuntimeError, match="no held-out data"):
        run(cfg, progress_bar=False)
    assert (tmp_path / "run" / "samples" / "step0000002_grid16.png").exists()
    assert "(4 on the 16-grid" in caplog.text


def test_a_resume_with_another_config_keeps_both(tmp_path):
    """Resumed with a setting changed that may change (the log's period), the run saves the new
    config beside the one it started with, named by the step it resumed at."""
    run_dir = tmp_path / "run"
    common = [f"train.run_dir={run_dir}", "train.sample_grids=[]", "train.levels=[{grid:16,steps:3}]"]
    run(compose(*common, "train.stop_after=2"), progress_bar=False)
    started = (run_dir / "config.yaml").read_text()
    run(compose(*common, "train.log_every=1"), progress_bar=False)
    assert (run_dir / "config.yaml").read_text() == started
    resumed = OmegaConf.load(run_dir / "config.resumed-2.yaml")
    assert resumed.train.log_every == 1 and OmegaConf.create(started).train.log_every != 1

