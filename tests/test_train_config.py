"""The structured configs: composition, hydra's own refusals, documentation of every field, and
the start-up check of values."""

import ast
import dataclasses
import pathlib
import re
import subprocess
import sys
import types

import hydra
import jax.numpy as jnp
import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from train import config
from train.config import ConfigError, validate


def compose(*overrides, name="config"):
    with hydra.initialize_config_module("train.configs", version_base=None):
        return hydra.compose(name, overrides=list(overrides))


@pytest.mark.parametrize("exp", ["smoke", "multilevel_mnist", "gmm_fields", "ddpm_mnist", "vdm_mnist", "vqvae_bridge_mnist", "warmstart", "reaction_diffusion",
                                 "mnist_sdf", "mnist_sdf_unet"])
def test_experiments_compose_and_validate(exp):
    cfg = compose(f"+exp={exp}")
    run = validate(cfg)
    assert isinstance(run, config.RunConfig) and isinstance(run.train, config.TrainConfig)
    assert cfg.name == exp and cfg.train.run_dir == f"runs/{exp}"
    grids = [level.grid for stage in run.train.stage_list() for level in stage.levels]
    assert grids == sorted(grids)
    if exp == "multilevel_mnist":
        assert isinstance(run.model, config.UNOConfig) and isinstance(run.prior, config.MaternConfig)
        assert {32, 64, 128} <= set(cfg.train.sample_grids)
        # its PNGs and its end-of-run evaluation use the same sampler; the evaluation is the
        # schema of train.evaluate, with its defaults where the experiment sets nothing
        assert run.train.evaluate and isinstance(run.train.evaluation, config.EvaluationConfig)
        assert cfg.sampler.name == cfg.train.evaluation.sampler.name == "pc"
        assert cfg.sampler.steps == cfg.train.evaluation.sampler.steps
        assert run.train.evaluation.sliced_projections == config.EvaluationConfig().sliced_projections
        # a first stage at 16² (the full-grid blocks keep the modes it holds), then 32² with a fresh
        # schedule-free optimiser, in a norm that weighs the fine modes' error up
        assert [[level.grid for level in stage.levels] for stage in run.train.stage_list()] == [[16], [32]]
        assert cfg.model.clip_modes and cfg.optim.schedule_free and cfg.model.reference_grid == 32
        assert cfg.loss.norm == "interpolated" and 0 < cfg.loss.norm_power < 0.5  # finite on every grid for s = 2, d = 2
        # the 32² stage trains the run's loss with a penalty on the grid dependence
        fine = config.programs.stage_loss(run.train.stage_list()[1], run.loss)
        assert dataclasses.replace(fine, consistency=0.0, consistency_examples=run.loss.consistency_examples) == run.loss
        assert fine.consistency == 30.0 and fine.consistency_examples == 2
        p2 = validate(compose(f"+exp={exp}", "loss.weighting=p2", "loss.p2_gamma=0.5"))
        assert config.programs.stage_loss(p2.train.stage_list()[1], p2.loss).weighting == "p2"  # follows the run's loss
        assert not cfg.train.levels  # no unused curriculum beside the stages
        # no likelihood ODE at the end of the run, so the ELBO is what reports bits per dimension
        assert run.train.evaluation.likelihood.num_digits == 0 and run.train.evaluation.elbo.num_examples > 0
    if exp.startswith("mnist_sdf"):
        # the U-NO and the UNet beside it: the same data, prior, SDE, training, DDIM and report; the
        # UNet predicts v where the U-NO predicts the noise
        assert isinstance(run.model, config.UNOConfig if exp == "mnist_sdf" else config.UNetConfig)
        assert cfg.data.generator == "mnist_sdf" and cfg.train.report.name == "mnist_sdf"
        assert cfg.sampler.name == "ddim" and list(cfg.train.report.grids) == [32, 64, 128]
        assert cfg.loss.parameterisation == ("epsilon" if exp == "mnist_sdf" else "v")
        other = compose("+exp=" + ("mnist_sdf_unet" if exp == "mnist_sdf" else "mnist_sdf"))
        assert all(cfg[k] == other[k] for k in cfg if k not in ("name", "model", "train", "loss"))
        assert {k for k in cfg.loss if cfg.loss[k] != other.loss[k]} == {"parameterisation"}
        assert {k for k in cfg.train if cfg.train[k] != other.train[k]} == {"run_dir", "batch_size", "levels", "report"}
    if exp == "ddpm_mnist":
        # DDPM's 1000 linear betas 1e-4..0.02 as a continuous schedule, white noise, a UNet
        # predicting epsilon, self-conditioning and P2 on, an EMA with warm-up, DDIM samples
        assert isinstance(run.model, config.UNetConfig) and isinstance(run.prior, config.WhiteConfig)
        assert (run.sde.schedule.value, run.sde.beta_min, run.sde.beta_max) == ("linear", 1000 * 1e-4, 1000 * 0.02)
        assert run.loss.parameterisation.value == "epsilon" and run.loss.weighting.value == "p2"
        assert run.loss.self_conditioning and run.optim.ema_warmup
        assert cfg.sampler.name == cfg.train.evaluation.sampler.name == "ddim"
        # DDPM's noise is N(0, I) per pixel: the white prior's per-mode variance is set so that the
        # 32-grid's pointwise variance is 1 (with 1 per mode it was 961 and no digits came out)
        import jax
        import jax.random as jr
        import numpy as np

        from train.build import build_sde

        prior = build_sde(cfg).prior
        noise = jax.vmap(lambda k: prior.sample(k, (1, 32, 32)))(jr.split(jr.key(0), 256))
        assert abs(float(np.var(np.asarray(noise))) - 1.0) < 0.02
        assert list(cfg.loss.self_conditioning_clip) == list(cfg.sampler.clip) == [-1.0, 1.0]


