"""XLA's persistent compilation cache for the programs, so that a program run again compiles nothing.

The main job compiles about a minute and a half of programs (its training steps, the samplers of its
PNGs and evaluation, the ELBO). Started again on the same machine (a resumed run, a second run with
other overrides) it would compile the same programs again. JAX's persistent cache keeps each
compiled program on disk, keyed by the program, the compiler's settings, the devices and the
versions of JAX and XLA, and a later process with the same key loads it instead of compiling.
Programs with host callbacks are not kept, so the programs' fixed-step samplers
(`train.sampling.draw`) hold none: their solve does not throw, and the outcome is checked on the
host after it has run.

The programs use `~/.cache/sdeflow/xla`, beside the data caches, holding at most `MAX_BYTES` (the
least recently used programs are removed first; the main job's take about 3 MB) unless
`$JAX_COMPILATION_CACHE_MAX_SIZE` says otherwise. `$JAX_COMPILATION_CACHE_DIR` names another
folder, which JAX then bounds only by `$JAX_COMPILATION_CACHE_MAX_SIZE`; set empty, or with
`JAX_ENABLE_COMPILATION_CACHE=false`, the cache is off. JAX keeps only programs that took at least
a second to compile (`$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`). Measured on a 2-core VM: a
shortened main job (150 steps at 16², 200 at 32², its PNGs and evaluation) took 286 s, and 191 s
when run again.
"""

import logging
import os
import pathlib

import jax

logger = logging.getLogger("train.compile_cache")

ENV = "JAX_COMPILATION_CACHE_DIR"
MAX_BYTES = 2 * 2**30
DEFAULT_DIR = pathlib.Path("~/.cache/sdeflow/xla")


def use_compile_cache() -> str | None:
    """Point JAX's persistent compilation cache at `DEFAULT_DIR`, unless `$JAX_COMPILATION_CACHE_DIR`
    is set (a folder: JAX's own reading of it stands; empty: the cache is off). Call it before the
    program compiles anything. A folder that cannot be made leaves the cache off, with a warning.

    **Returns:**

    The cache folder in use, or `None` when the cache is off.
    """
    if not jax.config.jax_enable_compilation_cache:
        return None
    if ENV in os.environ:
        if not os.environ[ENV]:  # off altogether (JAX would otherwise still point its GPU autotuning cache at "")
            jax.config.update("jax_enable_compilation_cache", False)
            return None
        return os.environ[ENV]
    try:
        folder = DEFAULT_DIR.expanduser()
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError) as error:  # no home folder, or a read-only one: compile as usual
        logger.warning(f"no compilation cache: cannot create {DEFAULT_DIR} ({error})")
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    return str(folder)
