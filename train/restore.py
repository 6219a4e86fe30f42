"""Restoring a training run: its config, network and SDE from a checkpoint of its run folder."""

import pathlib

import jax
from omegaconf import OmegaConf

from nets.resampling import check_oversample

from . import build
from .checkpoint import Checkpointer, CheckpointError
from .config import ConfigError, Weights, to_schema, typed
from .step import init_state, make_mesh


def select_weights(state, weights: str, part: str = "network"):
    """A part of a training state (default the network): from `state.ema` for `"ema"`, from
    `state.parts` for `"raw"` (with `state=None`, only the name is checked)."""
    if weights not in tuple(Weights):
        raise ConfigError(f"weights must be one of {' | '.join(Weights)}, got {weights!r}.")
    if state is None:
        return None
    return (state.ema if weights == "ema" else state.parts)[part]


def load_run(run_dir: str | pathlib.Path, step: int | None = None, weights: str = "ema",
             oversample: float | None = None, data_root: str | None = None):
    """The network of a training run's checkpoint.

    **Arguments:**

    - `run_dir`: the run folder (`config.yaml`, `checkpoints/`).
    - `step`: the checkpoint step, or `None` for the latest.
    - `weights`: `"ema"` (the exponential moving average of the weights) or `"raw"` (the weights
        the optimiser last wrote).
    - `oversample`: if given, the network evaluates its nonlinearities on a grid this many times
        finer than the one it acts on (`model.oversample` of an FNO or U-NO), whatever the run
        trained with: the weights do not depend on it. `None`: as trained.
    - `data_root`: the folder of the run's data files now (`data.root` of the returned config);
        `None`: the run's `data.root` (when it named none, the data's environment variable).

    **Returns:**

    `(cfg, model, sde, step)`: the run's resolved config, the network, the forward SDE (with the
    run's learned schedule, of the same `weights`, when it trained one) and the step restored.
    """
    select_weights(None, weights)  # a wrong name fails before the checkpoint is read
    cfg, state, step = load_state(run_dir, step, oversample=oversample, data_root=data_root)
    if cfg.get("autoencoder") is not None:
        raise ConfigError(f"run_dir={run_dir} models the latent maps of an autoencoder: its samples, inpaintings "
                          "and evaluation are written by its report at the end of training (train.report).")
    sde = build.with_parts(build.build_sde(cfg), state.ema if weights == "ema" else state.parts)  # learned schedule, prior
    return cfg, select_weights(state, weights), sde, step


def load_state(run_dir: str | pathlib.Path, step: int | None = None, field: str = "run_dir",
               oversample: float | None = None, data_root: str | None = None):
    """The whole training state of a run's checkpoint, on one device.

    **Arguments:**

    - `run_dir`: the run folder (`config.yaml`, `checkpoints/`).
    - `step`: the checkpoint step, or `None` for the latest.
    - `field`: the config field that named the folder (for the messages).
    - `oversample`: `model.oversample` to build the network with instead of the run's (see
        `load_run`); `None`: the run's.
    - `data_root`: the folder of the run's data files now (see `load_run`).

    **Returns:**

    `(cfg, state, step)`: the run's resolved config, its `TrainState` and the step restored.
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{field}={run_dir} holds no config.yaml: is it the folder of a training run?")
    cfg = typed(OmegaConf.load(run_dir / "config.yaml"))
    if data_root is not None:
        if "root" not in cfg.data:
            raise ConfigError(f"data_root={data_root}: the run's data ({cfg.data.name}) reads no files.")
        cfg.data.root = str(data_root)
    if oversample is not None:
        try:
            check_oversample(oversample)  # the networks' own rule
        except ValueError as error:
            raise ConfigError(str(error).replace("`oversample`", "oversample")) from None
        if "oversample" not in cfg.model:
            raise ConfigError(f"oversample={float(oversample):g}: the run's network ({cfg.model._target_}) has no "
                              "oversampled nonlinearities (model.oversample is a field of the FNO and the U-NO).")
        cfg.model.oversample = float(oversample)  # a static field: the checkpoint's arrays are the same
    model_key, train_key, _ = build.split_keys(cfg.train.seed)
    parts = build.build_parts(cfg, model_key)
    with Checkpointer(run_dir / "checkpoints") as checkpointer:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {checkpointer.directory}.")
        stage = to_schema(cfg).train.checkpoint_stage(step)
        template = init_state(parts, build.build_optimiser(cfg, stage), train_key,
                              make_mesh(jax.local_devices()[:1]), build.trainable(cfg, stage))
        state, extra = checkpointer.restore(template, step)
    return cfg, state, int(extra["step"])
