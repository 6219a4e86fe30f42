"""Keep freed memory in the process, so that every training step does not fault it in again.

XLA's CPU runtime allocates a step's temporary buffers (hundreds of MB for a batch of fields)
with `malloc` and frees them when the step ends. glibc serves allocations above 32 MB with
`mmap` and gives them back with `munmap`, and its per-thread arenas return freed heap pages too,
so the next step touches fresh pages: measured on the issue-5 FNO step (2-core VM), ~140,000
minor page faults per step, a quarter to a third of its time (U-NO of `multilevel_mnist`:
522 -> 392 ms per step at 32², 2007 -> 1501 ms at 64²). `retain_freed_memory` tells glibc to serve large
blocks from one heap and keep freed pages (`mallopt`), after which a step faults almost nothing.
The price is a resident size that stays at its peak, which a training process reaches anyway.
"""

import ctypes
import logging
import sys


logger = logging.getLogger("train.memory")

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
_KEEP = 2**31 - 1  # the largest trim threshold mallopt takes (bytes)


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
    except (OSError, AttributeError):
        return None
    return libc


def glibc_version() -> str | None:
    """The version of the process's glibc, or `None` where the C library is another one."""
    libc = _glibc()
    return None if libc is None else libc.gnu_get_libc_version().decode()


def retain_freed_memory() -> bool:
    """Make glibc's `malloc` keep the memory XLA frees between steps (one arena, no `mmap`, no trim).

    Call it before the first computation. A no-op returning `False` where the C library is not
    glibc (macOS, musl); `True` when glibc accepted the settings.
    """
    libc = _glibc()
    if libc is None:
        return False
    ok = all(libc.mallopt(param, value) == 1 for param, value in (
        (M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _KEEP)))
    logger.info("glibc %s malloc keeps freed memory: %s", glibc_version(), ok)
    return ok
