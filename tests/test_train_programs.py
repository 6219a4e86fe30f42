"""The programs end to end on data other than MNIST: a 3-channel 2-D run (CIFAR-10 files in the
official format) and a 1-channel 1-D run (generated fields) go through train.run, train.sample and
train.evaluate, each program taking the channels and the dimension from the data."""

import json
import logging
import pathlib

import hydra
import numpy as np
import pytest
from helpers import cifar_tarball
from PIL import Image
from test_train_sinks import read_events

from train import evaluate as evaluate_program
from train import sample as sample_program
from train.data import cifar10
from train.training import run


def compose(name, *overrides):
    with hydra.initialize_config_module("train.configs", version_base=None):
        return hydra.compose(name, overrides=list(overrides))


TINY = ["train.batch_size=8", "train.levels=[{grid:16,steps:5}]", "train.log_every=1",
        "train.sample_grids=[16]", "train.num_samples=4", "sampler.steps=4", "optim.warmup_steps=1",
        "train.evaluate=true", "train.evaluation.grid=16", "train.evaluation.num_samples=8",
        "train.evaluation.batch_size=8", "train.evaluation.sampler.steps=4", "train.evaluation.likelihood.num_digits=1",
        "train.evaluation.likelihood.rtol=1e-2", "train.evaluation.likelihood.atol=1e-2",
        "train.evaluation.metrics_block_size=16", "train.evaluation.sliced_projections=8",
        "train.evaluation.elbo.repeats=1"]


def _programs(run_dir: pathlib.Path, overrides: list[str], channels: int, dim: int, caplog):
    """Train, then sample on two grids, then evaluate; check the shapes the data imply."""
    caplog.set_level(logging.INFO, logger="train")
    state = run(compose("config", "+exp=smoke", f"train.run_dir={run_dir}", "train.sinks=[tensorboard]", *overrides, *TINY),
                progress_bar=False)
    assert int(state.step) == 5
    # The end-of-run evaluation compared samples with the held-out data; no MNIST classifier here.
    result = json.loads((run_dir / "evaluation.json").read_text())
    assert np.isfinite(result["riesz_mmd"]) and np.isfinite(result["riesz_mmd_real"])
    assert np.isfinite(result["power_spectrum_error"]) and np.isfinite(result["likelihood"]["bits_per_dim"])
    assert "frechet_distance" not in result and "no classifier" in result["skipped"]["classifier_metrics"]
    assert np.isfinite(result["elbo"]["16"]["bits_per_dim"])  # the ELBO of the dsm-trained network
    assert Image.open(run_dir / "samples" / "step0000005_grid16.png").size[0] > 16
    # the evaluation drew on the PNG's grid with its sampler: the PNG shows its first samples,
    # which the sample grids did not draw again, and reached the TensorBoard sink
    assert "(the first 4 of the evaluation's 8 samples, on the 16-grid)" in caplog.text
    assert "(4 on the 16-grid" not in caplog.text
    images = [v.tag for e in read_events(run_dir / "tensorboard") for v in e.summary.value if v.HasField("image")]
    assert "step0000005_grid16" in images
    written = sample_program.main(compose("sample", f"run_dir={run_dir}", "grids=[16,24]", "num_samples=3",
                                          "batch_size=3", "png_count=3", "sampler.steps=3"))
    for n in (16, 24):
        samples = np.load(next(p for p in written if p.name == f"grid{n}.npz"))["samples"]
        assert samples.shape == (3, channels) + (n,) * dim and np.all(np.isfinite(samples))
    # drawn on the 24-grid, compared on the 16-grid through restriction
    out = evaluate_program.main(compose("evaluate", f"run_dir={run_dir}", "grid=16", "sample_grid=24", "num_samples=4",
                                        "batch_size=4", "sampler.steps=3", "likelihood.num_digits=0", "elbo.num_examples=0",
                                        "metrics_block_size=16", "sliced_projections=8"))
    other = json.loads(out.read_text())
    assert out.name.endswith("_grid16_from24.json")
    assert other["grid"] == 16 and other["sample_grid"] == 24 and other["data"] == result["data"]
    assert np.isfinite(other["sliced_wasserstein"]) and np.isfinite(other["at_sample_grid"]["power_spectrum_error"])
    assert 0 <= other["at_sample_grid"]["power_beyond_grid"] <= 1 and 0 <= other["at_sample_grid"]["power_beyond_grid_real"] <= 1
    assert len(other["power_spectrum"]["wavenumbers"]) == len(result["power_spectrum"]["wavenumbers"])  # at 16
    return result


@pytest.mark.slow
def test_three_channel_images_end_to_end(tmp_path, monkeypatch, caplog):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 3, 32, 32), dtype=np.uint8)
    folder = tmp_path / "cifar"
    folder.mkdir()
    # the synthetic tarball stands for the official one: its checksum replaces the published one
    monkeypatch.setitem(cifar10.ARCHIVE_MD5, cifar10.ARCHIVE, cifar_tarball(folder, images, [i % 10 for i in range(48)], 8))
    result = _programs(tmp_path / "run", ["data=cifar10", f"data.root={folder}", "data.download=false",
                                          "data.train_range=[0,32]", "data.holdout_range=[32,40]"], 3, 2, caplog)
    # the 8 held-out images in two halves: the samples against one, the baseline all 4 of the other
    assert result["data"] == "cifar10" and result["num_reference"] == 4 and result["num_baseline"] == 4
    # 8-bit images compared on the 16-grid are not their exact pixels
    assert result["likelihood"]["bits_per_dim_8bit_dequantised"] is None


@pytest.mark.slow
def test_one_dimensional_fields_end_to_end(tmp_path, caplog):
    result = _programs(tmp_path / "run", ["data=generated", f"data.cache_dir={tmp_path / 'cache'}", "data.count=48",
                                          "data.native_grid=[32]", "data.train_range=[0,40]",
                                          "data.holdout_range=[40,48]", "prior.s=1.0"], 1, 1, caplog)
    assert result["data"] == "generated" and result["likelihood"]["grid"] == [16]
