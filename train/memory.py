"""Keep freed memory in the process, so that every training step does not fault it in again.

XLA's CPU runtime allocates a step's temporary buffers (hundreds of MB for a batch of fields)
with `malloc` and frees them when the step ends. glibc serves large blocks (above its mmap
threshold, at most 32 MiB) with `mmap` and gives them back with `munmap`, and its per-thread
arenas return freed heap pages too, so the next step touches fresh pages: measured on the FNO
training step of `benchmarks/bench_train_step.py` (2-core VM), ~140,000 minor page faults per
step and a quarter to two fifths of its time (751 -> 541 ms on 1 device, 824 -> 500 ms on 2;
the U-NO of `multilevel_mnist`: 522 -> 392 ms per step at 32², 2007 -> 1501 ms at 64²).
`retain_freed_memory` tells glibc to serve large blocks from one heap and keep freed pages
(`mallopt`), after which a step faults almost nothing. The price: the resident size stays at its
peak, which a training process reaches anyway, and XLA's threads share one arena's lock (the
step times above include that; what it costs compilation is below).

On an accelerator none of this applies: a step's buffers live in device memory under XLA's own
allocator, while one arena makes the compiler's threads share one lock. Measured: the
`multilevel_mnist` step compiled in 10.7-11.4 s with the arena limit against 8.5-9.7 s without on 2
CPU cores; on an H100 host (16 cores) the main job's first 25 steps took 97 s where the same step
compiled in 11-13 s in a process left as it comes. So `retain_freed_memory` leaves `malloc` alone
when JAX is going to run on an accelerator (`accelerator_in_use`).

On more than one device that peak is not reached once and for all: the devices' programs run at
once and interleave their allocations differently every step, so the kept heap fragments and
grows. Measured with the U-NO of `multilevel_mnist` at 64², two CPU devices: the resident size
went from 6.0 to 12.7 GB in 150 steps (18.7 GB at the end of the 2000 + 700 + 100-step main job),
where one device stayed at 2.7 GB. `ResidentGuard` bounds it: when the resident size has grown
well past the size it had once training settled, `release_free_memory` (`malloc_trim`) hands the
free pages back (a trim every 10 s kept the same 150 steps at 1.8-2.5 GB). With the guard in the
training loop, 10 steps at 32² then 125 at 64² on two devices peaked at 3.8 GB at 0.81-0.86
steps/s: the trim at the new level was enough there. A single device's heap does not grow, so the
guard never trims it.
"""

import ctypes
import logging
import os
from collections.abc import Callable, Mapping

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


_first_call: tuple[int, list[str]] | str | None = None  # (arenas, settings refused), or why not, at the first call

# device files of the accelerators JAX runs on, with the module that holds each one's JAX plugin
_ACCELERATORS = (
    ("/dev/nvidiactl", "jax_plugins"),  # NVIDIA GPU (jax-cuda plugins)
    ("/dev/kfd", "jax_plugins"),  # AMD GPU (jax-rocm plugins)
    ("/dev/accel0", "libtpu"),  # TPU
    ("/dev/vfio/0", "libtpu"),
)


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def accelerator_in_use(
    environ: Mapping[str, str] | None = None,
    exists: Callable[[str], bool] = os.path.exists,
    has_module: Callable[[str], bool] = _has_module,
) -> str | None:
    """Why JAX is going to run on an accelerator in this process, or `None` for the CPU; decided
    without importing JAX (which starts threads).

    `JAX_PLATFORMS`, when set, decides by its first platform. Otherwise an accelerator is in use
    when its device file exists and its JAX plugin is installed (`jax_plugins` for GPUs, `libtpu`
    for TPUs), as JAX itself would pick it.

    **Arguments:**

    - `environ`: the environment (default: `os.environ`).
    - `exists`, `has_module`: how a path's existence and a module's installation are checked.

    **Returns:**

    A short reason (`"JAX_PLATFORMS=cuda"`, `"/dev/nvidiactl and jax_plugins"`), or `None`.
    """
    environ = os.environ if environ is None else environ
    platforms = environ.get("JAX_PLATFORMS", "").strip().lower()
    if platforms:
        return None if platforms.split(",")[0].strip() == "cpu" else f"JAX_PLATFORMS={platforms}"
    for device, plugin in _ACCELERATORS:
        if exists(device) and has_module(plugin):
            return f"{device} and {plugin}"
    return None


def malloc_arenas() -> int | None:
    """The number of glibc malloc arenas in the process (`malloc_info`), or `None` elsewhere."""
    if glibc_version() is None:
        return None
    import tempfile

    libc = ctypes.CDLL(None)
    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "malloc_info.xml")
        stream = libc.fopen(path.encode(), b"w")
        if not stream:
            return None
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        with open(path) as f:
            return f.read().count("<heap nr=")