def test_curriculum_bookkeeping():
    run = validate(compose("+exp=smoke", "train.levels=[{grid:16,steps:3},{grid:32,steps:2}]"))
    assert run.train.total_steps() == 5
    assert [run.train.phase_at(s).level for s in range(6)] == [0, 0, 0, 1, 1, 1]
    staged = validate(compose("+exp=smoke", "train.stages=[{name:a,levels:[{grid:16,steps:3}]},"
                              "{name:b,trainable:[network],levels:[{grid:16,steps:1},{grid:32,steps:2}]}]"))
    assert staged.train.total_steps() == 6
    assert [(p.stage, p.level, p.grid, p.start, p.end) for p in staged.train.phases()] == [
        (0, 0, 16, 0, 3), (1, 0, 16, 3, 4), (1, 1, 32, 4, 6)]
    assert [staged.train.phase_at(s).stage for s in range(7)] == [0, 0, 0, 1, 1, 1, 1]


def test_a_stage_loss_replaces_fields_of_the_runs_or_starts_from_its_option():
    """A stage's loss without a name keeps every field of the run's loss it does not name; one with
    a name is that option from its defaults (also the run's own option)."""
    stage = "train.stages=[{levels:[{grid:16,steps:8}],loss:%s}]"
    run_loss = ["loss.weighting=p2", "loss.p2_gamma=0.5", "loss.norm=interpolated"]
    run = validate(compose("+exp=smoke", *run_loss, stage % "{consistency:3.0}"))
    loss = config.programs.stage_loss(run.train.stage_list()[0], run.loss)
    assert loss == dataclasses.replace(run.loss, consistency=3.0) and loss.weighting == "p2"
    run = validate(compose("+exp=smoke", *run_loss, stage % "{name:dsm,consistency:3.0}"))
    loss = config.programs.stage_loss(run.train.stage_list()[0], run.loss)
    assert loss == dataclasses.replace(config.DsmConfig(), consistency=3.0) and loss.weighting == "simple"
    run = validate(compose("+exp=smoke", "loss=vdm"))
    other = types.SimpleNamespace(loss={"name": "dsm", "weighting": "likelihood"})
    loss = config.programs.stage_loss(other, run.loss)
    assert loss.weighting == "likelihood" and loss == dataclasses.replace(config.DsmConfig(), weighting=loss.weighting)
    with pytest.raises(ConfigError, match="train.stages\\[0\\].loss.name must be one of"):
        validate(compose("+exp=smoke", stage % "{name:l1}"))
    with pytest.raises(ConfigError, match="train.stages\\[0\\].loss.*consistensy"):
        validate(compose("+exp=smoke", stage % "{consistensy:3.0}"))


