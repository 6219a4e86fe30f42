"""How the programs report what the user can fix: one message, no traceback.

A bad config value, missing or corrupt data, an unusable run folder, a corrupt checkpoint or a
diverged run is the user's to fix, and a traceback through the program's own frames only hides
the line that says how. The programs run their work inside `reported_errors()`: such an error is
printed as `error: <message>` on stderr and the program exits with status 1. Every other
exception (a bug) keeps its traceback. `SDEFLOW_DEBUG=1` shows the traceback of every error.
"""

import contextlib
import os
import pathlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from hydra.experimental.callback import Callback

DEBUG_VARIABLE = "SDEFLOW_DEBUG"
"""The environment variable that, set to 1, makes the programs show the traceback of every error."""


class RunFolderError(RuntimeError):
    """The run folder cannot be used: it is not writable, or it holds another experiment's run."""


class NonFiniteError(FloatingPointError):
    """Training stopped at a step whose loss or gradient was not finite."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that the programs report in one message (imported late: the data
    and checkpoint modules import JAX)."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError

    return ConfigError, DataError, CheckpointError, RunFolderError, NonFiniteError


def debugging() -> bool:
    """Whether `SDEFLOW_DEBUG` asks for tracebacks."""
    return os.environ.get(DEBUG_VARIABLE, "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Run the body; report a user error (`user_errors`) as one message on stderr and exit with
    status 1, unless `SDEFLOW_DEBUG` is set, when it propagates with its traceback."""
    try:
        yield
    except Exception as error:
        if debugging() or not isinstance(error, user_errors()):
            raise
        _exit_with(error)


def run_program(main: Callable[[Any], Any], cfg: Any) -> None:
    """The body of a program's hydra entry point (`train.evaluate`, `train.sample`,
    `train.classifier`): logging configured, freed memory kept (`train.memory`; this call logs what
    the module's first call did), XLA's persistent compilation cache on (`train.compile_cache`),
    then `main(cfg)` inside `reported_errors()`."""
    from .compile_cache import use_compile_cache
    from .memory import retain_freed_memory
    from .progress import configure_logging

    configure_logging()
    retain_freed_memory()
    use_compile_cache()
    with reported_errors():
        main(cfg)


def _exit_with(error: BaseException):
    print(f"error: {error}\n(set {DEBUG_VARIABLE}=1 to see where it was raised)", file=sys.stderr, flush=True)
    raise SystemExit(1) from None


def check_writable(folder: str | os.PathLike, what: str = "run folder", field: str = "train.run_dir") -> None:
    """Create `folder` if needed and write a probe file in it; a `RunFolderError` saying why
    if that fails (a path through a file, no permission, a read-only or full file system).

    **Arguments:**

    - `folder`: the folder a program writes into.
    - `what`, `field`: what it is and the config field that sets it (for the message).
    """
    folder = pathlib.Path(folder)
    probe = folder / f".sdeflow-write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise RunFolderError(
            f"the {what} {folder} cannot be written ({error.strerror or error}); choose another "
            f"with {field}=PATH (or free the space / fix its permissions)."
        ) from None


IDENTITY = ("name", "data", "model", "prior", "sde", "loss")
"""The config groups that make a run what it is: a run folder holding a run that differs in
any of them (other than `IGNORED`) holds another experiment's run."""

IGNORED = ("data.root", "data.cache_dir")
"""Where the data is read from may change between a run and its resumption."""


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def check_same_run(saved: dict, current: dict, folder: str | os.PathLike) -> None:
    """A `RunFolderError` naming what differs if `saved` (the config of the run already in
    `folder`) and `current` differ in the groups of `IDENTITY`.

    **Arguments:**

    - `saved`, `current`: the two resolved configs as plain dicts.
    - `folder`: the run folder (for the message).
    """
    before = {k: v for k, v in _flat({g: saved.get(g) for g in IDENTITY}).items() if k not in IGNORED}
    now = {k: v for k, v in _flat({g: current.get(g) for g in IDENTITY}).items() if k not in IGNORED}
    differing = sorted(k for k in before.keys() | now.keys() if before.get(k, "(absent)") != now.get(k, "(absent)"))
    if not differing:
        return
    shown = "; ".join(f"{k} is {before.get(k, '(absent)')!r} there, {now.get(k, '(absent)')!r} here" for k in differing[:4])
    more = f" (and {len(differing) - 4} more)" if len(differing) > 4 else ""
    raise RunFolderError(
        f"the run folder {folder} holds another run (experiment {saved.get('name')!r}, its config.yaml): "
        f"{shown}{more}. Choose another train.run_dir, or delete the folder to start over."
    )



class RunFolderCheck(Callback):
    """A hydra callback (`hydra.callbacks` of the training program's config): before hydra
    creates its output folder (the run folder) and opens its log there, check that the folder
    can be written, and say so in one message if not (hydra's own failure is a traceback)."""

    def on_run_start(self, config, **kwargs) -> None:
        try:
            check_writable(config.hydra.run.dir)
        except RunFolderError as error:
            if debugging():
                raise
            _exit_with(error)
