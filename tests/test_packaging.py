"""A plain (not editable) install carries the programs' configs: the wheel holds every YAML file of
train/configs, and from the unpacked wheel the programs compose their configs in any folder."""

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest


REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_holds_the_configs_and_composes_from_any_folder(tmp_path):
    # built from a copy: setuptools writes build/ and egg-info folders beside the sources
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".git", "build", "runs", "*.egg-info", "__pycache__",
                                                                 ".venv", "benchmarks", "docs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    str(source), "-w", str(tmp_path / "wheel")], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "wheel").glob("sdeflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"train/{p.relative_to(REPO / 'train').as_posix()}" for p in (REPO / "train" / "configs").rglob("*.yaml")}
    assert expected and expected <= names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    script = ("import hydra, train\n"
              f"assert train.__file__.startswith({str(tmp_path / 'site')!r}), train.__file__\n"
              "from train.config import validate\n"
              "with hydra.initialize_config_module('train.configs', version_base=None):\n"
              "    print(hydra.compose('config', overrides=['+exp=multilevel_mnist']).model._target_)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=folder, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "nets.UNO"
