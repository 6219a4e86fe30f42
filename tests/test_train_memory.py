"""train.memory: with glibc keeping freed memory, a repeated XLA computation stops faulting pages in."""

import os
import subprocess
import sys

import pytest

from train.memory import glibc_version


SCRIPT = """
import resource, sys
if sys.argv[1] == "retain":
    from train.memory import glibc_version
    assert retain_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2 + 1)
x = jnp.ones((16 * 1024 * 1024,), jnp.float32)  # 64 MB in, 64 MB out per call
def calls(n):
    for _ in range(n):
        y = f(x)
        y.block_until_ready()
        del y
calls(12)  # the heap grows to its working size (about 9 calls here)
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
calls(5)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 5)
"""


def _faults_per_call(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    return float(out.stdout.strip().splitlines()[-1])


def test_retained_memory_is_not_faulted_in_again():
    if glibc_version() is None:
        pytest.skip("not glibc: retain_freed_memory is a documented no-op there")
    default, retain = _faults_per_call("default"), _faults_per_call("retain")
    # A fresh 64 MB output is 16,384 pages of 4 KB (32 with transparent huge pages); kept
    # memory needs none. Bound: under 1,000 faults (4 MB) per call.
    assert retain < 1000, (retain, default)
    assert retain < default, (retain, default)
