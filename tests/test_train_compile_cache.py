"""train.compile_cache: a program started again loads its compiled programs from disk."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

import train.compile_cache
import train.memory
import train.progress
from train.errors import run_program

REPO = pathlib.Path(__file__).resolve().parents[1]

# One program as a fresh process sees it: the cache set up, a jitted function compiled, and what
# the cache did (JAX's monitoring events).
SCRIPT = """
import json
import jax
import train.compile_cache as cc
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
folder = cc.use_compile_cache()
value = float(jax.jit(lambda x: (x * 3.0 + 1.0).sum())(jax.numpy.arange(7.0)))
print(json.dumps({"folder": folder, "value": value, "dir": jax.config.jax_compilation_cache_dir,
                  "max_size": jax.config.jax_compilation_cache_max_size,
                  "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses")}))
"""

# The programs' sampler (`train.sampling.draw`, predictor-corrector) in a fresh process: its solve
# holds no host callback, so the cache keeps it like any other program. A program with a callback
# skips the cache without a hit or a miss, so the events are read between the sampler's lowering
# and the end of its compilation.
DRAW = """
import json
import jax
import jax.random as jr
import train.compile_cache as cc
from sdeflow import samplers
from sdeflow.parameterisation import Epsilon
from test_samplers import gaussian_oracle
from train.sampling import draw
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
jax.monitoring.register_event_duration_secs_listener(
    lambda name, seconds, **kw: events.append(f"{name} {kw.get('fun_name')}"))
folder = cc.use_compile_cache()
oracle = gaussian_oracle(16)
x, n = draw(oracle, oracle.sde, Epsilon(), samplers.PredictorCorrector(5), jr.key(0), (1, 16), 4, 4)
# what the cache did between the sampler's lowering and the end of its compilation
start = events.index("/jax/core/compile/jaxpr_to_mlir_module_duration jit(_draw_batch)")
end = events.index("/jax/core/compile/backend_compile_duration jit(_draw_batch)")
cache = [e.rsplit("/", 1)[1] for e in events[start:end] if e.endswith(("/cache_hits", "/cache_misses"))]
print(json.dumps({"folder": folder, "value": float(abs(x).sum()), "evaluations": int(n.sum()),
                  "sampler": cache}))
"""


def _program(home: pathlib.Path, script: str = SCRIPT, **env_extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT"))}
    # the tests' own cache settings left out; this small program kept although it compiles at once
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", **env_extra)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_program_the_first_compiled(tmp_path):
    folder = tmp_path / "home" / ".cache" / "sdeflow" / "xla"
    first = _program(tmp_path / "home")
    assert first["folder"] == first["dir"] == str(folder)
    assert first["max_size"] == train.compile_cache.MAX_BYTES
    assert first["hits"] == 0 and first["misses"] >= 1
    assert any(folder.iterdir())  # the compiled program, on disk
    second = _program(tmp_path / "home")
    assert second["hits"] >= 1 and second["misses"] == 0
    assert second["value"] == first["value"] == 70.0


def test_a_second_process_loads_the_sampler_the_first_compiled(tmp_path):
    first = _program(tmp_path / "home", DRAW)
    assert first["sampler"] == ["cache_misses"]
    assert first["evaluations"] == 4 * 10  # 5 predictor + 5 corrector steps a sample
    second = _program(tmp_path / "home", DRAW)
    assert second["sampler"] == ["cache_hits"]
    assert second["value"] == first["value"] > 0


def test_the_environment_variable_chooses_the_folder_or_turns_the_cache_off(tmp_path):
    home, chosen = tmp_path / "home", tmp_path / "chosen"
    picked = _program(home, JAX_COMPILATION_CACHE_DIR=str(chosen))
    assert picked["folder"] == picked["dir"] == str(chosen) and any(chosen.iterdir())
    off = _program(home, JAX_COMPILATION_CACHE_DIR="")
    assert off["folder"] is None and off["hits"] == off["misses"] == 0
    disabled = _program(home, JAX_ENABLE_COMPILATION_CACHE="false")
    assert disabled["folder"] is None and disabled["hits"] == disabled["misses"] == 0
    assert not (home / ".cache" / "sdeflow").exists()  # nothing written to the default folder


def test_a_folder_that_cannot_be_made_leaves_the_program_compiling(tmp_path):
    home = tmp_path / "home"
    home.write_text("a file where the home folder should be")
    out = _program(home)
    assert out["folder"] is None and out["dir"] is None and out["value"] == 70.0


def test_programs_turn_the_cache_on_before_they_run(monkeypatch):
    calls = []
    monkeypatch.setattr(train.memory, "retain_freed_memory", lambda: None)  # not in the test process
    monkeypatch.setattr(train.progress, "configure_logging", lambda: None)
    monkeypatch.setattr(train.compile_cache, "use_compile_cache", lambda: calls.append("cache"))
    run_program(lambda cfg: calls.append("main"), None)
    assert calls == ["cache", "main"]


def test_the_training_program_turns_the_cache_on_before_it_builds_anything(monkeypatch):
    import train.run

    class Started(Exception):
        pass

    def cache():
        raise Started  # reached before the config is read: _main is given an empty one

    monkeypatch.setattr(train.run, "configure_logging", lambda basic: None)
    monkeypatch.setattr(train.run.devices_lib, "request_cpu_devices", lambda: None)
    monkeypatch.setattr(train.run, "use_compile_cache", cache)
    with pytest.raises(Started):
        train.run._main(OmegaConf.create({}))
