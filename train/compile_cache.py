"""XLA's persistent compilation cache for the programs, so that a program run again compiles nothing.

The main job compiles about a minute and a half of programs (its training steps, the samplers of its
PNGs and evaluation, the ELBO). Started again on the same machine (a resumed run, a second run with
other overrides, `train.evaluate` and `train.sample` on a run) it would compile the same programs
again. JAX's persistent cache keeps each compiled program on disk, keyed by the program, the
compiler's settings, the devices and the versions of JAX and XLA, and a later process with the
same key loads it instead of compiling.

The programs use `$JAX_COMPILATION_CACHE_DIR` when it is set (JAX reads it itself; set it empty,
or `JAX_ENABLE_COMPILATION_CACHE=false`, to turn the cache off) and otherwise
`~/.cache/sdeflow/xla`, beside the data caches, holding at most `MAX_BYTES` (the least recently
used programs are removed first; the main job's take about 2 MB). Only programs that took at
least `MIN_COMPILE_SECONDS` to compile are kept. Measured on a 2-core VM: a shortened main job
(150 steps at 16², 200 at 32², its PNGs and evaluation) took 297 s, and 239 s when run again.
"""

import logging
import os
import pathlib

import jax

logger = logging.getLogger("train.compile_cache")

ENV = "JAX_COMPILATION_CACHE_DIR"
MAX_BYTES = 2 * 2**30
MIN_COMPILE_SECONDS = 1.0
DEFAULT_DIR = pathlib.Path("~/.cache/sdeflow/xla")


def use_compile_cache() -> str | None:
    """Point JAX's persistent compilation cache at `DEFAULT_DIR` unless
    `$JAX_COMPILATION_CACHE_DIR` is set (then JAX's own reading of it stands). Call it before the
    program compiles anything.

    **Returns:**

    The cache folder in use, or `None` when the cache is off.
    """
    if not jax.config.jax_enable_compilation_cache:
        return None
    if ENV in os.environ:
        return os.environ[ENV] or None
    folder = DEFAULT_DIR.expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a read-only home: compile as usual
        logger.warning(f"no compilation cache: cannot create {folder} ({error})")
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return str(folder)
