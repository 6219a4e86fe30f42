"""How many devices the data mesh uses (`train.devices`).

On accelerators `auto` takes all of them. On CPU, XLA's virtual devices split the cores between
shards of the batch; whether that is faster depends on the network and the machine (some XLA CPU
ops, the FFTs among them, run on one thread, so two devices on two cores can be 1.3-1.5x faster
than one, while eight are ~3x slower). So on CPU `auto` times the real step for each candidate
count and keeps the fastest, unless fewer devices come within `MARGIN` of it: one step's time
varies by several percent from step to step, and more devices cost more memory (the kept heap
fragments on several, see `train.memory`), so a near tie goes to the smaller count. The choice and
the timings are logged and stored in the run folder, and a resumed run reuses it (another count
changes float round-off, so resuming would not reproduce the uninterrupted run exactly).
"""

import json
import os
import pathlib
import statistics
import time
from collections.abc import Callable

import jax

from .config.errors import ConfigError
from .data.files import write_text_atomically
from .errors import RunFolderError

CHOICE_FILE = "devices.json"
MARGIN = 0.05  # more devices are kept only when their step is faster by more than this fraction


def request_cpu_devices(count: int | None = None) -> None:
    """Ask XLA for `count` (default: the number of cores) virtual CPU devices, if JAX has not started yet.

    Has no effect once JAX's backends are initialised (e.g. under tests, which set their own count),
    or when `XLA_FLAGS` already sets `--xla_force_host_platform_device_count`.
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    count = count or os.cpu_count() or 1
    try:
        jax.config.update("jax_num_cpu_devices", int(count))
    except RuntimeError:
        pass  # backends already initialised: keep the devices there are


def candidates(batch_size: int, available: int) -> list[int]:
    """Device counts worth timing on CPU: 1, 2, 4, ... up to the available count, dividing the batch."""
    out, n = [], 1
    while n <= available:
        if batch_size % n == 0:
            out.append(n)
        n *= 2
    if available not in out and batch_size % available == 0:
        out.append(available)
    return out


def choose(
    setting: str | int,
    batch_size: int,
    run_dir: pathlib.Path,
    time_step: Callable[[list[jax.Device]], float],
    log: Callable[[str], None] = print,
) -> list[jax.Device]:
    """The devices of this process in the data mesh (all of the mesh with one process; with
    several, every process then uses process 0's count, `train.distributed.agree`).

    **Arguments:**

    - `setting`: `train.devices`: `"auto"` or a count (per process).
    - `batch_size`: this process's share of the batch, which must split evenly over the devices.
    - `run_dir`: the run folder, where the choice is stored and read back on resume.
    - `time_step`: seconds per training step on a list of devices (used by `auto` on CPU).
    - `log`: where to report the choice.

    **Returns:**

    The list of devices.
    """
    devices = jax.local_devices()
    path = pathlib.Path(run_dir) / CHOICE_FILE
    if path.exists():
        stored = json.loads(path.read_text())
        count = int(stored["count"])
        if int(stored.get("processes", 1)) != jax.process_count():
            raise RunFolderError(
                f"{path} says this run used {stored.get('processes', 1)} processes, but this one has "
                f"{jax.process_count()}; a resumed run needs the same processes and devices."
            )
        if count > len(devices):
            raise RunFolderError(
                f"{path} says this run used {count} devices, but only {len(devices)} are available; "
                "a resumed run needs the same devices."
            )
        log(f"devices: {count} of {len(devices)} {devices[0].platform} (the choice stored in {path})")
        return devices[:count]
    timings = {}
    if setting != "auto":
        count = int(setting)
        if count > len(devices):
            raise ConfigError(f"train.devices = {count}, but only {len(devices)} devices are available.")
        reason = "train.devices"
    elif devices[0].platform != "cpu":
        count = max(candidates(batch_size, len(devices)))
        reason = "all accelerators"
    else:
        for n in candidates(batch_size, len(devices)):
            timings[n] = time_step(devices[:n])
        fastest = min(timings.values())
        count = min(n for n, t in timings.items() if t <= (1.0 + MARGIN) * fastest)
        reason = (f"fastest measured, fewer devices within {MARGIN:.0%}: "
                  + ", ".join(f"{n} -> {1e3 * t:.1f} ms/step" for n, t in timings.items()))
    log(f"devices: {count} of {len(devices)} {devices[0].platform} ({reason})")
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps({"count": count, "platform": devices[0].platform,
                                                "processes": jax.process_count(),
                                                "ms_per_step": {str(n): 1e3 * t for n, t in timings.items()}}))
    return devices[:count]


def time_calls(fn: Callable[[], object], repeats: int = 7) -> float:
    """The median seconds of `repeats` calls of `fn` (which must block until done), after two
    warm-up calls (the first compiles; the second still pays for memory first touched)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
