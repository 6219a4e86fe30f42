"""Signed-distance functions of MNIST digits (`train.data.sdf`) and the helpers of their report
(`train.sdf_report`): exact distances on the torus, the gradient's unit norm, the checksum of the
cache, connected shapes across the torus' edges, and the experiments' configs."""

import json

import hydra
import numpy as np
import pytest

from train.config import ConfigError
from train.data import GeneratedSource, digit_sdf, load_mnist, periodic_signed_distance
from train.data.sdf import periodic_bilinear
from train.sdf_report import check_sdf_report, digit_images, eikonal_residual, inside_components, shape_metrics
from train.training import run


def compose(*overrides):
    with hydra.initialize_config_module("train.configs", version_base=None):
        return hydra.compose("config", overrides=["+exp=mnist_sdf", *overrides])


def torus_distance(grid: int, centre) -> np.ndarray:
    """$|x - c|$ on the torus at the points $j / n$ of the grid."""
    x = np.arange(grid) / grid
    d = [np.minimum(np.abs(x - c), 1 - np.abs(x - c)) for c in centre]
    return np.sqrt(d[0][:, None] ** 2 + d[1][None, :] ** 2)


def test_signed_distance_of_a_disc_across_the_edge_is_exact():
    """A disc whose centre lies near a corner, so it wraps over both edges: the SDF is |x - c| - r on
    the torus to within a fine cell, negative inside, and its gradient has norm 1 away from the
    centre and from the medial lines half a period from it."""
    n, centre, radius = 128, (0.95, 0.03), 0.2
    distance = torus_distance(n, centre)
    phi = periodic_signed_distance(distance < radius)
    exact = distance - radius
    assert np.max(np.abs(phi - exact)) <= 1.0 / n
    assert np.all(phi[distance < radius] < 0) and np.all(phi[distance >= radius] > 0)
    # x = (0.05, 0.95) is inside: the centre is 0.10 and 0.08 away across both edges (1.2 in the square)
    assert phi[6, 122] < 0 and abs(phi[6, 122] - exact[6, 122]) <= 1.0 / n
    gradient = [(np.roll(phi, -1, a) - np.roll(phi, 1, a)) * n / 2 for a in (0, 1)]
    norm = np.hypot(*gradient)
    band = np.abs(distance - radius) < 0.12
    # central differences across the boundary see its discretisation (up to 0.2 at 1% of the points)
    assert np.mean(np.abs(norm[band] - 1)) < 0.03 and np.percentile(np.abs(norm[band] - 1), 90) < 0.06
    assert np.max(np.abs(norm[band] - 1)) < 0.25
    with pytest.raises(ValueError, match="both inside and outside"):
        periodic_signed_distance(np.zeros((8, 8), bool))


def test_digit_sdf_puts_pixels_at_their_points_in_units_of_the_square():
    """A disc drawn as a 28 x 28 image (centre pixel 14, radius 6 pixels) becomes the SDF of the
    disc of centre 16/32 and radius 6/32 on every grid, and the grids hold the same point values."""
    j = np.arange(28)
    image = (255 * (np.hypot(j[:, None] - 14, j[None, :] - 14) <= 6)).astype(np.uint8)[None]
    fine = digit_sdf(image, 128, upsample=4, scale=1.0)
    exact = torus_distance(128, (0.5, 0.5)) - 6 / 32
    assert np.max(np.abs(fine[0, 0] - exact)) < 1 / 32
    coarse = digit_sdf(image, 32, upsample=4, scale=4.0)
    np.testing.assert_allclose(coarse, 4 * fine[:, :, ::4, ::4], rtol=1e-6)
    with pytest.raises(ValueError, match="divide the fine grid"):
        digit_sdf(image, 48)
    for upsample in (0, -2):
        with pytest.raises(ValueError, match=r"`upsample` must be a positive int"):
            digit_sdf(image, 32, upsample=upsample)