@pytest.mark.parametrize(
    "override, field",
    [
        ("model.widht=3", "widht"),  # a misspelled key
        ("loss.self_conditioning=0.5", "self_conditioning"),  # no such field in the program
        ("train.batch_size=many", "train.batch_size"),  # a wrong type
        ("optim.lr=fast", "optim.lr"),
        ("train.progress_bar=maybe", "train.progress_bar"),
        ("loss.parameterisation=noise", "loss.parameterisation"),  # not a choice of the library's
        ("sampler.spacing=log", "sampler.spacing"),
        ("sampler.name=langevin", "sampler.name"),
        ("sampler.variables=x", "sampler.variables"),
        ("data.split=test", "data.split"),
        ("train.evaluation={weights:last}", "weights"),
        ("train.evaluation={data:{split:t10k}}", "data"),
        ("train.levels.0.steps=2.5", "train.levels[0].steps"),
    ],
)
def test_wrong_keys_and_types_are_refused_by_hydra(override, field):
    with pytest.raises(ConfigCompositionException) as info:
        compose("+exp=smoke", override)
    message = str(info.value) + str(info.value.__cause__)
    assert field in message


def test_a_seed_beyond_32_bits_is_refused():
    validate(compose("+exp=smoke", f"train.seed={2**32 - 1}"))
    with pytest.raises(ConfigError, match=r"train.seed must be below 2\*\*32 .*, got 4294967296"):
        validate(compose("+exp=smoke", f"train.seed={2**32}"))


def test_keys_appended_with_plus_are_refused_at_start_up():
    """`+key=value` makes hydra append to any node; the start-up check refuses it by name."""
    with pytest.raises(ConfigError, match=re.escape("train.levls is not a field of TrainConfig")):
        validate(compose("+exp=smoke", "+train.levls=[]"))
    with pytest.raises(ConfigError, match=re.escape("model.widht is not a field of FNOConfig")):
        validate(compose("+exp=smoke", "+model.widht=3"))


@pytest.mark.parametrize("group, option", [("prior", "gauss"), ("sde", "vpp"), ("model", "resnet")])
def test_unknown_group_options_are_refused_by_hydra(group, option):
    with pytest.raises(hydra.errors.MissingConfigException, match=option):
        compose("+exp=smoke", f"{group}={option}")


