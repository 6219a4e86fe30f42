"""`loss=vdm` through the programs: the learned schedule is a trained part, checkpointed, and the
restored run's SDE is the learned one; the ELBO report works for either loss."""

import hydra
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from sdeflow.sde import LearnedSchedule
from train import build
from train.config import ConfigError, validate
from train.elbo import elbo_report
from train.restore import load_run
from train.step import tree_max_difference
from train.training import run

VDM = ["+exp=smoke", "loss=vdm", "sde.t0=0.0", "loss.decoder=discretised", "data.smoothing=0.0",
       "loss.gamma_min=-8.0", "loss.schedule_hidden=8", "model.fourier_features=[6]",
       "train.levels=[{grid:16,steps:3}]", "train.ckpt_every=2", "train.sample_grids=[]", "train.log_every=1",
       "+optim_parts={schedule: {lr: 0.05, warmup_steps: 0, ema_decay: 0.5}}"]


def compose(*overrides):
    with hydra.initialize_config_module("train.configs", version_base=None):
        return hydra.compose("config", overrides=list(overrides))


def test_vdm_run_trains_checkpoints_and_restores_its_learned_schedule(tmp_path):
    cfg = compose(*VDM, f"train.run_dir={tmp_path / 'run'}")
    initial = build.build_parts(cfg, build.split_keys(cfg.train.seed)[0])
    assert set(initial) == {"network", "schedule"} and isinstance(initial["schedule"], LearnedSchedule)
    state = run(cfg, progress_bar=False)
    assert int(state.step) == 3
    trained = state.parts["schedule"]
    assert tree_max_difference(trained, initial["schedule"]) > 1e-3  # the optimiser moved it
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["2", "3"]
    assert (tmp_path / "run" / "schedule.png").stat().st_size > 0
    config_schedule = build.build_sde(cfg).schedule  # the sde group's fixed schedule
    ts = jnp.linspace(0.0, 1.0, 11)
    for weights, part in (("raw", trained), ("ema", state.ema["schedule"])):
        run_cfg, model, sde, step = load_run(tmp_path / "run", weights=weights)
        assert step == 3 and isinstance(sde.schedule, LearnedSchedule) and sde.t0 == 0.0
        assert tree_max_difference(sde.schedule, part) == 0.0
        np.testing.assert_allclose(jax.vmap(sde.schedule.gamma)(ts), jax.vmap(part.gamma)(ts))
    assert not np.allclose(jax.vmap(sde.schedule.gamma)(ts[1:]), jax.vmap(config_schedule.gamma)(ts[1:]), atol=0.5)

    # The ELBO report: the run's discretised decoder on the exact pixels (native 32-grid), the
    # Gaussian one elsewhere and for a dsm run's config; its terms add up to the total.
    settings = OmegaConf.create({"num_examples": 4, "repeats": 1})
    report = elbo_report(model, sde, run_cfg, settings, [32, 16], 0, first=2)
    assert report["32"]["decoder"] == "DiscretisedDecoder" and report["32"]["dimensions"] == 32 * 32
    assert report["16"]["decoder"] == "GaussianDecoder" and "why_gaussian_decoder" in report["16"]
    dsm_cfg = compose("+exp=smoke", "sde.t0=0.0", "data.smoothing=0.0")
    dsm = elbo_report(model, sde, dsm_cfg, settings, [16], 0)["16"]
    assert dsm["decoder"] == "GaussianDecoder" and dsm["dimensions"] == 15 * 15
    for result in (*report.values(), dsm):
        assert np.isfinite(result["bits_per_dim"])
        np.testing.assert_allclose(sum(result["terms_bits_per_dim"].values()), result["bits_per_dim"], rtol=1e-5)


@pytest.mark.parametrize(("overrides", "field"), [
    (["sde=ve"], "loss.learned_schedule"),
    (["loss.learned_schedule=false"], "loss.variance_reduction"),
    (["loss.gamma_max=-20.0"], "loss.gamma_max"),
    (["+optim_parts={prior: {lr: 0.1}}"], "optim_parts"),
])
def test_vdm_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        validate(compose("+exp=smoke", "loss=vdm", *overrides))


def test_elbo_bits_averages_the_draws_in_bits_per_dimension():
    """`elbo_bits` is, per example, the mean over its `repeats` draws of the three terms' sum, in
    bits per dimension (nats over D ln 2), and `first` reports the first examples alone: computed
    here from `vdm_terms` with the same keys."""
    import math

    import jax.random as jr

    from sdeflow.likelihood import model_dimensions
    from sdeflow.losses import GaussianDecoder, StratifiedTimeSampling, vdm_terms
    from sdeflow.parameterisation import Epsilon
    from sdeflow.priors import Matern
    from sdeflow.sde import VPSDE
    from train.elbo import elbo_bits

    sde = VPSDE(Matern(2, 2.0, 2 * math.pi))
    model = lambda t, x: 0.5 * x
    fields = np.asarray(jr.uniform(jr.key(1), (5, 1, 8, 8), minval=-1.0, maxval=1.0))
    options = dict(parameterisation=Epsilon(), time_sampling=StratifiedTimeSampling(), decoder=GaussianDecoder(),
                   variance_reduction=False)
    key = jr.key(2)
    result = elbo_bits(model, sde, fields, options, key, repeats=2, first=1)
    draws = [vdm_terms(model, sde, jnp.asarray(fields), jr.fold_in(k, 0), **options) for k in jr.split(key, 2)]
    per_example = sum(np.asarray(sum(d.values())) for d in draws) / 2
    scale = 1 / (model_dimensions(fields.shape[1:]) * math.log(2))
    assert result["dimensions"] == 7 * 7 and result["repeats"] == 2
    np.testing.assert_allclose(result["bits_per_dim"], per_example.mean() * scale, rtol=1e-5)
    np.testing.assert_allclose(result["bits_per_dim_first_1"], per_example[0] * scale, rtol=1e-5)
    for name in ("diffusion", "prior", "reconstruction"):
        term = sum(np.asarray(d[name]) for d in draws) / 2
        np.testing.assert_allclose(result["terms_bits_per_dim"][name], term.mean() * scale, rtol=1e-5, atol=1e-7)
    # the two draws differ, so the average is not either one
    assert abs(float(np.sum(np.asarray(sum(draws[0].values())) - np.asarray(sum(draws[1].values()))))) > 1e-3
