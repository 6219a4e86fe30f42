"""The hydra configs: composition, documentation of every field, and start-up validation."""

import pathlib
import re
import subprocess
import sys

import hydra
import pytest
from omegaconf import OmegaConf

from train import config
from train.config import ConfigError, level_at, total_steps, validate


CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
OWN_GROUPS = ("data", "prior", "sde", "loss", "optim", "sampler", "train", "exp")


def compose(*overrides):
    with hydra.initialize_config_dir(str(CONFIGS), version_base=None):
        return hydra.compose("config", overrides=list(overrides))


@pytest.mark.parametrize("exp", ["smoke", "multilevel_mnist"])
def test_experiments_compose_and_validate(exp):
    cfg = compose(f"+exp={exp}")
    validate(cfg)
    assert cfg.name == exp and cfg.train.run_dir == f"runs/{exp}"
    assert [level.grid for level in cfg.train.levels] == sorted(level.grid for level in cfg.train.levels)
    if exp == "multilevel_mnist":
        assert {32, 64, 128} <= set(cfg.train.sample_grids)
        assert len(cfg.train.levels) >= 2 and cfg.prior.name != "white"
        # its PNGs and its evaluation use the same sampler
        assert cfg.sampler.name == cfg.train.evaluation.sampler.name == "pc"
        assert cfg.sampler.steps == cfg.train.evaluation.sampler.steps
        assert cfg.sampler.snr == cfg.train.evaluation.sampler.snr


def test_curriculum_bookkeeping():
    cfg = compose("+exp=smoke", "train.levels=[{grid:16,steps:3},{grid:32,steps:2}]")
    assert total_steps(cfg) == 5
    assert [level_at(cfg, s) for s in range(6)] == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.levels.1.grid=-3", "train.levels[1].grid must be a positive int, got -3"),
        ("train.levels.0.steps=2.5", "train.levels[0].steps must be a positive int, got 2.5"),
        ("prior.s=0.9", "prior.s must be > d/2 = 1"),
        ("prior.name=gauss", "prior.name must be one of matern, laplacian, white, got 'gauss'"),
        ("sde.t0=2.0", "sde.t0 must be a number in [0, sde.t1 = 1)"),
        ("sde.beta_max=0.01", "sde.beta_max must be a number >= sde.beta_min"),
        ("data.split=test", "data.split must be one of train, t10k"),
        ("data.holdout_range=[100,9000]", "data.holdout_range [100, 9000] overlaps data.train_range"),
        ("data.train_range=[0,20000]", "data.train_range must be [start, stop] with 0 <= start < stop <= 10000"),
        ("data.smoothing=-1", "data.smoothing must be a number >= 0"),
        ("optim.warmup_steps=100000", "optim.warmup_steps must be an int in [0,"),
        ("optim.ema_decay=1.0", "optim.ema_decay must be a number in [0, 1)"),
        ("optim.lr=0", "optim.lr must be a number > 0, got 0"),
        ("loss.parameterisation=noise", "loss.parameterisation must be one of epsilon, x0, v, score"),
        ("train.devices=0", "train.devices must be auto or a positive int, got 0"),
        ("train.devices=3", "train.batch_size 16 must be a multiple of train.devices 3"),
        ("train.batch_size=0", "train.batch_size must be a positive int, got 0"),
        ("sampler.coarse_grid=64", "sampler.coarse_grid 64 must not exceed any of train.sample_grids [16, 32]"),
        ("sampler.coarse_grid=2", "sampler.coarse_grid must be null or an int >= 4, got 2"),
        ("train.sample_grids=[32,-1]", "train.sample_grids must be a list of positive ints"),
        ("sampler.steps=null", "sampler.steps must be a positive int, got None"),
        ("sampler.t_end=2.0", "sampler.t_end must be null or a number in (0, sde.t1), got 2.0"),
        ("sampler.t_end=0", "sampler.t_end must be null or a number in (0, sde.t1), got 0"),
        ("sampler.spacing=log", "sampler.spacing must be one of uniform, log_snr, got 'log'"),
        ("train.progress_bar=2", "train.progress_bar must be true or false, got 2"),
        ("train.evaluation={weights:last}", "train.evaluation.weights must be one of ema, raw, got 'last'"),
        # the end-of-run evaluation's fields fail at start-up, not after the training
        ("train.evaluation={sampler:{name:pc,snr:0}}", "train.evaluation.sampler.snr must be a number > 0, got 0"),
        ("train.evaluation={sampler:{steps:-3}}", "train.evaluation.sampler.steps must be a positive int, got -3"),
        ("train.evaluation={sampler:{name:langevin}}", "train.evaluation.sampler.name must be one of euler_maruyama, shark"),
        ("train.evaluation={sampler:{name:ode,steps:null,solver:heun}}",
         "train.evaluation.sampler.steps is null (adaptive steps), which needs train.evaluation.sampler.solver = tsit5"),
        ("train.evaluation={grid:2}", "train.evaluation.grid must be an int >= 4, got 2"),
        ("train.evaluation={num_samples:0}", "train.evaluation.num_samples must be a positive int, got 0"),
        ("train.evaluation={data:{split:t10k}}", "train.evaluation.data is not a field of configs/evaluate.yaml"),
    ],
)
def test_wrong_values_name_their_field(override, message):
    cfg = compose("+exp=smoke", override)
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)


