"""The training loop of `python -m train.run`.

Checks every field of a composed config (`train.config.validate`) before building anything, and
trains one score network through the multilevel curriculum of
`train.levels`. Everything goes into the run folder `train.run_dir` (hydra's output folder):

- `config.yaml`: the resolved config (`.hydra/` holds hydra's own record of the overrides);
- `devices.json`: the number of devices chosen (see `train.devices`);
- `metrics.jsonl`: one JSON record per `train.log_every` steps, and events (start, resume, level);
- `loss.png`: the loss curve, redrawn at every checkpoint;
- `checkpoints/<step>/`: model, EMA, optimiser state, step, RNG key and data-iterator state;
- `samples/step<step>_grid<n>.png`: sample grids of the EMA model (once the samplers exist);
- `run.log`: hydra's log of the messages.

Started again with the same run folder, a run restores its latest checkpoint and continues exactly
where it stopped: the same batches, the same random numbers, the same devices.
"""

import logging
import pathlib
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import build, devices as devices_lib
from .checkpoint import Checkpointer
from .config import validate
from .data import batches, load_mnist, make_dataset
from .evaluation import write_evaluation
from .memory import ResidentGuard
from .progress import MetricsLog, ProgressBar, plot_loss
from .sampling import write_samples
from .step import TrainState, init_state, make_mesh, make_train_step, shard_batch


logger = logging.getLogger("train.training")


def _dataset(cfg: DictConfig, images: np.ndarray, grid: int):
    d = cfg.data
    return make_dataset(
        images,
        grid=grid,
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        smoothing=d.smoothing,
        worker_count=d.worker_count,
        worker_buffer_size=d.worker_buffer_size,
        read_threads=d.read_threads,
        prefetch_buffer=d.prefetch_buffer,
    )


_RUN_CONTROL = ("stop_after", "progress_bar")  # may change between a run and its resumption


def _save_config(cfg: DictConfig, run_dir: pathlib.Path, resumed_at: int | None) -> None:
    text = OmegaConf.to_yaml(cfg, resolve=True)
    path = run_dir / "config.yaml"

    def essential(yaml_text: str) -> dict:
        content = OmegaConf.to_container(OmegaConf.create(yaml_text))
        for key in _RUN_CONTROL:
            content["train"].pop(key, None)
        return content

    if resumed_at is None or not path.exists():
        path.write_text(text)
    elif essential(path.read_text()) != essential(text):
        other = run_dir / f"config.resumed-{resumed_at}.yaml"
        other.write_text(text)
        logger.warning(f"the config differs from the one this run started with; saved as {other}")