def test_the_library_tables_are_the_choices():
    """Every name the library accepts composes (and builds), so the config's choices are the
    library's, not a copy that can fall behind."""
    from sdeflow.losses import NORMS, TIME_SAMPLINGS, WEIGHTINGS
    from sdeflow.parameterisation import PARAMETERISATIONS
    from sdeflow.samplers import SPACINGS, VARIABLES
    from train.build import build_loss, build_parameterisation, build_sampler

    loss_fields = (("parameterisation", PARAMETERISATIONS), ("weighting", WEIGHTINGS),
                   ("time_sampling", TIME_SAMPLINGS), ("norm", NORMS))
    for field, table in loss_fields:
        for name, cls in table.items():
            cfg = compose("+exp=smoke", f"loss.{field}={name}")
            validate(cfg)
            # the program layer turns the name into the library's object
            assert type(build_loss(cfg, sde=None).keywords["kwargs"][field]) is cls
    for name, cls in PARAMETERISATIONS.items():
        assert build_parameterisation(name) == cls()
    for name, cls in SPACINGS.items():
        cfg = compose("+exp=smoke", f"sampler.spacing={name}")
        validate(cfg)
        assert type(build_sampler(cfg).spacing) is cls
    for name, cls in VARIABLES.items():
        cfg = compose("+exp=smoke", "sampler=ode", f"sampler.variables={name}")
        validate(cfg)
        assert type(build_sampler(cfg).variables) is cls


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.levels.1.grid=-3", "train.levels[1].grid must be a positive int, got -3"),
        ("prior.s=0.9", "prior: `s` must exceed d/2 = 1.0"),  # the library's check, reported under its group
        ("prior.tau=-1", "prior: `tau` must be a positive finite number"),
        ("sde.t0=2.0", "sde: need 0 <= `t0` < `t1`, got t0=2.0"),
        ("sde.beta_max=0.01", "sde: "),
        ("sde.name=ve", "sde.name is 'vp' for this schema; choose another option with sde=NAME"),
        ("data.holdout_range=[100,9000]", "data: "),  # the source's own checks, under its group
        ("data.train_range=[0,20000]", "data: "),
        ("data.smoothing=-1", "data: `smoothing` must be >= 0"),
        ("data.worker_count=-1", "data.worker_count must be >= 0, got -1"),
        ("optim.warmup_steps=100000", "optim.warmup_steps must be an int in [0,"),
        ("optim.ema_decay=1.0", "optim.ema_decay must be a number in [0, 1)"),
        ("optim.lr=0", "optim.lr must be a number > 0, got 0"),
        (("optim.schedule_free=true", "optim.b1=0"), "optim.b1 must be > 0 with schedule_free (its interpolation divides by b1), got 0"),
        ("train.devices=0", "train.devices must be auto or a positive int, got 0"),
        ("train.devices=3", "train.batch_size 16 must be a multiple of train.devices 3"),
        ("train.batch_size=0", "train.batch_size must be a positive int, got 0"),
        ("train.stages=[{trainable:[schedule],levels:[{grid:16,steps:2}]}]",
         "train.stages[0].trainable must name some of the parts ['network'], got ['schedule']"),
        ("train.stages=[{levels:[]}]", "train.stages[0].levels must be a non-empty list of {grid, steps}"),
        ("train.stages=[{levels:[{grid:16,steps:4}],loss:{name:dsm,parameterisation:x0}}]",
         "train.stages[0].loss.parameterisation must be the run's loss.parameterisation epsilon"),
        ("+optim_parts={schedule:{lr:1.0}}", "optim_parts must name parts of the run ['network'], got ['schedule']"),
        ("+optim_parts={network:{lr:0}}", "optim_parts.network.lr must be a number > 0, got 0"),
        ("sampler.coarse_grid=64", "sampler.coarse_grid 64 must not exceed any of the grids it samples [16, 32]"),
        ("sampler.coarse_grid=2", "sampler.coarse_grid must be >= 4, got 2"),
        ("train.sample_grids=[32,-1]", "train.sample_grids must be a list of positive ints"),
        ("sampler.steps=null", "sampler.steps must be a positive int for sampler euler_maruyama, got None"),
        ("sampler.t_end=2.0", "sampler.t_end must be null or a number in [sde.t0, sde.t1) = [0.001, 1), got 2.0"),
        ("sampler.t_end=0.0005", "sampler.t_end must be null or a number in [sde.t0, sde.t1) = [0.001, 1), got 0.0005"),
        # the end-of-run evaluation's fields fail at start-up, not after the training
        ("train.evaluation={sampler:{name:pc,snr:0}}", "train.evaluation.sampler: `snr` must be positive"),
        ("train.evaluation={sampler:{steps:-3}}", "train.evaluation.sampler.steps must be a positive int, got -3"),
        ("train.evaluation={sampler:{name:ode,steps:null,solver:heun}}",
         "train.evaluation.sampler.steps is null (adaptive steps), which needs train.evaluation.sampler.solver = tsit5"),
        ("train.evaluation={grid:2}", "train.evaluation.grid must be >= 4, got 2"),
        ("loss.p2_k=0", "loss.p2_k must be a number > 0, got 0"),
        ("loss.p2_gamma=-1", "loss.p2_gamma must be a number >= 0, got -1"),
        ("loss.self_conditioning_prob=1.5", "loss.self_conditioning_prob must be a number in [0, 1], got 1.5"),
        ("loss.consistency=-0.1", "loss.consistency must be a number >= 0, got -0.1"),
        ("loss.consistency_factor=1", "loss.consistency_factor must be >= 2, got 1"),
        ("loss.consistency_examples=0", "loss.consistency_examples must be a positive int, got 0"),
        ("loss.self_conditioning_clip=[1,-1]", "loss.self_conditioning_clip must be null or [lo, hi] with lo < hi, got [1.0, -1.0]"),
        ("sampler.eta=2", "sampler.eta must be a number in [0, 1], got 2"),
        ("sampler.clip=[-1,1]", "sampler.clip applies to the ddim sampler only, got sampler 'euler_maruyama'"),
        ("sampler.clip=[1,-1]", "sampler.clip must be null or [lo, hi] with lo < hi, got [1.0, -1.0]"),
        ("train.stages=[{levels:[{grid:16,steps:4}],loss:{name:dsm,self_conditioning:true}}]",
         "train.stages[0].loss.self_conditioning must be the run's loss.self_conditioning False"),
        ("train.evaluation={num_samples:1}", "train.evaluation.num_samples must be >= 2, got 1"),
        ("train.evaluation={grid:32,sample_grid:16}", "train.evaluation.sample_grid must be null or a grid size >= grid = 32, got 16"),
        # grids too small for the network's modes, named by the field that asks for them
        ("model.modes=8", "train.levels[0].grid = 16 does not suit model=FNO: modes (8, 8) do not fit the input grid (16, 16)"),
        ("train.sample_grids=[16,32,7]", "train.sample_grids[2] = 7 does not suit model=FNO"),
        ("train.evaluation={grid:8}", "train.evaluation.grid = 8 does not suit model=FNO"),
        ("train.evaluation={elbo:{grids:[16,8]}}", "train.evaluation.elbo.grids[1] = 8 does not suit model=FNO"),
        ("train.evaluation={likelihood:{rtol:-1}}", "train.evaluation.likelihood.rtol must be a number > 0, got -1"),
    ],
)
def test_wrong_values_name_their_field(override, message):
    cfg = compose("+exp=smoke", "train.evaluate=true", *((override,) if isinstance(override, str) else override))
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)