def test_every_field_is_documented():
    """Every key of our YAML files carries a comment (on its line, or for a block on the line above)."""
    files = [p for group in OWN_GROUPS for p in (CONFIGS / group).glob("*.yaml")] + [CONFIGS / "config.yaml"]
    assert len(files) >= 12
    for path in files:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            match = re.match(r"^\s*(?:- )?([A-Za-z_][\w]*):", line)
            if not match or line.lstrip().startswith("#"):
                continue
            if match.group(1) in ("defaults", "hydra", "run", "job") and path.name == "config.yaml":
                continue
            value = line.split(":", 1)[1].split("#")[0].strip()
            is_block = value == ""
            documented = "#" in line or (i > 0 and lines[i - 1].lstrip().startswith("#"))
            in_exp = path.parent.name == "exp" and is_block  # experiments group their overrides
            assert documented or in_exp or _documented_in_group(path, match.group(1)), (
                f"{path.relative_to(CONFIGS)}:{i + 1}: field {match.group(1)!r} has no comment"
            )


def _documented_in_group(path: pathlib.Path, key: str) -> bool:
    """Fields an experiment or a list item sets are documented where they are defined."""
    if path.parent.name == "exp":
        return any(re.search(rf"^\s*(?:- )?{key}:.*#", p.read_text(), re.M) for p in CONFIGS.glob("*/*.yaml"))
    return bool(re.search(rf"^\s*(?:- )?{key}:.*#", path.read_text(), re.M))


def test_command_line_fails_before_compiling():
    result = subprocess.run(
        [sys.executable, "-m", "train.run", "+exp=smoke", "train.levels.1.grid=-3", "hydra.run.dir=/tmp/x"],
        cwd=CONFIGS.parent, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "train.levels[1].grid must be a positive int, got -3" in result.stderr


def test_choice_tables_match_the_library():
    """train.config keeps its own tables (it validates before importing JAX); they must list what
    the library accepts."""
    from sdeflow.samplers.base import SPACINGS

    assert config.SPACINGS == SPACINGS


def test_fields_that_do_not_exist_are_refused_at_composition():
    """The program has no self-conditioning (its samplers call the score on x_t alone), so the
    field is not in the loss group and hydra names it before anything runs."""
    with pytest.raises(hydra.errors.ConfigCompositionException, match="loss.self_conditioning"):
        compose("+exp=smoke", "loss.self_conditioning=0.5")


def test_ode_sampler_fields_are_validated():
    cfg = compose("+exp=smoke", "sampler=ode", "sampler.variables=log_sigma", "sampler.t_end=0.01")
    validate(cfg)
    with pytest.raises(ConfigError, match=re.escape("sampler.variables must be one of t, sigma, log_sigma, got 'x'")):
        validate(compose("+exp=smoke", "sampler=ode", "sampler.variables=x"))


def test_predictor_corrector_sampler_fields_are_validated():
    from sdeflow import samplers
    from train.build import build_sampler

    cfg = compose("+exp=smoke", "sampler=pc", "sampler.steps=12", "sampler.snr=0.2", "sampler.coarse_grid=16")
    validate(cfg)
    ml = build_sampler(cfg)
    assert isinstance(ml.fine, samplers.PredictorCorrector) and ml.fine.snr == 0.2 and ml.fine.corrector_steps == 1
    for override, message in (
        ("sampler.snr=0", "sampler.snr must be a number > 0, got 0"),
        ("sampler.corrector_steps=0", "sampler.corrector_steps must be a positive int, got 0"),
        ("sampler.steps=null", "sampler.steps must be a positive int, got None"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate(compose("+exp=smoke", "sampler=pc", override))
