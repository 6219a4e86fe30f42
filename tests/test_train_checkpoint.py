"""Checkpoints: save/restore equality (sharded state, keys, JSON), retention, corrupt and mismatched checkpoints."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from train.checkpoint import Checkpointer, CheckpointError
from train.step import init_state, make_mesh, make_optimiser


def _state(width, mesh, seed=0):
    model = eqx.nn.MLP(4, 4, width, 2, key=jr.key(seed))
    optimiser = make_optimiser(1e-3, 10)
    state = init_state(model, optimiser, jr.key(seed + 1), mesh)
    # Move away from the initial values so that restoring into a fresh template is visible.
    return jax.tree.map(lambda x: x + 0.5 if eqx.is_inexact_array(x) else x, state)


def _assert_same(a, b):
    la, lb = jax.tree.leaves(eqx.filter(a, eqx.is_array)), jax.tree.leaves(eqx.filter(b, eqx.is_array))
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jr.key_data(x), jr.key_data(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_equal_and_keep_last(tmp_path, request):
    mesh = make_mesh(jax.devices()[:4])
    state = _state(8, mesh)
    state = eqx.tree_at(lambda s: s.step, state, jnp.asarray(7, jnp.int32))
    checkpointer = Checkpointer(tmp_path / "ckpt", keep=2)
    for step in (3, 5, 7):
        checkpointer.save(step, state, {"data": {"next_index": step}, "level": 1})
    assert checkpointer.all_steps() == [5, 7] and checkpointer.latest_step() == 7
    checkpointer.close()

    fresh = Checkpointer(tmp_path / "ckpt", keep=2)  # as a resumed run opens it
    request.addfinalizer(fresh.close)
    template = _state(8, mesh, seed=10)
    restored, extra = fresh.restore(template)
    assert extra == {"data": {"next_index": 7}, "level": 1}
    _assert_same(restored, state)
    assert int(restored.step) == 7 and jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
    # The restored arrays carry the template's (replicated, 4-device) sharding; the static parts
    # (activations...) are the template's.
    leaf = restored.parts.layers[0].weight
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
    assert restored.parts.activation is template.parts.activation
    older, extra = fresh.restore(template, step=5)
    assert extra["data"] == {"next_index": 5}


# A failed tensorstore read leaves a callback that fires after orbax's event loop closed: harmless.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_or_mismatched_checkpoint_names_the_folder(tmp_path, request):
    mesh = make_mesh(jax.devices()[:1])
    state = _state(8, mesh)
    checkpointer = Checkpointer(tmp_path, keep=3)
    request.addfinalizer(checkpointer.close)
    checkpointer.save(1, state)
    checkpointer.save(2, state)
    # Another model (width 16) does not fit the checkpoint.
    with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path / '2'} does not match.*layers\[0\]\.weight"):
        checkpointer.restore(_state(16, mesh))
    # Corrupt array data of step 2.
    data_files = [p for p in (tmp_path / "2" / "arrays").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data_files
    for path in data_files:
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        raw[-3] ^= 0xFF
        path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path / '2'} cannot be read.*corrupt"):
        checkpointer.restore(state)
    # Corrupt JSON side car of step 1.
    for path in (tmp_path / "1" / "extra").rglob("metadata"):
        path.write_text("{not json")
    with pytest.raises(CheckpointError, match=rf"checkpoint {tmp_path / '1'} cannot be read"):
        checkpointer.restore(state, step=1)
    with Checkpointer(tmp_path / "empty") as empty, pytest.raises(CheckpointError, match="no checkpoint in"):
        empty.restore(state)
    with pytest.raises(CheckpointError, match=rf"no checkpoint 7 in {tmp_path}: it holds steps \[1, 2\]"):
        checkpointer.restore(state, step=7)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, request):
    mesh = make_mesh(jax.devices()[:1])
    states = {step: _state(8, mesh, seed=step) for step in (1, 2, 3)}
    checkpointer = Checkpointer(tmp_path, keep=3)
    request.addfinalizer(checkpointer.close)
    for step, state in states.items():
        checkpointer.save(step, state, {"step": step})
    for step in (3, 2):  # the two newest: truncated array data
        for path in (tmp_path / str(step) / "arrays").rglob("*"):
            if path.is_file() and path.parent.name == "d":
                path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    lines = []
    restored, extra, step = checkpointer.restore_latest_good(lambda step: _state(8, mesh, seed=9), log=lines.append)
    assert step == 1 and extra == {"step": 1}
    _assert_same(restored, states[1])
    assert len(lines) == 2 and f"checkpoint {tmp_path / '3'} cannot be read" in lines[0]
    assert lines[0].endswith("Moved it to 3.corrupt; falling back to checkpoint 2.")
    assert lines[1].endswith("Moved it to 2.corrupt; falling back to checkpoint 1.")
    # The corrupt ones are set aside, so that the resumed run writes those steps again (and a second
    # corruption of the same step goes beside the first).
    assert checkpointer.all_steps() == [1] and (tmp_path / "3.corrupt").is_dir() and (tmp_path / "2.corrupt").is_dir()
    checkpointer.save(2, states[2], {"step": 2})
    _assert_same(checkpointer.restore(_state(8, mesh, seed=9), 2)[0], states[2])
    for path in (tmp_path / "2" / "arrays").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert checkpointer.restore_latest_good(lambda step: _state(8, mesh, seed=9), log=lines.append)[2] == 1
    assert lines[-1].endswith("Moved it to 2.corrupt-2; falling back to checkpoint 1.")
    # a checkpoint of another model is refused at once, not skipped
    with pytest.raises(CheckpointError, match="does not match"):
        checkpointer.restore_latest_good(lambda step: _state(16, mesh), log=lines.append)


def test_stop_request_takes_one_signal_and_exits_on_the_second():
    import os
    import signal

    from train.signals import StopRequest

    lines = []
    before = signal.getsignal(signal.SIGINT)
    with StopRequest(lines.append) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal == "SIGTERM" and "SIGTERM: finishing the current step" in lines[0]
        with pytest.raises(KeyboardInterrupt, match="second signal"):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_processes_stop_on_the_gathered_answer_not_on_a_signal_that_came_after_it():
    """The processes of a run gather their stop flags after every step and stop where any was set.
    A signal that reaches a process after it gave its flag (while it waits for the others) must
    not stop it alone, ahead of the others (they would wait for it at their next collective,
    forever): it stops at the next step, with them. Process 0 takes another's signal as its own."""
    import os
    import signal

    from train.signals import StopRequest

    other = StopRequest(lambda line: None)  # another process's: no signal reaches it
    with StopRequest(lambda line: None) as one:
        flag = one.requested  # given to the gathering: False
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while it waits for the others' flags
        assert one.requested and not flag
        assert one.agree(flag or other.requested) is False  # what every process got: go on
        gathered = one.requested or other.requested  # the next step's gathering
        assert one.agree(gathered) is True and other.agree(gathered) is True
        assert other.signal == "another process's signal" and one.signal == "SIGTERM"


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, request, monkeypatch):
    """A disk that fills during a write: one clear error naming the step, the folder and the
    checkpoint that is intact, which then restores."""
    import errno

    from train.checkpoint import CheckpointWriteError

    mesh = make_mesh(jax.devices()[:1])
    state = _state(8, mesh)
    checkpointer = Checkpointer(tmp_path, keep=3)
    request.addfinalizer(checkpointer.close)
    checkpointer.save(1, state, {"step": 1})
    write = checkpointer._manager.save

    def full_disk(step, *args, **kwargs):  # the writer starts, then the device is full
        (tmp_path / f"{step}.orbax-checkpoint-tmp-0").mkdir()
        raise RuntimeError("write failed") from OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointer._manager, "save", full_disk)
    with pytest.raises(CheckpointWriteError, match=r"checkpoint 2 could not be written in .* \(No space left on "
                       r"device\); checkpoint 1 is intact\. Free space"):
        checkpointer.save(2, state, {"step": 2})
    # As TensorStore reports a full disk (no OSError in the chain, the code in the message):
    tensorstore = ("RESOURCE_EXHAUSTED: Error writing local file \"d/abc\": [OpenFailed] "
                   "No space left on device [os_error_code='28']")
    monkeypatch.setattr(checkpointer._manager, "save", lambda *a, **k: (_ for _ in ()).throw(ValueError(tensorstore)))
    with pytest.raises(CheckpointWriteError, match=r"checkpoint 2 could not be written in .* \(No space left on "
                       r"device\); checkpoint 1 is intact\."):
        checkpointer.save(2, state, {"step": 2})
    monkeypatch.setattr(checkpointer._manager, "save", write)
    _, extra, step = checkpointer.restore_latest_good(lambda step: _state(8, mesh, seed=9))
    assert step == 1 and extra == {"step": 1}
    # errors that are not about the file system are not disguised
    monkeypatch.setattr(checkpointer._manager, "save", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad tree")))
    with pytest.raises(ValueError, match="bad tree"):
        checkpointer.save(3, state)


def test_a_checkpoint_with_non_finite_values_is_corrupt(tmp_path):
    """Weights that hold a NaN restore as a corrupt checkpoint naming the leaf, so that a resume
    falls back to an older one instead of training on."""
    from train.checkpoint import CorruptCheckpointError

    mesh = make_mesh(jax.devices()[:1])
    state = _state(8, mesh)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    index = next(i for i, x in enumerate(leaves) if eqx.is_inexact_array(x) and x.size > 1)
    leaves[index] = leaves[index].at[(0,) * leaves[index].ndim].set(jnp.nan)
    with Checkpointer(tmp_path) as checkpointer:
        checkpointer.save(1, state, {"step": 1})
        checkpointer.save(2, jax.tree_util.tree_unflatten(treedef, leaves), {"step": 2})
        with pytest.raises(CorruptCheckpointError, match=rf"checkpoint {tmp_path / '2'}: leaf .* holds non-finite"):
            checkpointer.restore(_state(8, mesh, seed=9), 2)
        assert checkpointer.restore_latest_good(lambda step: _state(8, mesh, seed=9), log=lambda line: None)[2] == 1


def test_a_flipped_bit_in_the_array_data_is_caught_by_its_checksum(tmp_path):
    """One bit changed inside the arrays' data file (which the storage reads back without complaint
    for arrays this large: 128 x 128 weights) fails the checksum written with the checkpoint; a
    resume falls back to the one before."""
    from train.checkpoint import CorruptCheckpointError

    mesh = make_mesh(jax.devices()[:1])
    with Checkpointer(tmp_path) as checkpointer:
        for step in (1, 2):
            checkpointer.save(step, _state(128, mesh, seed=step), {"step": step})
        data = max((p for p in (tmp_path / "2" / "arrays").rglob("*") if p.is_file() and p.parent.name == "d"),
                   key=lambda p: p.stat().st_size)
        raw = bytearray(data.read_bytes())
        raw[len(raw) * 3 // 4] ^= 0x01
        data.write_bytes(bytes(raw))
        with pytest.raises(CorruptCheckpointError, match=rf"checkpoint {tmp_path / '2'}: leaf .* does not match the checksum"):
            checkpointer.restore(_state(128, mesh, seed=9), 2)
        assert checkpointer.restore_latest_good(lambda step: _state(128, mesh, seed=9), log=lambda line: None)[2] == 1
