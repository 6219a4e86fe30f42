"""Keep freed memory in the process, so that every training step does not fault it in again.

XLA's CPU runtime allocates a step's temporary buffers (hundreds of MB for a batch of fields)
with `malloc` and frees them when the step ends. glibc serves large blocks (above its mmap
threshold, at most 32 MiB) with `mmap` and gives them back with `munmap`, and its per-thread
arenas return freed heap pages too, so the next step touches fresh pages: measured on the
issue-5 FNO step (2-core VM), ~140,000 minor page faults per step and a quarter to two fifths
of its time (751 -> 541 ms on 1 device, 824 -> 500 ms on 2; the U-NO of `multilevel_mnist`:
522 -> 392 ms per step at 32², 2007 -> 1501 ms at 64²).
`retain_freed_memory` tells glibc to serve large blocks from one heap and keep freed pages
(`mallopt`), after which a step faults almost nothing. The price: the resident size stays at its
peak, which a training process reaches anyway, and XLA's threads share one arena's lock (the
step times above include that; compilation was not timed separately).
"""

import ctypes
import logging
import os


logger = logging.getLogger("train.memory")

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
_KEEP = 2**31 - 1  # the largest trim threshold mallopt takes (bytes)


def glibc_version() -> str | None:
    """The version of the process's glibc (`"2.36"`), or `None` for another C library."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    return version.split()[-1] if version and version.startswith("glibc") else None


def retain_freed_memory() -> bool:
    """Make glibc's `malloc` keep the memory XLA frees between steps (one arena, no `mmap`, no trim).

    Call it before JAX starts its threads and allocates. A no-op returning `False` where the C
    library is not glibc (macOS, musl); `True` when glibc accepted every setting.
    """
    version = glibc_version()
    if version is None:
        return False
    libc = ctypes.CDLL(None)  # the process's own malloc
    settings = {"M_ARENA_MAX": (M_ARENA_MAX, 1), "M_MMAP_MAX": (M_MMAP_MAX, 0),
                "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, _KEEP)}
    refused = [name for name, (param, value) in settings.items() if libc.mallopt(param, value) != 1]
    if refused:
        logger.warning("glibc %s malloc refused %s: freed memory is not all kept", version, refused)
        return False
    logger.info("glibc %s malloc keeps freed memory", version)
    return True
