"""Metrics sinks beside `metrics.jsonl`: TensorBoard event files and Weights & Biases.

Both are optional (`pip install -e ".[tensorboard]"`, `".[wandb]"`) and chosen by `train.sinks`.
Each receives every record of the metrics log (numbers as scalars at the record's step) and the
PNGs a run writes (samples and the loss curve).
"""

import abc
import os
import pathlib
import socket
from typing import Any

from .config import ConfigError


class AbstractSink(abc.ABC):
    """Where the metrics of a run go besides its metrics log."""

    @abc.abstractmethod
    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Record the numbers `values` at `step`."""

    @abc.abstractmethod
    def image(self, name: str, path: pathlib.Path, step: int) -> None:
        """Record the PNG at `path` as image `name` at `step`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and close."""


def _missing(package: str, extra: str, sink: str) -> ConfigError:
    return ConfigError(f"train.sinks asks for {sink}, but {package} is not installed: "
                       f'pip install -e ".[{extra}]" (or pip install {package}).')


class TensorBoardSink(AbstractSink):
    """Event files in `<run_dir>/tensorboard/` (written by tensorboardX): `tensorboard --logdir runs`."""

    def __init__(self, run_dir: pathlib.Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise _missing("tensorboardX", "tensorboard", "tensorboard") from None
        self.directory = pathlib.Path(run_dir) / "tensorboard"
        self._writer = SummaryWriter(logdir=str(self.directory))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self._writer.add_scalar(f"train/{name}", value, global_step=step)

    def image(self, name: str, path: pathlib.Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as picture:
            pixels = np.asarray(picture.convert("RGB"))
        self._writer.add_image(name, pixels, global_step=step, dataformats="HWC")

    def close(self) -> None:
        self._writer.close()


def wandb_mode(setting: str, environ: dict | None = None, reachable=None) -> str:
    """The W&B mode of `train.wandb.mode`: `online` or `offline` as given; for `auto`, online when
    an API key is known (`WANDB_API_KEY`, or `wandb login`'s entry in ~/.netrc) and the W&B
    server answers, else offline (the run is then kept under `<run_dir>/wandb` for `wandb sync`)."""
    if setting != "auto":
        return setting
    env = os.environ if environ is None else environ
    netrc = pathlib.Path(env.get("NETRC", pathlib.Path.home() / ".netrc"))
    has_key = bool(env.get("WANDB_API_KEY")) or (netrc.is_file() and "api.wandb.ai" in netrc.read_text())
    if not has_key:
        return "offline"
    return "online" if (reachable or _reachable)("api.wandb.ai", 443) else "offline"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


class WandbSink(AbstractSink):
    """A Weights & Biases run named after the run folder, in project `train.wandb.project`."""

    def __init__(self, run_dir: pathlib.Path, project: str, mode: str, config: dict):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb", "wandb", "wandb") from None
        self._wandb = wandb
        run_dir = pathlib.Path(run_dir)
        self._run = wandb.init(project=project, name=run_dir.name, dir=str(run_dir), mode=wandb_mode(mode),
                               config=config, resume="allow", id=_run_id(run_dir))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._run.log(dict(values), step=step)

    def image(self, name: str, path: pathlib.Path, step: int) -> None:
        self._run.log({name: self._wandb.Image(str(path))}, step=step)

    def close(self) -> None:
        self._run.finish()


def _run_id(run_dir: pathlib.Path) -> str:
    """The W&B id of a run folder, kept in it: a resumed run logs to the same W&B run."""
    path = run_dir / "wandb_id.txt"
    if not path.is_file():
        import uuid

        path.write_text(uuid.uuid4().hex[:12])
    return path.read_text().strip()


SINKS = ("tensorboard", "wandb")
"""The names `train.sinks` takes."""


def make_sinks(names: list[str], run_dir: pathlib.Path, wandb_spec: Any, config: dict) -> list[AbstractSink]:
    """The sinks named in `train.sinks`.

    **Arguments:**

    - `names`: some of `SINKS`.
    - `run_dir`: the run folder.
    - `wandb_spec`: `train.wandb` (`project`, `mode`).
    - `config`: the run's resolved config, as a dict (W&B shows it).

    **Returns:**

    The sinks, in the order named.
    """
    out: list[AbstractSink] = []
    for name in names:
        if name == "tensorboard":
            out.append(TensorBoardSink(run_dir))
        elif name == "wandb":
            out.append(WandbSink(run_dir, wandb_spec.project, str(getattr(wandb_spec.mode, "value", wandb_spec.mode)), config))
        else:
            raise ConfigError(f"train.sinks must hold some of {list(SINKS)}, got {name!r}.")
    return out


def numbers(record: dict) -> dict[str, float]:
    """The numeric fields of a metrics record, but its step and time."""
    return {k: float(v) for k, v in record.items()
            if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)}