def retain_freed_memory() -> bool:
    """Make glibc's `malloc` keep the memory XLA frees between steps (one arena, no `mmap`, no trim).

    Call it first thing in a program, before any import starts a thread (`import jax` starts one):
    the arena limit binds only threads that have no arena yet; an arena an earlier thread took
    stays, and when that thread ends it is handed to a later thread (XLA's among them) whatever the
    limit. A non-main arena grows in heaps of at most 64 MiB, so a larger block there is mapped and
    unmapped again in every step whatever `M_MMAP_MAX` says. Seen on a main job whose call came
    after the imports, two CPU devices: non-main arenas were in use (`strace`: a heap made and
    dropped every step), each device's thread mapped and unmapped its 235 MB of temporaries in
    every step, ~115,000 page faults a step and 30% of the CPU time in the kernel, 550-700 ms per
    step at 32² against 370-430 ms in runs without those faults. Called while the process has one
    arena, glibc never makes a second. The programs of `train` call it at the top of their module
    when run as `python -m train.NAME`; a first call that finds more arenas says so in the log.

    Only the first call sets anything; later calls report its outcome (the first comes before
    logging is configured). A no-op returning `False` where the C library is not glibc (macOS,
    musl) and where JAX is going to run on an accelerator (`accelerator_in_use`: the step's
    buffers are in device memory there, and one arena would only slow the compiler's threads);
    `True` when glibc accepted every setting.
    """
    global _first_call
    version = glibc_version()
    if version is None:
        return False
    if _first_call is None:
        _first_call = accelerator_in_use()
        if _first_call is None:
            arenas = malloc_arenas() or 1
            libc = ctypes.CDLL(None)  # the process's own malloc
            settings = {"M_ARENA_MAX": (M_ARENA_MAX, 1), "M_MMAP_MAX": (M_MMAP_MAX, 0),
                        "M_TRIM_THRESHOLD": (M_TRIM_THRESHOLD, _KEEP)}
            refused = [name for name, (param, value) in settings.items()
                       if libc.mallopt(param, value) != 1]
            _first_call = (arenas, refused)
    if isinstance(_first_call, str):
        logger.info("glibc %s malloc left as it comes: JAX runs on an accelerator (%s)", version, _first_call)
        return False
    arenas, refused = _first_call
    if refused:
        logger.warning("glibc %s malloc refused %s: freed memory is not all kept", version, refused)
        return False
    if arenas > 1:
        logger.warning(
            "glibc %s malloc keeps freed memory, but %d arenas were made before it was told to; "
            "the threads handed them may fault pages in again in every step (train.memory)",
            version, arenas)
    else:
        logger.info("glibc %s malloc keeps freed memory (one arena from the start)", version)
    return True


def resident_bytes() -> int | None:
    """The process's resident set size in bytes (Linux `/proc/self/statm`), or `None` elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_free_memory() -> bool:
    """Give the free pages of glibc's heap back to the system (`malloc_trim(0)`); the memory in
    use is untouched. `False` where the C library is not glibc."""
    if glibc_version() is None:
        return False
    ctypes.CDLL(None).malloc_trim(0)
    return True


class ResidentGuard:
    """Trims the kept heap when the resident size outgrows its settled size (see the module notes).

    Call `check()` every few steps. The first call after `reset()` records the settled size $R_0$;
    a later call that finds more than `growth` $R_0$ resident calls `release_free_memory` and says
    so. Cheap when nothing is trimmed (one read of `/proc/self/statm`).

    **Arguments:**

    - `growth`: the factor over the settled size that triggers a trim, > 1.
    """

    def __init__(self, growth: float = 1.5):
        if not growth > 1:
            raise ValueError(f"`growth` must be > 1, got {growth}.")
        self.growth = float(growth)
        self.settled: int | None = None
        self.trims = 0

    def reset(self) -> None:
        """A new working set (e.g. a new grid): release the free pages the old one left and forget
        the settled size."""
        release_free_memory()
        self.settled = None

    def check(self) -> bool:
        """Record the settled size, or trim if the resident size has outgrown it; `True` if trimmed."""
        rss = resident_bytes()
        if rss is None:
            return False
        if self.settled is None:
            self.settled = rss
            return False
        if rss <= self.growth * self.settled or not release_free_memory():
            return False
        self.trims += 1
        logger.info(
            "resident size %.1f GB is over %.1f x the settled %.1f GB: free heap pages released "
            "(now %.1f GB)", rss / 1e9, self.growth, self.settled / 1e9, (resident_bytes() or 0) / 1e9,
        )
        return True
