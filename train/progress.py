"""What a user sees of a run: a progress bar, a JSON-lines metrics log, a loss curve and sample grids.

(Named `progress` rather than `logging` so as not to shadow the standard library's module.)
"""

import json
import logging
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tqdm  # noqa: E402
from PIL import Image  # noqa: E402


def configure_logging(basic: bool = True) -> None:
    """INFO logging for a program's own messages; absl and jax only from WARNING up (orbax reports every
    file it reads or writes at INFO, jax its backends). `basic=False` leaves the handlers to hydra."""
    if basic:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("absl", "jax"):
        logging.getLogger(name).setLevel(logging.WARNING)


class MetricsLog:
    """Appends one JSON object per line to `path` (`metrics.jsonl` in the run folder).

    A resumed run appends to the same file; `read` drops the records of steps that were logged after
    the checkpoint it resumed from (and everything before a new start, when a run was killed before
    its first checkpoint), so the log describes the one trajectory actually taken. A record cut
    short (a kill or a full disk during a write) is removed when the file is opened for writing,
    so that the next record does not join it; `read` skips, with a warning, any line that is not
    a record.

    **Arguments:**

    - `path`: the file.
    - `writes`: whether `write` appends (false in all but one of several processes).
    - `sinks`: where the numbers of each record also go (`train.sinks.AbstractSink`s).
    """

    def __init__(self, path: str | pathlib.Path, writes: bool = True, sinks: Sequence[Any] = ()):
        self.path = pathlib.Path(path)
        self.writes = writes
        self.sinks = list(sinks)
        if writes:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._drop_partial_record()

    def _drop_partial_record(self) -> None:
        """Truncate the file after its last complete line (a record cut short by a crash)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            end = data.rfind(b"\n") + 1
            logging.getLogger("train.progress").warning(
                f"{self.path}: dropped a record cut short ({len(data) - end} bytes after the last complete line)")
            with self.path.open("r+b") as f:
                f.truncate(end)

    def write(self, **record: Any) -> None:
        """Append a record (numbers are converted to Python floats/ints)."""
        if not self.writes:
            return
        clean = {k: _plain(v) for k, v in record.items()}
        with self.path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        if self.sinks and "step" in clean:
            from .sinks import numbers

            values = numbers(clean)
            for sink in self.sinks if values else ():
                sink.scalars(int(clean["step"]), values)

    def images(self, paths: Sequence[pathlib.Path], step: int) -> None:
        """Hand the PNGs at `paths` (named by their file names) to the sinks."""
        for sink in self.sinks if self.writes else ():
            for path in paths:
                sink.image(pathlib.Path(path).stem, pathlib.Path(path), step)

    def close(self) -> None:
        """Close the sinks."""
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    def read(self) -> list[dict]:
        """The records, without those superseded by a resume (a later record of an earlier step)."""
        if not self.path.exists():
            return []
        records, bad = [], 0
        for line in self.path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                bad += 1
        if bad:
            logging.getLogger("train.progress").warning(f"{self.path}: skipped {bad} lines that are not records")
        kept: list[dict] = []
        for record in records:
            step = record.get("step")
            if record.get("event") == "start":  # a run killed before its first checkpoint began again
                kept = []
            elif step is not None and record.get("event") == "resume":
                kept = [r for r in kept if r.get("step") is None or r["step"] <= step]
            kept.append(record)
        return kept


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "__array__"):
        value = np.asarray(value)
        return value.item() if value.ndim == 0 else value.tolist()
    return value


class ProgressBar:
    """A tqdm bar over training steps showing the loss, steps per second and the time left.

    **Arguments:**

    - `total`: the total number of steps of the run.
    - `initial`: the step the run starts at (after a resume).
    - `disable`: hide the bar (e.g. in tests); the log is unaffected.
    """

    def __init__(self, total: int, initial: int = 0, disable: bool = False):
        self._bar = tqdm.tqdm(
            total=total, initial=initial, disable=disable, unit="step", dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
        )
        self._last = time.perf_counter()

    def update(self, steps: int, **postfix: Any) -> None:
        """Advance by `steps` and show `postfix` (e.g. `loss=0.12`, `grid=32`)."""
        self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()},
                              refresh=False)
        self._bar.update(steps)

    def write(self, message: str) -> None:
        """Print a line without breaking the bar."""
        tqdm.tqdm.write(message)

    def close(self) -> None:
        self._bar.close()


def plot_loss(records: list[dict], path: str | pathlib.Path, smoothing: int = 20) -> None:
    """Plot the training loss of the `records` of a `MetricsLog` against the step, into a PNG.

    **Arguments:**

    - `records`: dicts with `step` and `loss`; `event: level` records (with `grid`) mark where each
        level of the curriculum starts; others are ignored.
    - `path`: the PNG file.
    - `smoothing`: the window of a running mean drawn over the raw curve.
    """
    points = [(r["step"], r["loss"], r.get("grid")) for r in records
              if r.get("loss") is not None and "step" in r]  # (a window of skipped steps has no loss)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    if points:
        steps = np.array([p[0] for p in points])
        losses = np.array([p[1] for p in points])
        ax.plot(steps, losses, lw=0.6, alpha=0.4, color="C0", label="loss")
        if len(losses) >= smoothing > 1:
            kernel = np.ones(smoothing) / smoothing
            ax.plot(steps[smoothing - 1 :], np.convolve(losses, kernel, mode="valid"), color="C0",
                    label=f"running mean ({smoothing})")
        if np.all(losses > 0):
            ax.set_yscale("log")
        ax.legend()
    for record in records:  # the start of each curriculum level
        if record.get("event") == "level" and record.get("step", 0) > 0:
            ax.axvline(record["step"], color="0.5", ls="--", lw=0.8)
            ax.text(record["step"], 1.0, f" {record['grid']}²", va="top", fontsize=8,
                    transform=ax.get_xaxis_transform())
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_grid(samples: np.ndarray, path: str | pathlib.Path, nrow: int | None = None, padding: int = 2) -> None:
    """Save a batch of images as one PNG grid.

    **Arguments:**

    - `samples`: array `(B, c, n, n)` with values in $[-1, 1]$ (clipped), `c` = 1 (grey) or 3 (RGB).
    - `path`: the PNG file.
    - `nrow`: images per row (default: about $\\sqrt{B}$).
    - `padding`: pixels of white between images.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 4 or samples.shape[1] not in (1, 3):
        raise ValueError(f"`samples` must have shape (B, 1 or 3, n, m), got {samples.shape}.")
    count, channels, height, width = samples.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / nrow)
    canvas = np.ones((channels, rows * (height + padding) + padding, nrow * (width + padding) + padding),
                     np.float32)
    for i, image in enumerate(samples):
        r, c = divmod(i, nrow)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        canvas[:, top : top + height, left : left + width] = (np.clip(image, -1.0, 1.0) + 1.0) / 2.0
    pixels = np.rint(canvas * 255).astype(np.uint8)
    image = Image.fromarray(pixels[0] if channels == 1 else np.moveaxis(pixels, 0, -1))
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def save_curves(samples: np.ndarray, path: str | pathlib.Path, count: int = 16) -> None:
    """Save 1-D samples as a grid of line plots (one panel a sample, one line a channel).

    **Arguments:**

    - `samples`: array `(B, c, n)`: point values at $x_j = j/n$.
    - `path`: the PNG file.
    - `count`: at most this many samples are drawn.
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 3:
        raise ValueError(f"`samples` must have shape (B, c, n), got {samples.shape}.")
    samples = samples[:count]
    ncol = max(1, math.ceil(math.sqrt(len(samples))))
    nrow = math.ceil(len(samples) / ncol)
    # each panel its own value axis: one sample's range does not flatten the others
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.2 * ncol, 1.6 * nrow), dpi=100, squeeze=False, sharex=True)
    x = np.arange(samples.shape[-1]) / samples.shape[-1]
    for ax, sample in zip(axes.flat, samples):
        for channel in sample:
            ax.plot(x, channel, lw=0.8)
    for ax in axes.flat[len(samples):]:
        ax.axis("off")
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def save_samples(samples: np.ndarray, path: str | pathlib.Path, nrow: int | None = None) -> None:
    """Save samples as a PNG in the form their dimension calls for: line plots of 1-D fields
    (`save_curves`), an image grid of 2-D ones (`save_grid`; other than 1 or 3 channels, the first
    channel in grey). Fields of three or more dimensions are shown by their slice at $x_3 = \\dots = 0$.

    **Arguments:**

    - `samples`: array `(B, c, n_1, ..., n_d)`.
    - `path`: the PNG file.
    - `nrow`: images per row of a grid (default: about $\\sqrt{B}$).
    """
    samples = np.asarray(samples)
    if samples.ndim == 3:
        save_curves(samples, path)
        return
    if samples.ndim < 3:
        raise ValueError(f"`samples` must have shape (B, c, n_1, ..., n_d), got {samples.shape}.")
    samples = samples[(...,) + (0,) * (samples.ndim - 4)]
    if samples.shape[1] not in (1, 3):
        samples = samples[:, :1]
    save_grid(samples, path, nrow)