def test_denoising_switches_reach_the_library(getkey):
    """P2's gamma and k, self-conditioning, DDIM's eta and the EMA warm-up go from the config to the
    library's objects: the weight is (k + SNR)^-gamma, the network takes 2c channels, and samplers
    that cannot feed back an estimate of x0 are refused at start-up."""
    import jax.numpy as jnp
    import numpy as np

    import nets
    from train.build import build_loss, build_model, build_sampler, build_sde, part_optim

    cfg = compose("+exp=smoke", "loss.weighting=p2", "loss.p2_gamma=0.7", "loss.p2_k=3.0",
                  "loss.self_conditioning=true", "loss.self_conditioning_prob=0.25", "sampler=ddim",
                  "sampler.eta=0.6", "optim.ema_warmup=true", "sampler.clip=[-1,1]")
    validate(cfg)
    sde = build_sde(cfg)
    kwargs = build_loss(cfg, sde).keywords["kwargs"]
    t = jnp.asarray(0.3)
    snr = sde.marginal(t)[0] ** 2 / sde.marginal(t)[1] ** 2
    np.testing.assert_allclose(kwargs["weighting"](sde, t), (3.0 + snr) ** -0.7, rtol=1e-5)
    assert kwargs["self_conditioning"] == 0.25
    assert build_sampler(cfg).eta == 0.6 and build_sampler(cfg).clip == (-1.0, 1.0) and part_optim(cfg, "network").ema_warmup
    model = build_model(cfg, getkey())
    assert model(jnp.asarray(0.5), jnp.zeros((2, 16, 16))).shape == (1, 16, 16)  # 2c channels in, c out
    assert not isinstance(model, nets.ClippedEstimate)
    clipped = build_model(compose("+exp=smoke", "loss.self_conditioning=true", "loss.self_conditioning_clip=[-1,1]"), getkey())
    assert isinstance(clipped, nets.ClippedEstimate) and (clipped.low, clipped.high, clipped.channels) == (-1.0, 1.0, 1)
    plain = compose("+exp=smoke")
    assert build_loss(plain, sde).keywords["kwargs"]["self_conditioning"] is None
    from sdeflow.losses import InterpolatedNorm, L2Norm

    assert build_loss(plain, sde).keywords["kwargs"]["norm"] == L2Norm()
    interpolated = compose("+exp=smoke", "loss.norm=interpolated", "loss.norm_power=0.4")
    validate(interpolated)
    assert build_loss(interpolated, sde).keywords["kwargs"]["norm"] == InterpolatedNorm(0.4)
    from sdeflow.losses import ResolutionConsistency

    assert build_loss(plain, sde).keywords["kwargs"]["consistency"] is None
    penalised = compose("+exp=smoke", "loss.consistency=0.3", "loss.consistency_examples=2", "loss.consistency_factor=4")
    validate(penalised)
    assert build_loss(penalised, sde).keywords["kwargs"]["consistency"] == ResolutionConsistency(0.3, 2, 4)
    with pytest.raises(ConfigError, match=r"loss.norm_power must be a number in \[0, 1\]"):
        validate(compose("+exp=smoke", "loss.norm=interpolated", "loss.norm_power=1.5"))
    for override, message in [("sampler=ode sampler.steps=null", "sampler.steps must be a positive int with loss.self_conditioning"),
                              ("sampler=ode sampler.steps=8", "sampler.solver tsit5 reuses its last stage"),
                              ("sampler=ode sampler.steps=8 sampler.solver=heun sampler.variables=sigma",
                               "sampler.variables must be t with loss.self_conditioning")]:
        bad = compose("+exp=smoke", "loss.self_conditioning=true", *override.split())
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate(bad)


