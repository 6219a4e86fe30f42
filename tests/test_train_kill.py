"""Killed runs resume exactly: the training program is killed with SIGKILL while it writes the
last checkpoint of its first stage (so that the half-written checkpoint must be ignored and the
resumption crosses the stage boundary), started again in the same run folder, and ends with the
parameters of an uninterrupted run, bit for bit, and a metrics log with every logged step once."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from train.progress import MetricsLog


REPO = pathlib.Path(__file__).resolve().parents[1]
# The smoke experiment in two stages (another loss, and another grid, in the second), 32 steps.
RUN = ["+exp=smoke", "train.ckpt_every=3", "train.log_every=1", "train.sample_grids=[]", "train.keep_checkpoints=2",
       "train.progress_bar=false",
       "train.stages=[{name:a,levels:[{grid:16,steps:16}]},{name:b,trainable:[network],"
       "loss:{name:dsm,weighting:likelihood},levels:[{grid:32,steps:16}]}]"]


def _start(run_dir: pathlib.Path, extra: list[str]) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", ""))
    return subprocess.Popen([sys.executable, "-m", "train.run", *RUN, *extra, f"train.run_dir={run_dir}"],
                            cwd=run_dir.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _logged_steps(run_dir: pathlib.Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"loss"' in line)


def _writing(run_dir: pathlib.Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.exists() and any("tmp" in p.name for p in folder.iterdir())


def _kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> bool:
    """SIGKILL `process` as soon as `ready()`; False if it ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if process.poll() is not None:
            return False
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.002)
    process.kill()
    raise TimeoutError("the run neither reached the kill point nor ended")


def _final_parameters(run_dir: pathlib.Path):
    """The raw and the EMA network of the run's last checkpoint, as NumPy arrays, and its step."""
    import equinox as eqx
    import jax

    from train.restore import load_run

    arrays = []
    for weights in ("raw", "ema"):
        _, network, _, step = load_run(run_dir, weights=weights)
        arrays += [np.asarray(x) for x in jax.tree.leaves(eqx.filter(network, eqx.is_array))]
    return arrays, step


def _check(tmp_path: pathlib.Path, extra: list[str]) -> int:
    whole = tmp_path / "whole"
    whole.mkdir()
    reference = _start(whole, extra)  # runs beside the killed run
    run_dir = tmp_path / "killed"
    run_dir.mkdir()
    # Killed while checkpoint 15 is written (step 14 is logged before), the run resumes from
    # checkpoint 12, in the first stage, and crosses the boundary at step 16 again. Should the
    # write be missed by the polling, the kill comes after step 17 is logged, still before the
    # boundary's checkpoint 18, with the same resumption across the boundary.
    kills = _kill_when(_start(run_dir, extra),
                       lambda: (_writing(run_dir) and _logged_steps(run_dir) >= 14) or _logged_steps(run_dir) >= 17)
    last = _start(run_dir, extra)
    assert last.wait(timeout=600) == 0, last.stderr.read().decode()[-3000:]
    assert reference.wait(timeout=600) == 0, reference.stderr.read().decode()[-3000:]
    got, step = _final_parameters(run_dir)
    expected, expected_step = _final_parameters(whole)
    assert step == expected_step == 32
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)  # the same bits
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 33))  # every step logged once (train.log_every = 1)
    return kills


@pytest.mark.slow
def test_killed_run_resumes_exactly_within_and_across_stages(tmp_path):
    assert _check(tmp_path, []) == 1