def run(cfg: DictConfig, *, progress_bar: bool | None = None) -> TrainState:
    """Train (or resume training) as `cfg` says; return the final state.

    **Arguments:**

    - `cfg`: the composed config (validated here first).
    - `progress_bar`: override `train.progress_bar`.

    **Returns:**

    The `TrainState` at the last step taken.
    """
    run_cfg = validate(cfg)
    t = cfg.train
    run_dir = pathlib.Path(t.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(run_dir / "metrics.jsonl")

    # Build everything before compiling anything: a bad model or prior fails here.
    data = load_mnist(cfg.data.split, cfg.data.train_range, root=cfg.data.root,
                      download_missing=cfg.data.download)
    model_key, train_key, sample_key = build.split_keys(t.seed)
    model = build.build_model(cfg, model_key)
    sde = build.build_sde(cfg)
    loss_fn = build.build_loss(cfg, sde)
    o = cfg.optim
    steps_total = run_cfg.train.total_steps()
    optimiser = build.build_optimiser(cfg)
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=t.keep_checkpoints)
    resumed_at = checkpointer.latest_step()
    _save_config(cfg, run_dir, resumed_at)

    def time_step(devs: list[jax.Device]) -> float:
        mesh = make_mesh(devs)
        state = init_state(model, optimiser, train_key, mesh)
        step = make_train_step(loss_fn, optimiser, o.ema_decay, mesh)
        batch = next(batches(_dataset(cfg, data.images, t.levels[0].grid)))
        box = [state]

        def call():
            box[0], loss = step(box[0], shard_batch(batch, mesh))
            loss.block_until_ready()

        return devices_lib.time_calls(call)

    devs = devices_lib.choose(t.devices, t.batch_size, run_dir, time_step, log=logger.info)
    mesh = make_mesh(devs)
    state = init_state(model, optimiser, train_key, mesh)
    data_state = None
    start = 0
    if resumed_at is not None:
        state, extra = checkpointer.restore(state)
        start, data_state = int(extra["step"]), extra["data"]
        metrics.write(event="resume", step=start, time=time.time())
        logger.info(f"resumed from {checkpointer.directory / str(resumed_at)} at step {start}")
    else:
        metrics.write(event="start", step=0, time=time.time(), devices=len(devs),
                      parameters=sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))))
    step_fn = make_train_step(loss_fn, optimiser, o.ema_decay, mesh)
    stop = steps_total if t.stop_after is None else min(t.stop_after, steps_total)
    show = t.progress_bar if progress_bar is None else progress_bar
    bar = ProgressBar(steps_total, initial=start, disable=not show or start >= stop)

    def checkpoint(step: int, iterator) -> None:
        checkpointer.save(step, state, {"step": step, "data": iterator.get_state(),
                                        "level": run_cfg.train.level_at(max(step - 1, 0))})
        plot_loss(metrics.read(), run_dir / "loss.png")

    step = start
    level_end = 0
    iterator = None
    guard = ResidentGuard()  # bounds the kept heap's growth on several devices (train.memory)
    try:
        for index, level in enumerate(t.levels):
            level_start, level_end = level_end, level_end + level.steps
            if step >= level_end or step >= stop:
                continue
            iterator = batches(_dataset(cfg, data.images, level.grid), data_state)
            if step == level_start:  # (not when resuming in the middle of a level)
                metrics.write(event="level", step=step, level=index, grid=level.grid)
            logger.info(f"level {index}: grid {level.grid}, steps {max(step, level_start)}..{level_end}")
            losses, window_start = [], time.perf_counter()
            guard.reset()
            while step < min(level_end, stop):
                state, loss = step_fn(state, shard_batch(next(iterator), mesh))
                losses.append(loss)
                step += 1
                if step % t.log_every == 0 or step == min(level_end, stop):
                    mean = float(jnp.mean(jnp.stack(losses)))
                    elapsed = time.perf_counter() - window_start
                    rate = len(losses) / elapsed
                    metrics.write(step=step, loss=mean, grid=level.grid, steps_per_s=rate,
                                  lr=float(optimiser_lr(o, steps_total, step)), time=time.time())
                    bar.update(len(losses), loss=mean, grid=level.grid)
                    if not np.isfinite(mean):
                        raise FloatingPointError(f"the loss is {mean} at step {step}; lower optim.lr?")
                    guard.check()
                    losses, window_start = [], time.perf_counter()
                if step % t.ckpt_every == 0:
                    checkpoint(step, iterator)
                if t.sample_every and step % t.sample_every == 0 and step < steps_total:
                    write_samples(state.ema, sde, cfg, run_dir, sample_key, step)
            data_state = iterator.get_state()
        if step > start and step % t.ckpt_every != 0 and iterator is not None:
            checkpoint(step, iterator)
    finally:
        bar.close()
        checkpointer.close()
    if step >= steps_total:
        metrics.write(event="end", step=step, time=time.time())
        write_samples(state.ema, sde, cfg, run_dir, sample_key, step)
        if t.evaluate:
            write_evaluation(state, sde, cfg, run_dir, step)
    else:
        logger.info(f"stopped at step {step} (train.stop_after); run again with the same run_dir to resume")
    return state


def optimiser_lr(o: DictConfig, steps_total: int, step: int) -> float:
    """The learning rate of `make_optimiser`'s schedule at `step` (for the log)."""
    import optax

    schedule = optax.warmup_cosine_decay_schedule(0.0, o.lr, o.warmup_steps, steps_total, o.lr * o.final_lr_fraction)
    return float(schedule(step))