def test_generated_sdf_cache_refuses_a_corrupt_file(tmp_path):
    """Real MNIST digits: the cached SDFs are negative exactly on the thresholded digit's points; a
    cache file changed behind its checksum is not read but computed again."""
    source = GeneratedSource(name="sdf", generator="mnist_sdf", params={"start": 5}, count=3,
                             native_grid=(32, 32), train_range=(0, 2), holdout_range=(2, 3), cache_dir=tmp_path)
    fields = source.fields()
    assert fields.shape == (3, 1, 32, 32) and fields.dtype == np.float32
    images = load_mnist("t10k", [5, 8]).images.astype(np.float64) / 255.0
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # the digits on the 32-pixel torus
    inside = np.stack([periodic_bilinear(image, 4) > 0.5 for image in padded])[:, ::4, ::4]
    assert inside.sum() > 30
    np.testing.assert_array_equal(fields[:, 0] < 0, inside)
    path = source.cache_path()
    np.save(path, np.zeros_like(fields))  # same shape and dtype, not the checksummed bytes
    again = source.fields()
    np.testing.assert_array_equal(again, fields)
    np.testing.assert_array_equal(np.load(path), fields)


def test_held_out_sdfs_on_a_finer_grid_are_point_values_not_a_resampling(tmp_path):
    """A part of the SDF data on the 64-grid is the digits' SDFs computed there (the evaluation's
    reference on that grid), not the trigonometric interpolant of the 32-grid fields, which rings
    near the kinks; a generator without point values is resampled as before."""
    source = GeneratedSource(name="sdf", generator="mnist_sdf", params={"start": 5}, count=6,
                             native_grid=(32, 32), train_range=(0, 4), holdout_range=(4, 6), cache_dir=tmp_path)
    fine = source.fields_on("holdout", 64)
    np.testing.assert_array_equal(fine, digit_sdf(load_mnist("t10k", [9, 11]).images, 64, 4, 4.0))
    resampled = source.converter(64)(source.load("holdout").values)
    assert np.sqrt(np.mean((resampled - fine) ** 2)) > 1e-3 * np.sqrt(np.mean(fine ** 2))
    np.testing.assert_array_equal(source.fields_on("holdout", 32), source.load("holdout").values)
    # a grid the distance transform's 128-grid does not hold a subgrid of: resampled, as other data
    np.testing.assert_array_equal(source.fields_on("holdout", 48, np.array([1])),
                                  source.converter(48)(source.load("holdout").values[1:]))
    fields = GeneratedSource(name="g", count=4, native_grid=(16, 16), train_range=(0, 2), holdout_range=(2, 4),
                             cache_dir=tmp_path)
    np.testing.assert_array_equal(fields.fields_on("holdout", 32),
                                  fields.converter(32)(fields.load("holdout").values))


def disc_field(n, centre, radius, scale=4.0):
    return (scale * (torus_distance(n, centre) - radius))[None, None].astype(np.float32)


def test_report_helpers_on_known_fields():
    """Connected shapes are counted on the torus (a disc over the corner is one shape), the eikonal
    residual is small for an SDF and 1 for twice an SDF, and digit images are ink inside."""
    n = 64
    corner = disc_field(n, (0.98, 0.99), 0.1)
    two = np.minimum(disc_field(n, (0.25, 0.25), 0.1), disc_field(n, (0.7, 0.6), 0.1))
    diagonal = np.full((1, 1, n, n), 1.0, np.float32)
    diagonal[0, 0, [0, n - 1], [0, n - 1]] = -1.0  # corner points: neighbours across both edges
    empty = np.ones((1, 1, n, n), np.float32)
    fields = np.concatenate([corner, two, diagonal, empty])
    assert inside_components(fields).tolist() == [1, 2, 1, 0]
    metrics = shape_metrics(fields[:2], 4.0)
    assert metrics["one_shape"] == 0.5 and metrics["empty"] == 0.0 and metrics["mean_components"] == 1.5
    assert eikonal_residual(corner, 4.0)[0] < 0.05
    assert abs(eikonal_residual(corner, 2.0)[0] - 1.0) < 0.05
    images = digit_images(corner, 4.0)
    inside = corner < 0
    assert np.all(images[inside] > 0) and np.all(images[~inside] <= 0) and images.max() <= 1


def test_report_refuses_grids_that_do_not_divide_the_fine_grid():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"data": {"name": "generated", "generator": "mnist_sdf", "params": {"upsample": 4},
                                     "holdout_range": [8, 10]},
                            "train": {"report": {"grids": [32, 48]}}})
    check_sdf_report(OmegaConf.merge(cfg, {"train": {"report": {"grids": [32, 64, 128]}}}))
    with pytest.raises(ConfigError, match="48"):
        check_sdf_report(cfg)
    with pytest.raises(ConfigError, match="mnist_sdf"):
        check_sdf_report(OmegaConf.merge(cfg, {"data": {"generator": "gaussian_fields"}}))


