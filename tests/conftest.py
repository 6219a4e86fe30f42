"""Test configuration: several virtual CPU devices, float32 numerics and a key fixture.

Virtual devices must be configured before JAX initialises its backend, so this happens at
import time, before any test module imports jax.numpy.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

import jax


# The suite is dominated by XLA compilation, not by running the compiled programs: LLVM's
# optimisation passes at level 0 halve the compile time (test_nets_uno: 105 s to 50 s on 2 cores)
# and change no result the tests check. Set before JAX initialises its backend; a level the caller
# gives in XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()


def _xla_knows(flag: str) -> bool:
    """Whether this jaxlib's XLA accepts `flag` (it aborts the process on a flag it does not know,
    so a child process tries it first)."""
    probe = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
    env = dict(os.environ, XLA_FLAGS=f"{os.environ['XLA_FLAGS']} {flag}", JAX_PLATFORMS="cpu")
    try:
        result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=300)
    except subprocess.TimeoutExpired:  # a stuck probe leaves the suite on XLA's default emitters
        return False
    return result.returncode == 0


# Most of the suite's ~5000 compilations are small programs (eager operations, short jitted
# functions), and XLA's older LLVM emitters build those in about half the time of its MLIR fusion
# emitters (test_priors from a cold cache: 122 s to 68 s; compile time 81 s to 33 s). Decided once
# by the first process; the test workers and the programs they start inherit XLA_FLAGS.
_LEGACY_EMITTERS = "--xla_cpu_use_fusion_emitters=false"
if "xla_cpu_use_fusion_emitters" not in os.environ["XLA_FLAGS"] and _xla_knows(_LEGACY_EMITTERS):
    os.environ["XLA_FLAGS"] += " " + _LEGACY_EMITTERS

# Four virtual CPU devices so that sharded code paths really run on a mesh of several devices.
jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_platforms", "cpu")

# Many tests compile the same programs (a smoke run's step in several tests, and in every
# subprocess of the program tests): XLA's persistent cache, shared by the test workers and the
# programs they start (through the environment), compiles each once (the suite's CPU time falls by
# about a fifth). Entries are keyed by the program and the compiler's settings.
_CACHE = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                               str(pathlib.Path(tempfile.gettempdir()) / "sdeflow-tests-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import jax.random as jr  # noqa: E402
import pytest  # noqa: E402


_REPO = pathlib.Path(__file__).resolve().parents[1]
# Real MNIST lives beside the project (only the t10k split on these machines).
os.environ.setdefault("SDEFLOW_MNIST_ROOT", str(_REPO.parent / "shared" / "data" / "mnist"))


@pytest.fixture
def getkey():
    """A function returning a fresh, deterministic key each call (as in equinox's tests)."""
    key = jr.key(0)
    counter = iter(range(10**9))

    def _getkey():
        return jr.fold_in(key, next(counter))

    return _getkey


def pytest_collection_modifyitems(items):
    """Run the end-to-end checks first: they take 10-60 s each, and with `-n 2` a long test left
    for the end keeps one worker busy while the other idles. Marked `slow` first, then the other
    program tests (`test_train_*`), then the rest, each in collection order."""

    def rank(item) -> int:
        if item.get_closest_marker("slow") is not None:
            return 0
        return 1 if item.path.name.startswith("test_train_") else 2

    items.sort(key=rank)
