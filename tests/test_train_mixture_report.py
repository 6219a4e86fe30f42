"""The gaussian_mixture end-of-run report on a tiny run of the gmm_fields experiment, trained with a
learned spectral-multiplier prior: the report's files, the learned prior in the checkpoint, and
the programs that restore the run sampling with it."""

import json

import hydra
import jax.numpy as jnp
import numpy as np

from train import build
from train.data import GaussianMixtureFields, gaussian_mixture_fields
from train.restore import load_run
from train.training import run


def compose(*overrides):
    with hydra.initialize_config_module("train.configs", version_base=None):
        return hydra.compose("config", overrides=list(overrides))


def test_tiny_gmm_run_with_a_learned_prior(tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose(
        "+exp=gmm_fields", f"train.run_dir={run_dir}", f"data.cache_dir={tmp_path / 'cache'}", "data.count=80",
        "data.train_range=[0,64]", "data.holdout_range=[64,80]", "data.native_grid=[16,16]",
        "model.width=8", "model.modes=4", "model.depth=1", "model.projection=16", "model.time_features=8",
        "model.time_dim=16", "model.groups=4", "train.batch_size=8", "train.levels=[{grid:16,steps:4}]",
        "train.log_every=2", "train.ckpt_every=4", "train.sample_grids=[]",
        "sampler.steps=3", "optim.warmup_steps=1", "train.report.grids=[16,24]", "train.report.times=3",
        "train.report.score_samples=4", "train.report.num_samples=4", "train.report.batch_size=4",
        "prior=fno", "prior.radius=3", "prior.fit_grid=16", "prior.fit_count=64", "prior.learn=true",
        "+optim_parts={prior:{lr:0.05,warmup_steps:1,ema_decay:0.0}}", "sde.t0=0.0",
    )
    state = run(cfg, progress_bar=False)
    # The prior was a part: fitted at start-up, then moved by the loss's gradient.
    start = build.build_prior(cfg)
    assert set(state.parts) == {"network", "prior"}
    assert np.max(np.abs(np.asarray(state.parts["prior"].log_weights) - np.asarray(start.log_weights))) > 1e-3
    # Restored, the run samples with the learned prior (the EMA one, here the last weights).
    _, _, sde, step = load_run(run_dir)
    assert step == 4
    np.testing.assert_array_equal(np.asarray(sde.prior.log_weights), np.asarray(state.ema["prior"].log_weights))
    report = json.loads((run_dir / "mixture_report.json").read_text())
    assert report["weights"] == [0.3, 0.7] and len(report["times"]) == 3
    # Log-spaced to t1 from t0, or from 1e-3 t1 when t0 = 0 (as here).
    assert report["times"][0] == 1e-3 * cfg.sde.t1 and abs(report["times"][-1] - cfg.sde.t1) < 1e-9
    for n in ("16", "24"):
        grid = report["grids"][n]
        assert len(grid["relative_score_error"]) == 3 and all(np.isfinite(grid["relative_score_error"]))
        assert grid["num_samples"] == 4 and abs(sum(grid["sample_fractions"]) - 1) < 1e-9
    assert (run_dir / "mixture_score_error.png").stat().st_size > 1000


def test_generated_mixture_has_the_law_of_its_parameters():
    """The generator's fields: the weights by the nearer mean, the means, the covariance's spectrum
    (zero beyond the band), and the same fields again for the same seed."""
    law = GaussianMixtureFields(weights=(0.3, 0.7), variance=0.05, band=8)
    fields = gaussian_mixture_fields(800, (12, 12), 1, 3, weights=[0.3, 0.7], variance=0.05, band=8)
    assert np.array_equal(fields[:5], gaussian_mixture_fields(5, (12, 12), 1, 3, weights=[0.3, 0.7], variance=0.05, band=8))
    labels = law.nearer_mean(fields)
    assert abs(np.mean(labels == 0) - 0.3) < 4 * np.sqrt(0.21 / 800)
    means = law.means((12, 12))
    residual = fields - means[labels]
    assert np.max(np.abs(residual.mean(axis=0))) < 4 * np.sqrt(0.05 / 800) * 3
    power = np.mean(np.abs(np.fft.fft2(residual[:, 0], norm="forward")) ** 2, axis=0)
    k = np.fft.fftfreq(12, 1 / 12)
    outside = (2 * np.abs(k)[:, None] >= 8) | (2 * np.abs(k)[None, :] >= 8)
    assert np.max(power[outside]) < 1e-12
    expected = np.asarray(law.covariance().sqrt_spectrum((jnp.asarray(k[:, None]), jnp.asarray(k[None, :])))) ** 2
    inside = ~outside
    assert np.max(np.abs(power[inside] / expected[inside] - 1)) < 6 / np.sqrt(800)


def test_the_reports_score_error_is_relative_to_the_exact_score():
    """`score_errors` of the oracle's own noise is zero, of a zero network one, and of the negated
    score two, at every time: the report's figure compares the network with the exact score."""
    import jax.random as jr

    import sdeflow
    from sdeflow.parameterisation import Epsilon
    from train.mixture_report import score_errors

    law = GaussianMixtureFields(weights=(0.3, 0.7), variance=0.05, band=8)
    sde = sdeflow.sde.VPSDE(sdeflow.priors.Matern(dim=2, s=2.0, tau=8.0))
    grid, times = (12, 12), [0.01, 0.3, 1.0]
    oracle = law.oracle(sde, grid)

    def network(sign):
        return lambda t, x: -sign * sde.marginal(t)[1] * oracle.score(t, x)

    def errors(model):
        return np.asarray(score_errors(model, sde, Epsilon(), oracle, grid, times, 16, jr.key(0)))

    np.testing.assert_allclose(errors(network(1.0)), 0.0, atol=1e-4)
    np.testing.assert_allclose(errors(network(0.0)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(errors(network(-1.0)), 2.0, rtol=1e-4)


def test_whole_numbers_are_parameters_and_a_fractional_band_is_refused():
    """A config's whole numbers (`variance=1`, `s=3`) give the law of the same floats; `band` must
    be a whole number of points."""
    import pytest

    whole = GaussianMixtureFields(weights=(0.3, 0.7), variance=1, s=3, amplitude=2, band=8.0)
    assert whole == GaussianMixtureFields(weights=(0.3, 0.7), variance=1.0, s=3.0, amplitude=2.0, band=8)
    assert whole.covariance().base.s == 3.0 and isinstance(whole.band, int)
    for bad in ({"band": 15.5}, {"band": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GaussianMixtureFields(weights=(0.3, 0.7), **bad)

