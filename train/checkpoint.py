"""Checkpoints of a training run with orbax: arrays of a PyTree plus a JSON side car.

What is saved at a step: every array leaf of a PyTree (for training: the model, its EMA, the
optimiser state, the step counter and the RNG key; typed PRNG keys are stored as their raw key
data) and a JSON dictionary (the data iterator's state, the curriculum level, the leaf names and
shapes). Non-array leaves (activation functions, static config of the modules) are not saved: they
come from the template that `restore` fills, built by the same code from the same config.

Orbax writes each step into a temporary folder and renames it when complete, so a run killed
while saving leaves the previous checkpoint intact; only the last `keep` steps are kept.
"""

import hashlib
import os
import pathlib
import re
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint is corrupt, missing or does not match the model being restored."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (a full disk, a folder that is not writable)."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint cannot be read back: truncated, corrupted, or holding non-finite values."""


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _arrays(tree) -> tuple[list[jax.Array], list[str], jtu.PyTreeDef]:
    """The array leaves of `tree` (keys as raw key data), their path names and the array tree's structure."""
    arrays = eqx.filter(tree, eqx.is_array)
    with_paths, treedef = jtu.tree_flatten_with_path(arrays)
    names = [jtu.keystr(path) for path, _ in with_paths]
    leaves = [jr.key_data(x) if _is_key(x) else x for _, x in with_paths]
    return leaves, names, treedef


def _describe(leaves, names) -> list[list]:
    return [[name, list(x.shape), str(x.dtype)] for name, x in zip(names, leaves)]


def _digests(leaves) -> list[str | None]:
    """A checksum of every leaf's bytes (BLAKE2b, 8 bytes): of the whole array, or of this process's
    copy of a replicated one (a multi-process run's state); `None` for an array split across
    processes, which no process holds whole."""
    out = []
    for x in leaves:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.is_fully_replicated:
                out.append(None)
                continue
            x = x.addressable_data(0)
        out.append(hashlib.blake2b(np.ascontiguousarray(np.asarray(x)).tobytes(), digest_size=8).hexdigest())
    return out


def describe_arrays(tree: Any) -> list[list]:
    """`[path, shape, dtype]` of every array leaf of `tree` (what a checkpoint records of its arrays)."""
    leaves, names, _ = _arrays(tree)
    return _describe(leaves, names)