def test_tiny_mnist_sdf_run_reports_on_the_held_out_digits(tmp_path):
    """A tiny run of the mnist_sdf experiment and its report: the held-out digits' shape metrics and
    the classifier's real-vs-real numbers are those recomputed here from the MNIST files (the SDFs on
    each grid by `digit_sdf`, the report's seeded split of the held-out digits, the run's classifier
    from its folder); the counts are the config's."""
    from sdeflow import metrics
    from train import mnist_classifier as clf

    run_dir, classifier_dir = tmp_path / "run", tmp_path / "classifier"
    cfg = compose(
        f"train.run_dir={run_dir}", f"data.cache_dir={tmp_path / 'cache'}", "data.count=40",
        "data.train_range=[0,24]", "data.holdout_range=[24,40]", "data.native_grid=[16,16]", "data.params.start=100",
        "data.params.upsample=1", "model.width=4", "model.levels=[1.0,0.5,1.0]", "model.multipliers=[1,2,1]",
        "model.modes=4", "model.projection=8", "model.time_features=8", "model.time_dim=8", "model.groups=2",
        "train.batch_size=8", "train.levels=[{grid:16,steps:3}]", "train.log_every=1", "train.ckpt_every=3",
        "train.sample_grids=[]", "optim.warmup_steps=1", "sampler.steps=2", "train.report.grids=[16,32]",
        "train.report.num_samples=3", "train.report.batch_size=3", "train.evaluation.classifier.steps=5",
        "train.evaluation.classifier.channels=[4,4]", "train.evaluation.classifier.width=8",
        f"train.evaluation.classifier.dir={classifier_dir}",
    )
    run(cfg, progress_bar=False)
    report = json.loads((run_dir / "sdf_report.json").read_text())
    assert report["step"] == 3 and report["scale"] == 4.0 and set(report["grids"]) == {"16", "32"}
    # The held-out digits t10k[124:140]: half trains the classifier, the other half is the reference.
    mnist = load_mnist("t10k", [124, 140])
    split = clf.holdout_split(16, True)
    assert report["num_reference"] == len(split.reference) == 8
    classifier, info = clf.load(classifier_dir)
    assert info["steps"] == 5 and report["classifier"]["accuracy_on_mnist_images"] == info["reference_accuracy"]
    position = {index: i for i, index in enumerate(split.reference)}
    # the baseline: 3 digits of half a drawn at random (not its first 3), against half b
    assert list(split.baseline(3)) != list(split.reference_a[:3])
    half_a = [position[i] for i in split.baseline(3)]
    half_b = [position[i] for i in split.reference_b]
    for n in (16, 32):
        entry = report["grids"][str(n)]
        data = digit_sdf(mnist.images[split.reference], n, 1, 4.0)
        assert entry["data"] == pytest.approx(shape_metrics(data, 4.0), rel=1e-6, abs=1e-9)
        assert entry["data"]["empty"] == 0.0 and 0 < entry["data"]["one_shape"] <= 1  # every digit has ink
        images = digit_images(data, 4.0)
        fa, fb = clf.features(classifier, images[half_a]), clf.features(classifier, images[half_b])
        expected = float(metrics.frechet_distance(fa, fb, block_size=int(cfg.train.evaluation.metrics_block_size)))
        assert entry["frechet_distance_real"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
        real_classes = clf.probabilities(classifier, images[half_b]).argmax(1)
        assert entry["class_histogram_real"] == np.bincount(real_classes, minlength=10).tolist()
        labels = mnist.labels[split.reference]
        accuracy = np.mean(clf.probabilities(classifier, images).argmax(1) == labels)
        assert entry["classifier_accuracy_real"] == pytest.approx(accuracy)
        # The samples: as many as asked, on this grid, with metrics in their possible ranges.
        assert entry["num_samples"] == 3 and sum(entry["class_histogram"]) == 3
        assert all(np.isfinite(entry["sample_value_range"])) and entry["frechet_distance"] >= 0
        assert 0 <= entry["samples"]["one_shape"] + entry["samples"]["empty"] <= 1
        assert 0 <= entry["classifier_confident_fraction"] <= 1 and entry["samples"]["eikonal_residual"] >= 0
        assert (run_dir / f"sdf_level_sets_{n}.png").stat().st_size > 1000
