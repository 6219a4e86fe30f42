"""Signed-distance functions of MNIST digits (`train.data.sdf`) and the helpers of their report
(`train.sdf_report`): exact distances on the torus, the gradient's unit norm, the checksum of the
cache, connected shapes across the torus' edges, and the experiments' configs."""

import numpy as np
import pytest

from train.config import ConfigError
from train.data import GeneratedSource, digit_sdf, load_mnist, periodic_signed_distance
from train.data.sdf import periodic_bilinear
from train.sdf_report import check_sdf_report, digit_images, eikonal_residual, inside_components, shape_metrics


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