class Checkpointer:
    """Saves and restores the state of a run in `directory/<step>/`, keeping the last `keep` steps.

    **Arguments:**

    - `directory`: the checkpoint folder (created if needed).
    - `keep`: how many of the latest checkpoints to keep.
    """

    def __init__(self, directory: str | pathlib.Path, keep: int = 3):
        if int(keep) < 1:
            raise ValueError(f"`keep` must be a positive int, got {keep}.")
        self.directory = pathlib.Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(keep), create=True, enable_async_checkpointing=False
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("arrays", "extra")
        )

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or `None`."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of the checkpoints kept."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, tree: Any, extra: dict | None = None) -> None:
        """Save the arrays of `tree` and the JSON-serialisable `extra` as checkpoint `step`.

        **Arguments:**

        - `step`: the training step (the checkpoint's name).
        - `tree`: a PyTree; its array leaves are saved.
        - `extra`: a JSON-serialisable dict saved beside them.
        """
        leaves, names, _ = _arrays(tree)
        extra = dict(extra or {})
        extra["_leaves"] = _describe(leaves, names)
        extra["_digests"] = _digests(leaves)  # what a restore checks the bytes it reads against
        previous = self.latest_step()
        try:
            self._manager.save(
                int(step),
                args=ocp.args.Composite(
                    arrays=ocp.args.StandardSave(leaves), extra=ocp.args.JsonSave(extra)
                ),
                force=True,
            )
            self._manager.wait_until_finished()
        except Exception as error:
            cause = _os_error(error)
            if cause is None:
                raise
            kept = "no earlier checkpoint" if previous is None else f"checkpoint {previous} is intact"
            raise CheckpointWriteError(
                f"checkpoint {step} could not be written in {self.directory} ({cause.strerror or cause}); "
                f"{kept}. Free space or fix the folder, then run the same command again to resume."
            ) from None

    def restore(self, template: Any, step: int | None = None) -> tuple[Any, dict]:
        """Restore checkpoint `step` (default: the latest) into the structure of `template`.

        **Arguments:**

        - `template`: a PyTree of the same structure as the saved one (e.g. a freshly built state);
            its array leaves give shapes, dtypes and shardings, its other leaves are kept.
        - `step`: the checkpoint to read, or `None` for the latest.

        **Returns:**

        `(tree, extra)`: the restored PyTree and the saved JSON dict.
        """
        if step is None:
            step = self.latest_step()
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}.")
        if int(step) not in self.all_steps():
            raise CheckpointError(f"no checkpoint {step} in {self.directory}: it holds steps {self.all_steps()}.")
        folder = self.directory / str(step)
        leaves, names, treedef = _arrays(template)
        expected = _describe(leaves, names)
        try:
            extra = self._manager.restore(
                int(step), args=ocp.args.Composite(extra=ocp.args.JsonRestore())
            )["extra"]
        except Exception as error:
            raise CorruptCheckpointError(
                f"checkpoint {folder} cannot be read ({type(error).__name__}: {error}); it is corrupt "
                "or incomplete. Delete that folder to resume from an older checkpoint, or start a new "
                "run folder."
            ) from None
        saved = extra.pop("_leaves", None)
        digests = extra.pop("_digests", None)  # (absent from checkpoints written before checksums)
        if saved != expected:
            raise CheckpointError(f"checkpoint {folder} does not match the model being restored: "
                                  + first_difference(saved, expected)
                                  + ". Was it written with another config? Use the same config, or a new run folder.")
        abstract = [
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)) for x in leaves
        ]
        try:
            restored = self._manager.restore(
                int(step), args=ocp.args.Composite(arrays=ocp.args.StandardRestore(abstract))
            )["arrays"]
        except Exception as error:
            raise CorruptCheckpointError(
                f"checkpoint {folder} cannot be read ({type(error).__name__}: {error}); it is corrupt "
                "or incomplete. Delete that folder to resume from an older checkpoint, or start a new "
                "run folder."
            ) from None
        for name, want, got in zip(names, digests or [], _digests(restored)):
            if want is not None and got is not None and want != got:
                raise CorruptCheckpointError(f"checkpoint {folder}: leaf {name} does not match the checksum "
                                             "written with it (a changed or damaged file).")
        template_leaves = jtu.tree_leaves(eqx.filter(template, eqx.is_array))
        values = [
            jr.wrap_key_data(new, impl=jr.key_impl(old)) if _is_key(old) else new
            for old, new in zip(template_leaves, restored)
        ]
        for name, value in zip(names, values):
            if not _is_key(value) and not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
                raise CorruptCheckpointError(f"checkpoint {folder}: leaf {name} holds non-finite values.")
        arrays = jtu.tree_unflatten(treedef, values)
        return eqx.combine(arrays, template), extra

    def restore_latest_good(
        self, template: Callable[[int], Any], log: Callable[[str], None] = print
    ) -> tuple[Any, dict, int]:
        """Restore the newest checkpoint that reads back whole, falling back past corrupt ones.

        A corrupt checkpoint (`CorruptCheckpointError`) is reported in one line through `log`,
        moved aside to `<step>.corrupt` (kept for inspection; the run writes that step afresh when
        it gets there) and the next older one is tried; one of another model or config
        (`CheckpointError`) stops at once, since an older one would not fit either.

        **Arguments:**

        - `template`: `template(step)` is the template to restore checkpoint `step` into (as for
            `restore`; the optimiser state of a staged run depends on the step's stage).
        - `log`: where the line about each corrupt checkpoint goes.

        **Returns:**

        `(tree, extra, step)` of the checkpoint restored.
        """
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}.")
        for step in steps:
            try:
                tree, extra = self.restore(template(step), step)
            except CorruptCheckpointError as error:
                older = [s for s in steps if s < step]
                if not older:
                    log(str(error))
                    continue
                aside = self._move_aside(step)
                log(f"{error} Moved it to {aside.name}; falling back to checkpoint {older[0]}.")
                continue
            return tree, extra, step
        raise CorruptCheckpointError(
            f"every checkpoint in {self.directory} is corrupt ({steps}); start a new run folder."
        )

    def _move_aside(self, step: int) -> pathlib.Path:
        """Rename checkpoint `step`'s folder to `<step>.corrupt` (`.corrupt-2`... if taken), out of
        the manager's steps."""
        aside = self.directory / f"{step}.corrupt"
        n = 1
        while aside.exists():
            n += 1
            aside = self.directory / f"{step}.corrupt-{n}"
        if jax.process_index() == 0:  # one process renames; the others wait for it
            (self.directory / str(step)).rename(aside)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
        self._manager.reload()
        return aside

    def close(self) -> None:
        """Finish pending writes and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _os_error(error: BaseException) -> OSError | None:
    """The `OSError` (full disk, no permission...) behind an error of the writers, if any: one in
    the chain of causes, or the operating system's error code in a message of TensorStore's (which
    writes the arrays: a full disk reaches Python as `ValueError: RESOURCE_EXHAUSTED: ...
    [os_error_code='28']`)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        code = re.search(r"os_error_code='?(\d+)", str(error))
        if code and int(code.group(1)) > 0:
            return OSError(int(code.group(1)), os.strerror(int(code.group(1))))
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def first_difference(saved, expected, there: str = "the checkpoint", here: str = "the model") -> str:
    """The first array in which two `describe_arrays` lists differ, named with where each is."""
    if saved is None:
        return f"{there} holds no description of its arrays"
    for (name_s, shape_s, dtype_s), (name_e, shape_e, dtype_e) in zip(saved, expected):
        if (name_s, shape_s, dtype_s) != (name_e, shape_e, dtype_e):
            return f"array {name_s} {dtype_s}{shape_s} in {there} vs {name_e} {dtype_e}{shape_e} in {here}"
    if len(saved) != len(expected):
        return f"{there} holds {len(saved)} arrays, {here} {len(expected)}"
    return "unknown difference"
