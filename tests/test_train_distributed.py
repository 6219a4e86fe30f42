"""Training over several processes (jax.distributed on CPU devices, loopback coordinator)."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import equinox as eqx
import hydra
import jax
import numpy as np
import pytest

from train.data import make_dataset
from train.distributed import cluster_asks
from train.progress import MetricsLog
from train.restore import load_run
from train.training import run


SHORT = ["train.levels=[{grid:16,steps:4}]", "train.log_every=1", "train.ckpt_every=2", "train.sample_grids=[]",
         "train.progress_bar=false"]


def compose(*overrides):
    with hydra.initialize_config_module("train.configs", version_base=None):
        return hydra.compose("config", overrides=["+exp=smoke", *overrides])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(run_dir, port: int, process: int, *overrides, log=None, **fault: int) -> subprocess.Popen:
    """One of 2 processes of a smoke run, on 2 CPU devices each (output to `log`, else a pipe);
    `late_signal=n`: SIGTERM to it inside its stop-flag gathering after step n, `fail=n`: an
    exception there (`tests/run_with_fault.py`)."""
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
    program = ["-m", "train.run"]
    if fault:
        names = {"late_signal": "LATE_SIGNAL_STEP", "fail": "FAIL_STEP"}
        env.update({names[name]: str(step) for name, step in fault.items()})
        program = [str(pathlib.Path(__file__).with_name("run_with_fault.py"))]
    return subprocess.Popen(
        [sys.executable, *program, "+exp=smoke", f"train.run_dir={run_dir}", "train.devices=2",
         f"train.distributed.coordinator=127.0.0.1:{port}", "train.distributed.num_processes=2",
         f"train.distributed.process_id={process}", *SHORT, *overrides],
        cwd=run_dir.parent, env=env, stdout=subprocess.PIPE if log is None else log, stderr=subprocess.STDOUT,
        text=True,
    )


def _arrays(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))]


def test_each_process_reads_its_own_block_of_every_batch():
    values = np.arange(48, dtype=np.float32)[:, None]
    one = iter(make_dataset(values, np.asarray, batch_size=8, seed=5))
    shards = [iter(make_dataset(values, np.asarray, batch_size=8, seed=5, shard_index=i, shard_count=2)) for i in range(2)]
    seen = [[], []]
    for _ in range(6):  # one epoch: 6 batches of 8
        blocks = [next(s) for s in shards]
        # the blocks in process order are the batch one process reads, row for row
        np.testing.assert_array_equal(np.concatenate(blocks), next(one))
        for i, block in enumerate(blocks):
            seen[i] += block[:, 0].tolist()
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(48))
    with pytest.raises(ValueError, match="dividing `batch_size` 8"):
        make_dataset(values, np.asarray, batch_size=8, seed=5, shard_index=0, shard_count=3)


def test_the_cluster_environment_asks_for_processes():
    assert not cluster_asks({}) and not cluster_asks({"SLURM_NTASKS": "1"})
    assert cluster_asks({"SLURM_NTASKS": "4"}) and cluster_asks({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
    assert cluster_asks({"TPU_WORKER_HOSTNAMES": "a,b"}) and not cluster_asks({"TPU_WORKER_HOSTNAMES": "a"})


@pytest.mark.slow
def test_two_processes_train_as_one_stop_together_and_leave_at_once_on_a_failure(tmp_path):
    """Two processes of 2 devices each train as one process over 4 devices, from another run's
    weights (`train.init_from`, which each process restores on its own device: on process 0's,
    process 1 failed at once). SIGTERM to process 1 alone: process 0 takes the request at the same
    step, both checkpoint there and exit with status 0 (the log names the other process's signal),
    and the weights at that step are those of one process over the same 4 devices run to it, to
    float32 rounding.

    The signal reaches process 1 inside the processes' gathering of their stop flags after step 2,
    the last of the first level, after it gave its flag: every process is told to go on, into the
    next level, and all stop after step 3. (Process 1 stopping at once on its own flag, in the
    level or at the start of the next, left process 0 training, and both hung or failed at their
    next collective: a signal from outside hit that moment about once in 20 runs.)

    Resumed, process 1 raises an exception after its first step, while process 0 waits for it in
    the gathering: it ends at once, with its traceback, instead of waiting in the runtime's
    shutdown (up to an hour, its heartbeats keeping the other waiting), and process 0 stops within
    a few heartbeats, its collective's connection closed or the runtime naming a task that died."""
    heartbeat = 5
    long = ["train.levels=[{grid:16,steps:2},{grid:16,steps:100000}]", "train.ckpt_every=100000",
            f"train.distributed.heartbeat_timeout={heartbeat}"]
    source = tmp_path / "source"
    run(compose(f"train.run_dir={source}", "train.devices=4", *SHORT, *long, "train.stop_after=1"))
    run_dir = tmp_path / "two"
    logs = [tmp_path / f"process{i}.log" for i in range(2)]

    def launch(fault: dict, logs) -> list[subprocess.Popen]:
        port = _free_port()
        return [_start(run_dir, port, i, *long, f"train.init_from.run_dir={source}", log=logs[i].open("w"),
                       **(fault if i else {})) for i in range(2)]

    processes = launch({"late_signal": 2}, logs)
    metrics = run_dir / "metrics.jsonl"
    try:
        codes = [p.wait(timeout=300) for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert codes == [0, 0], logs[0].read_text()[-2000:]
    assert f"started from {source} at its step 1" in logs[0].read_text()  # (process 1 logs warnings only)
    stop = [r for r in MetricsLog(metrics).read() if r.get("event") == "stop"]
    assert len(stop) == 1 and stop[0]["reason"] == "on another process's signal"
    assert "stopped at step 3 on SIGTERM" in logs[1].read_text()
    _, raw, _, step = load_run(run_dir, None, "raw")
    _, ema, _, _ = load_run(run_dir, None, "ema")
    assert step == stop[0]["step"] == 3
    # The reference: one process over 4 devices, the same weights to start from, the same global
    # batch, the same schedule, to that step.
    reference = run(compose(f"train.run_dir={tmp_path / 'one'}", "train.devices=4", *SHORT, *long,
                            f"train.init_from.run_dir={source}", f"train.stop_after={step}"))
    assert int(reference.step) == step
    # Equal up to the order of the gradient's sum over devices (one process sums in-process, two
    # over gloo): float32 rounding, 3e-8 where the weights are ~0.1-1.
    for got, want in ((raw, reference.parts["network"]), (ema, reference.ema["network"])):
        for a, b in zip(_arrays(got), _arrays(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # Process 0 alone writes the log (each step once) and the device choice.
    steps = [r["step"] for r in MetricsLog(metrics).read() if "loss" in r]
    assert steps == list(range(1, step + 1))
    want = [r["loss"] for r in MetricsLog(tmp_path / "one" / "metrics.jsonl").read() if "loss" in r]
    got = [r["loss"] for r in MetricsLog(metrics).read() if "loss" in r]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert json.loads((run_dir / "devices.json").read_text())["processes"] == 2

    # Resumed: a failure in process 1 after its first step (step 4).
    logs = [tmp_path / f"resumed{i}.log" for i in range(2)]
    processes = launch({"fail": 1}, logs)
    try:
        processes[1].wait(timeout=300)
        failed = time.time()
        processes[0].wait(timeout=120)
        waited = time.time() - failed
    finally:
        for p in processes:
            p.kill()
    output, failure = logs[0].read_text(), logs[1].read_text()
    assert processes[1].returncode == 1 and "RuntimeError: a fault injected after step 1" in failure
    assert "leaving the run at once" in failure and "resumed from" in output
    assert processes[0].returncode != 0 and waited < 6 * heartbeat, output[-2000:]
    reasons = ("Connection closed by peer", "Connection reset by peer",  # its collective, or the runtime
               "another task died", "tasks are unhealthy", "stopped sending heartbeats")
    assert any(why in output for why in reasons), output[-2000:]