def _schema_classes():
    modules = [config.data, config.diffusion, config.evaluation, config.heldout, config.loop, config.model,
               config.programs, config.report, config.sampler]
    return [obj for module in modules for obj in vars(module).values()
            if dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__]


def test_every_schema_field_is_documented():
    """Every field of every schema carries a comment saying what it does (on its line, or on the
    lines of its default)."""
    classes = _schema_classes()
    assert len(classes) >= 15
    for cls in classes:
        source = pathlib.Path(sys.modules[cls.__module__].__file__).read_text()
        tree = ast.parse(source)
        node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
        lines = source.splitlines()
        assert ast.get_docstring(node), f"{cls.__name__} has no docstring"
        for statement in node.body:
            if isinstance(statement, ast.AnnAssign):
                text = "\n".join(lines[statement.lineno - 1 : statement.end_lineno])
                assert "#" in text, f"{cls.__name__}.{statement.target.id} has no comment"


def test_every_group_option_is_a_schema_and_composes():
    for group, options in config.GROUPS.items():
        for name, node in options.items():
            assert dataclasses.is_dataclass(node)
            cfg = compose(f"{group}={name}")
            assert OmegaConf.get_type(cfg[group]) is type(node)


def test_a_saved_run_config_is_typed_again():
    cfg = compose("+exp=multilevel_mnist")
    plain = OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True))
    typed = config.typed(plain)
    assert OmegaConf.get_type(typed.model) is config.UNOConfig and typed.sde.schedule == "cosine"
    assert OmegaConf.to_container(typed) == OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True)))
    plain.model.widht = 3
    with pytest.raises(Exception, match="widht"):
        config.typed(plain)


def test_command_line_fails_before_compiling_from_any_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "train.run", "+exp=smoke", "train.levels.1.grid=-3", f"hydra.run.dir={tmp_path}/x"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    # One message and how to see where it was raised; no traceback.
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: train.levels[1].grid must be a positive int, got -3.",
        "(set SDEFLOW_DEBUG=1 to see where it was raised)",
    ]


def test_sampler_programs_compose_the_same_schema():
    evaluate = compose("run_dir=x", "sampler=pc", "sampler.snr=0.2", name="evaluate")
    assert OmegaConf.get_type(evaluate) is config.EvaluateConfig and evaluate.sampler.snr == 0.2
    sample = compose("run_dir=x", "sampler=ode", name="sample")
    assert OmegaConf.get_type(sample.sampler) is config.SamplerConfig and sample.sampler.steps is None
    with pytest.raises(ConfigCompositionException, match="grdi"):
        compose("run_dir=x", "grdi=3", name="evaluate")


