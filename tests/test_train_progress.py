"""What a user sees: sample grids as PNG, the metrics log across a resume, the loss curve, the bar."""

import numpy as np
import pytest
from PIL import Image

from train.progress import MetricsLog, ProgressBar, plot_loss, save_grid


def test_save_grid_pixels(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.uniform(-1.5, 1.5, size=(5, 1, 6, 4)).astype(np.float32)
    path = tmp_path / "sub" / "grid.png"
    save_grid(samples, path, nrow=3, padding=1)
    image = np.asarray(Image.open(path))
    # 2 rows x 3 columns of 6 x 4 images with 1 pixel of white padding.
    assert image.shape == (2 * 7 + 1, 3 * 5 + 1) and image.dtype == np.uint8
    for i, sample in enumerate(samples):
        r, c = divmod(i, 3)
        tile = image[1 + 7 * r : 7 + 7 * r, 1 + 5 * c : 5 + 5 * c]
        expected = np.rint((np.clip(sample[0], -1, 1) + 1) / 2 * 255)
        np.testing.assert_array_equal(tile, expected)
    assert np.all(image[0] == 255) and np.all(image[8:, 11:] == 255)  # padding and the empty slot
    rgb = tmp_path / "rgb.png"
    save_grid(np.zeros((4, 3, 5, 5)), rgb)
    assert np.asarray(Image.open(rgb)).shape == (2 * 7 + 2, 2 * 7 + 2, 3)
    with pytest.raises(ValueError, match="samples"):
        save_grid(np.zeros((4, 2, 5, 5)), rgb)


def test_metrics_log_forgets_steps_undone_by_a_resume(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write(event="start", step=0)
    for step in (2, 4, 6):
        log.write(step=step, loss=np.float32(1.0 / step), grid=16)
    # The run died after step 6 but its last checkpoint was at step 4: steps 5, 6 are redone.
    log.write(event="resume", step=4)
    for step in (6, 8):
        log.write(step=step, loss=2.0 / step, grid=32)
    records = log.read()
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    assert losses == [(2, 0.5), (4, 0.25), (6, 2.0 / 6), (8, 0.25)]
    assert isinstance(records[1]["loss"], float)
    png = tmp_path / "loss.png"
    plot_loss(records, png, smoothing=2)
    assert Image.open(png).size == (600, 400)


def test_metrics_log_drops_a_record_cut_short_and_reads_past_bad_lines(tmp_path, caplog):
    """A kill or a full disk during a write leaves a partial last line: the resumed run's log drops
    it when it opens the file (else its next record joined it, and every later read failed), and
    `read` skips a line that is not a record instead of failing."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event": "start", "step": 0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "lo')
    log = MetricsLog(path)
    assert path.read_text().endswith('"loss": 0.5}\n') and "dropped a record cut short (15 bytes" in caplog.text
    log.write(event="resume", step=2)
    log.write(step=4, loss=0.25)
    assert [r["step"] for r in log.read() if "loss" in r] == [2, 4]
    with path.open("a") as f:
        f.write("not json\n[1, 2]\n")
    assert [r["step"] for r in MetricsLog(path, writes=False).read() if "loss" in r] == [2, 4]
    assert "skipped 2 lines that are not records" in caplog.text


def test_progress_bar_shows_loss_and_rate(capsys):
    bar = ProgressBar(10, initial=2)
    bar.update(3, loss=0.123456, grid=32)
    bar.close()
    err = capsys.readouterr().err
    assert "5/10" in err and "loss=0.1235" in err and "grid=32" in err
    assert "step/s" in err or "s/step" in err


def test_save_samples_draws_each_dimension(tmp_path):
    """2-D samples become an image grid (RGB for 3 channels), 1-D ones line plots, 3-D ones their
    slice at x_3 = 0; other shapes are refused."""
    from train.progress import save_samples

    rng = np.random.default_rng(0)
    save_samples(rng.uniform(-1, 1, (4, 3, 8, 8)), tmp_path / "rgb.png")
    assert Image.open(tmp_path / "rgb.png").mode == "RGB" and Image.open(tmp_path / "rgb.png").size == (22, 22)
    volume = rng.uniform(-1, 1, (4, 1, 8, 8, 8))
    save_samples(volume, tmp_path / "volume.png")
    save_grid(volume[..., 0], tmp_path / "slice.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "volume.png")), np.asarray(Image.open(tmp_path / "slice.png")))
    save_samples(rng.normal(size=(5, 2, 32)), tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size[0] > 100  # a figure of plots, not a 32-pixel strip
    with pytest.raises(ValueError, match="shape"):
        save_samples(np.zeros((4, 8)), tmp_path / "bad.png")


def test_loss_plot_leaves_out_windows_without_a_loss(tmp_path):
    records = [{"step": 2, "loss": 1.0}, {"step": 4, "loss": None, "skipped": 2}, {"step": 6, "loss": 0.5}]
    plot_loss(records, tmp_path / "loss.png")
    assert Image.open(tmp_path / "loss.png").size == (600, 400)
