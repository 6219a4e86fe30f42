"""What the user sees when an input is wrong: one message naming the problem, no traceback."""

import os
import subprocess
import sys
import textwrap

import hydra
import pytest
from omegaconf import OmegaConf

from sdeflow.priors import Matern, WhiteNoise
from train.checkpoint import CorruptCheckpointError
from train.config import ConfigError
from train.data import MnistError
from train.errors import check_same_run, DEBUG_VARIABLE, NonFiniteError, reported_errors, RunFolderError
from train.training import prior_warning, run


def compose(*overrides):
    with hydra.initialize_config_module("train.configs", version_base=None):
        return hydra.compose("config", overrides=["+exp=smoke", *overrides])


@pytest.mark.parametrize("error", [
    ConfigError("train.batch_size must be a positive int, got 0."),
    MnistError("MNIST file t10k-images-idx3-ubyte.gz is corrupt (its SHA256 is not the official one)."),
    CorruptCheckpointError("checkpoint 8 is unreadable."),
    RunFolderError("the run folder x cannot be written."),
    NonFiniteError("the loss is not finite at step 3."),
])
def test_user_errors_are_one_message(error, capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_VARIABLE, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        with reported_errors():
            raise error
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"error: {error}\n(set {DEBUG_VARIABLE}=1 to see where it was raised)\n"


def test_the_debug_switch_and_bugs_keep_the_traceback(capsys, monkeypatch):
    monkeypatch.setenv(DEBUG_VARIABLE, "1")
    with pytest.raises(ConfigError, match="bad field"):
        with reported_errors():
            raise ConfigError("bad field")
    monkeypatch.setenv(DEBUG_VARIABLE, "0")
    with pytest.raises(ZeroDivisionError):  # not the user's to fix: its traceback is the report
        with reported_errors():
            1 / 0
    assert capsys.readouterr().err == ""


def test_a_run_folder_of_another_experiment_is_refused_before_anything_is_built(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = OmegaConf.to_container(compose(f"train.run_dir={run_dir}", "model.width=16"), resolve=True, enum_to_str=True)
    OmegaConf.save(OmegaConf.create(other), run_dir / "config.yaml")
    with pytest.raises(RunFolderError, match=r"holds another run \(experiment 'smoke', its config.yaml\): "
                                             r"model.width is 16 there, 8 here\. Choose another train.run_dir"):
        run(compose(f"train.run_dir={run_dir}"), progress_bar=False)
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]  # nothing written, nothing built
    # Where the data is read from may change between a run and its resumption.
    moved = dict(other, data=dict(other["data"], root="/elsewhere/mnist"))
    check_same_run(other, moved, run_dir)
    with pytest.raises(RunFolderError, match="name is 'smoke' there, 'other' here"):
        check_same_run(other, dict(other, name="other"), run_dir)


def test_an_unwritable_run_folder_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunFolderError, match=r"the run folder .*file/run cannot be written \(Not a directory\)"):
        run(compose(f"train.run_dir={tmp_path}/file/run"), progress_bar=False)
    # From the command line, before hydra makes the folder its output folder: one message.
    result = subprocess.run(
        [sys.executable, "-m", "train.run", "+exp=smoke", f"train.run_dir={tmp_path}/file/run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[0].startswith(f"error: the run folder {tmp_path}/file/run cannot be written")
    assert "Traceback" not in result.stderr


def test_a_batch_larger_than_the_data_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train.batch_size = 1024 is more than the 512 training examples"):
        run(compose(f"train.run_dir={tmp_path}/run", "train.batch_size=1024"), progress_bar=False)


def test_a_prior_that_is_not_trace_class_is_warned_about():
    assert "is not trace class" in prior_warning(WhiteNoise(dim=2))
    assert prior_warning(Matern(dim=2, s=2.0)) is None


def test_wrong_shapes_name_the_annotation_outside_the_test_suite(tmp_path):
    """The library checks its jaxtyping annotations for every user, not only under pytest's hook."""
    script = textwrap.dedent("""
        import jax.numpy as jnp, jax.random as jr
        import nets, sdeflow
        for call in (lambda: sdeflow.restrict(jnp.zeros((3, 8), jnp.int32), (4,)),
                     lambda: nets.Pointwise(2, 1, key=jr.key(0))(jnp.zeros((2, 9), jnp.int32))):
            try:
                call()
            except Exception as error:
                print(type(error).__name__, "|", str(error).splitlines()[:4])
    """)
    env = {k: v for k, v in os.environ.items() if k != "SDEFLOW_TYPECHECK"}
    checked = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120, env=env)
    lines = checked.stdout.splitlines()
    assert len(lines) == 2, checked.stderr
    assert lines[0].startswith("TypeCheckError") and "sdeflow.grid.restrict" in lines[0]
    assert "parameter 'u'" in lines[0] and "i32[3,8]" in lines[0] and "Float[" in lines[0] and "'c *grid'" in lines[0]
    assert lines[1].startswith("TypeCheckError") and "Pointwise.__call__" in lines[1] and "parameter 'u'" in lines[1]
    unchecked = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                               timeout=120, env=dict(env, SDEFLOW_TYPECHECK="0"))
    assert "TypeCheckError" not in unchecked.stdout