def test_predictor_corrector_sampler_fields_are_validated():
    from sdeflow import samplers
    from train.build import build_sampler

    cfg = compose("+exp=smoke", "sampler=pc", "sampler.steps=12", "sampler.snr=0.2", "sampler.coarse_grid=16")
    validate(cfg)
    ml = build_sampler(cfg)
    assert isinstance(ml.fine, samplers.PredictorCorrector) and ml.fine.snr == 0.2 and ml.fine.corrector_steps == 1
    assert ml.coarse_grid == (16, 16)
    for override, message in (
        ("sampler.snr=0", "sampler: `snr` must be positive"),
        ("sampler.corrector_steps=-1", "sampler: `corrector_steps` must be an integer >= 0"),
        ("sampler.steps=null", "sampler.steps must be a positive int for sampler pc, got None"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate(compose("+exp=smoke", "sampler=pc", override))


@pytest.mark.parametrize("name", sorted(config.GROUPS["model"]))
def test_every_model_option_builds_on_the_data(name, getkey):
    """Each model option's defaults build its network with the data's channels and dimension (the
    defaults of the schema are the constructor's own)."""
    import equinox as eqx
    import jax

    import nets
    from train.build import build_model

    cfg = compose("data=cifar10", f"model={name}")
    model = eqx.filter_eval_shape(lambda key: build_model(cfg, key), getkey())  # shapes only: fast
    assert type(model).__name__ == {"fno": "FNO", "uno": "UNO", "unet": "UNet"}[name]
    reference = eqx.filter_eval_shape(lambda key: getattr(nets, type(model).__name__)(3, 3, dim=2, key=key), getkey())
    shapes = lambda m: [x.shape for x in jax.tree.leaves(m) if isinstance(x, jax.ShapeDtypeStruct)]  # noqa: E731
    assert shapes(model) == shapes(reference)


def test_every_prior_option_builds_from_the_config():
    """prior=NAME builds the library's prior of that option; a spectral-multiplier prior is the
    maximum-likelihood fit to the run's training data (the same on every build), and when it
    learns, the run gets the part "prior"."""
    from sdeflow import priors

    from train import build
    from train.config.programs import part_names

    expected = {"matern": priors.Matern, "laplacian": priors.Laplacian, "white": priors.WhiteNoise,
                "fno": priors.RadialMultiplier, "combined": priors.Combined}
    assert set(expected) == set(config.GROUPS["prior"])
    small = ["prior.radius=3", "prior.fit_count=64", "prior.fit_grid=16"]  # a quick fit
    for name, cls in expected.items():
        cfg = compose("+exp=smoke", f"prior={name}", *(small if name == "fno" else []))
        run = validate(cfg)
        assert type(build.build_prior(cfg)) is cls and part_names(run) == ("network",)
    cfg = compose("+exp=smoke", "prior=fno", *small)
    first, again = build.build_prior(cfg), build.build_prior(cfg)
    source = build.build_source(cfg.data)
    fields = source.converter((16, 16))(source.load("train").values[:64])
    fit = priors.RadialMultiplier.fit(jnp.asarray(fields), priors.Matern(2, s=2.0), 3, learnable=False)
    assert np.array_equal(np.asarray(first.log_weights), np.asarray(fit.log_weights)) and first is again
    assert abs(first.tail.variance - fit.tail.variance) < 1e-6 * fit.tail.variance
    learned = compose("+exp=smoke", "prior=combined", "prior.first={name:fno,radius:3,fit_count:64,fit_grid:16,learn:true}",
                      "+optim_parts={prior:{lr:1.0e-2,warmup_steps:1}}")
    assert part_names(validate(learned)) == ("network", "prior")
    combined = build.build_prior(learned)
    assert isinstance(combined.first, priors.RadialMultiplier) and combined.first.learnable
    assert isinstance(combined.second, priors.Matern)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["prior=fno", "prior.radius=-1"], "prior.radius must be an int >= 0, got -1"),
        (["prior=fno", "prior.fit_grid=9"], "prior.fit_grid must be >= 2 * prior.radius + 1 = 17"),
        (["prior=fno", "prior.fit_count=1"], "prior.fit_count must be an int >= 2"),
        (["prior=fno", "prior.s=0.5"], "prior: `s` must exceed d/2 = 1.0"),
        (["prior=combined", "prior.first={name:foo}"], "prior.first.name must be one of ['matern', 'laplacian'"),
        (["prior=combined", "prior.second={name:matern,tauu:1}"], "prior.second: Key 'tauu' not in 'MaternConfig'"),
        (["prior=combined", "prior.second={name:laplacian,s:0.5}"], "prior.second: `s` must exceed d/2"),
        (["prior=combined", "prior.a=0"], "prior: `a` must be a positive finite number"),
        (["train.report.name=gaussian_mixture"], "train.report.name=gaussian_mixture needs data=generated"),
        (["train.report.times=0"], "train.report.times must be a positive int, got 0"),
        (["+exp=gmm_fields", "data.params.weights=[0.5,0.6]"], "data.params: `weights` must be 1 to 3 positive numbers summing to one"),
    ],
)
def test_wrong_prior_and_report_values_name_their_field(overrides, message):
    exp = [] if any(o.startswith("+exp") for o in overrides) else ["+exp=smoke"]
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(compose(*exp, *overrides))
