"""The training loop of `python -m train.run`.

Checks every field of a composed config (`train.config.validate`) before building anything, and
trains one score network through the multilevel curriculum of
`train.levels`. Everything goes into the run folder `train.run_dir` (hydra's output folder):

- `config.yaml`: the resolved config (`.hydra/` holds hydra's own record of the overrides);
- `devices.json`: the number of devices chosen (see `train.devices`);
- `metrics.jsonl`: one JSON record per `train.log_every` steps, and events (start, resume, level);
  with `train.heldout.every`, `heldout` records: the loss of fixed held-out data on one grid and
  the training time that reached it (`train.heldout`), and each level's `first_step` time (its
  compilation included);
- `loss.png`: the loss curve, redrawn at every checkpoint;
- `checkpoints/<step>/`: model, EMA, optimiser state, step, RNG key and data-iterator state;
- `samples/step<step>_grid<n>.png`: sample grids of the EMA model (once the samplers exist;
  at the end, the grid the evaluation draws on with the same sampler shows its first samples);
- `run.log`: hydra's log of the messages.

Started again with the same run folder, a run restores its latest checkpoint and continues exactly
where it stopped: the same batches, the same random numbers, the same devices.
"""

import logging
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import build
from . import devices as devices_lib
from . import distributed
from .checkpoint import Checkpointer
from .config import ConfigError, validate
from .config.programs import stage_loss
from .data import batches, make_dataset
from .data.files import write_text_atomically
from .elbo import plot_schedule
from .errors import check_same_run, check_writable, NonFiniteError
from .evaluation import shared_sample_grid, write_evaluation
from .heldout import make_heldout_loss, TrainingClock
from .memory import ResidentGuard
from .progress import MetricsLog, ProgressBar, plot_loss
from .sinks import make_sinks
from .sampling import save_samples_png, write_samples
from .signals import StopRequest
from .step import TrainState, applied_updates, init_state, make_mesh, make_train_step, shard_batch, weights_finite

logger = logging.getLogger("train.training")


def _dataset(cfg: DictConfig, source, values: np.ndarray, grid: int, shards: tuple[int, int] | None = None):
    """The run's grain pipeline on `grid`: this process's share of each batch (`shards`: index
    and count, default this process of all)."""
    d = cfg.data
    index, count = (jax.process_index(), jax.process_count()) if shards is None else shards
    return make_dataset(
        values,
        source.converter(grid),
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        worker_count=d.worker_count,
        worker_buffer_size=d.worker_buffer_size,
        read_threads=d.read_threads,
        prefetch_buffer=d.prefetch_buffer,
        shard_index=index,
        shard_count=count,
    )


class Stage:
    """What one stage of a run compiles: its trainable parts, loss, optimiser and step."""

    def __init__(self, cfg: DictConfig, run_cfg, index: int, sde, mesh):
        spec = run_cfg.train.stage_list()[index]
        self.index, self.name = index, spec.name
        self.trainable = build.trainable(cfg, index)
        loss = None if spec.loss is None else stage_loss(spec, run_cfg.loss)
        self.loss_fn = build.build_loss(cfg, sde, loss)
        self.optimiser = build.build_optimiser(cfg, index)
        decay = {name: build.part_optim(cfg, name).ema_decay for name in build.part_names(cfg)}
        warmup = {name: bool(getattr(build.part_optim(cfg, name), "ema_warmup", False)) for name in build.part_names(cfg)}
        self.step = make_train_step(self.loss_fn, self.optimiser, decay, mesh, self.trainable, warmup)
        self.steps = sum(level.steps for level in spec.levels)

    def start(self, parts, key, mesh, ema=None) -> TrainState:
        """The state at this stage's start: a fresh optimiser state for its parts."""
        return init_state(parts, self.optimiser, key, mesh, self.trainable, ema)


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
        write_text_atomically(path, text)
    elif essential(path.read_text()) != essential(text):
        other = run_dir / f"config.resumed-{resumed_at}.yaml"
        write_text_atomically(other, text)
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
    check_writable(run_dir)
    if (run_dir / "config.yaml").is_file():  # a run to resume: the same experiment's, or refused
        check_same_run(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True),
                       OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), run_dir)
    main = distributed.is_main()  # with several processes, only process 0 writes files and logs
    if not main:
        logging.getLogger("train").setLevel(logging.WARNING)
    if t.batch_size % jax.process_count():
        raise ConfigError(f"train.batch_size {t.batch_size} must be a multiple of the {jax.process_count()} processes.")
    sinks = make_sinks([str(getattr(s, "value", s)) for s in t.sinks], run_dir, t.wandb,
                       OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)) if main else []
    metrics = MetricsLog(run_dir / "metrics.jsonl", writes=main, sinks=sinks)

    # Build everything before compiling anything: a bad model or prior fails here.
    source = build.build_source(cfg.data)
    data = source.load("train")
    if t.batch_size > len(data.values):
        raise ConfigError(f"train.batch_size = {t.batch_size} is more than the {len(data.values)} training "
                          f"examples of data={cfg.data.name}: lower it, or train on more examples.")
    model_key, train_key, sample_key = build.split_keys(t.seed)
    parts = build.build_parts(cfg, model_key)
    sde = build.build_sde(cfg)
    if (warning := prior_warning(sde.prior)) is not None:
        logger.warning(warning)
    phases = run_cfg.train.phases()
    steps_total = run_cfg.train.total_steps()
    heldout = make_heldout_loss(cfg, source, build.build_loss(cfg, sde)) if t.heldout.every else None
    checkpointer = Checkpointer(run_dir / "checkpoints", keep=t.keep_checkpoints)
    resumed_at = checkpointer.latest_step()
    if main:
        _save_config(cfg, run_dir, resumed_at)

    def time_step(devs: list[jax.Device]) -> float:
        mesh = make_mesh(devs)  # this process's devices only
        stage = Stage(cfg, run_cfg, 0, sde, mesh)
        batch = next(batches(_dataset(cfg, source, data.values, phases[0].grid)))
        box = [stage.start(parts, train_key, mesh)]
        step = stage.step

        def call():
            box[0], loss = step(box[0], shard_batch(batch, mesh))
            loss.block_until_ready()

        return devices_lib.time_calls(call)

    local = devices_lib.choose(t.devices, t.batch_size // jax.process_count(), run_dir, time_step, log=logger.info)
    devs = distributed.local_devices_first(distributed.agree(len(local)))  # every process, process 0's count
    mesh = make_mesh(devs)
    data_state = None
    start = 0
    if resumed_at is not None:
        def template(step: int) -> TrainState:
            return Stage(cfg, run_cfg, run_cfg.train.checkpoint_stage(step), sde, mesh).start(parts, train_key, mesh)

        state, extra, resumed_at = checkpointer.restore_latest_good(template, log=logger.warning)
        stage = Stage(cfg, run_cfg, run_cfg.train.checkpoint_stage(resumed_at), sde, mesh)
        start, data_state = int(extra["step"]), extra["data"]
        clock = TrainingClock(extra.get("train_time", 0.0))
        metrics.write(event="resume", step=start, time=time.time())
        logger.info(f"resumed from {checkpointer.directory / str(resumed_at)} at step {start}")
    else:
        stage = Stage(cfg, run_cfg, 0, sde, mesh)
        state = stage.start(parts, train_key, mesh)
        clock = TrainingClock()
        if t.init_from.run_dir is not None:
            state = start_from(state, t.init_from, mesh)
        metrics.write(event="start", step=0, time=time.time(), devices=len(devs), init_from=t.init_from.run_dir,
                      parameters={name: sum(x.size for x in jax.tree.leaves(eqx.filter(part, eqx.is_inexact_array)))
                                  for name, part in parts.items()})
    stop = steps_total if t.stop_after is None else min(t.stop_after, steps_total)
    show = t.progress_bar if progress_bar is None else progress_bar
    bar = ProgressBar(steps_total, initial=start, disable=not show or start >= stop or not main)

    def checkpoint(step: int, iterator) -> None:
        phase = run_cfg.train.phase_at(max(step - 1, 0))
        with clock.paused(state):
            checkpointer.save(step, state, {"step": step, "data": iterator.get_state(), "stage": phase.stage,
                                            "level": phase.level, "train_time": clock.seconds()})
            if main:
                plot_loss(metrics.read(), run_dir / "loss.png")
                metrics.images([run_dir / "loss.png"], step)

    def log_heldout(step: int) -> None:  # train.heldout: not counted as training time
        with clock.paused(state):
            weights = state.ema if t.heldout.weights == "ema" else state.parts
            loss = heldout(distributed.local_copy(weights))
            metrics.write(event="heldout", step=step, grid=t.heldout.grid, heldout_loss=loss,
                          train_time=clock.seconds(), time=time.time())

    def stop_if_nonfinite() -> None:  # (a host sync: at log steps, and before every checkpoint)
        skipped = int(state.skipped)
        if skipped and (t.nonfinite == "stop" or skipped > t.max_skipped):
            raise nonfinite_error(state, parts, checkpointer, t)
        if not bool(weights_finite(state)):
            raise NonFiniteError(
                f"the weights are not finite at step {int(state.step)}: an update made them so (a step whose "
                f"loss or gradient is not finite is never applied). {kept_checkpoint(checkpointer)} "
                "Lower optim.lr, or check the optimiser's settings.")

    step = start
    iterator = None
    guard = ResidentGuard()  # bounds the kept heap's growth on several devices (train.memory)
    try:
        if heldout is not None and resumed_at is None and start < stop:
            log_heldout(0)
        with StopRequest(logger.warning) as stop_request:  # SIGINT, SIGTERM: checkpoint, then stop
            stopping = False  # the processes' agreed answer after each step
            for phase in phases:
                if stopping:
                    break
                level_start, level_end = phase.start, phase.end
                if step >= level_end or step >= stop:
                    continue
                if phase.stage != stage.index:  # a new stage: its own optimiser, from the parts so far
                    stage = Stage(cfg, run_cfg, phase.stage, sde, mesh)
                    state = eqx.tree_at(lambda s: (s.key, s.step, s.skipped, s.first_bad),  # (counted per run)
                                        stage.start(state.parts, state.key, mesh, state.ema),
                                        (state.key, state.step, state.skipped, state.first_bad))
                    metrics.write(event="stage", step=step, stage=stage.index, name=stage.name)
                    trains = "every part" if stage.trainable is True else ", ".join(sorted(stage.trainable))
                    logger.info(f"stage {stage.index} ({stage.name}): trains {trains}")
                iterator = batches(_dataset(cfg, source, data.values, phase.grid), data_state)
                if step == level_start:  # (not when resuming in the middle of a level)
                    metrics.write(event="level", step=step, stage=phase.stage, level=phase.level, grid=phase.grid)
                logger.info(f"stage {phase.stage} level {phase.level}: grid {phase.grid}, "
                            f"steps {max(step, level_start)}..{level_end}")
                losses, window_start = [], clock.seconds()  # steps/s of training time: checkpoints, samples, held-out loss left out
                guard.reset()
                while step < min(level_end, stop):
                    began = clock.seconds()
                    state, loss = stage.step(state, shard_batch(next(iterator), mesh))
                    losses.append(loss)
                    step += 1
                    if heldout is not None and step == level_start + 1:  # this level's step compiles in its first call
                        loss.block_until_ready()
                        metrics.write(event="first_step", step=step, grid=phase.grid, train_time=began,
                                      seconds=clock.seconds() - began)
                    # whether to stop after this step, one answer for every process (a signal
                    # that arrives later in this step is taken at the next)
                    stopping = stop_request.agree(distributed.any_process(stop_request.requested))
                    if step % t.log_every == 0 or step == min(level_end, stop) or stopping:
                        window = np.asarray(jnp.stack(losses))
                        mean = float(np.mean(window[np.isfinite(window)])) if np.isfinite(window).any() else None
                        elapsed = clock.seconds() - window_start
                        rate = len(losses) / elapsed
                        skipped = int(state.skipped)
                        metrics.write(step=step, loss=mean, grid=phase.grid, steps_per_s=rate,
                                      lr=optimiser_lr(build.part_optim(cfg, "network"), stage.steps,
                                                      applied_updates(state.opt_state)),
                                      skipped=skipped, time=time.time())
                        bar.update(len(losses), loss=mean if mean is not None else float("nan"), grid=phase.grid)
                        stop_if_nonfinite()
                        guard.check()
                        losses, window_start = [], clock.seconds()
                    if heldout is not None and (step % t.heldout.every == 0 or step == steps_total):
                        log_heldout(step)
                    if step % t.ckpt_every == 0:
                        stop_if_nonfinite()  # never a checkpoint after an unchecked non-finite step
                        checkpoint(step, iterator)
                    if t.sample_every and step % t.sample_every == 0 and step < steps_total and main:
                        with clock.paused(state):
                            ema = distributed.local_copy(state.ema)
                            metrics.images(write_samples(ema["network"], build.with_parts(sde, ema), cfg,
                                                         run_dir, sample_key, step), step)
                    if stopping:
                        break
                data_state = iterator.get_state()
            if step > start and step % t.ckpt_every != 0 and iterator is not None:
                checkpoint(step, iterator)
    except BaseException:
        metrics.close()  # the sinks flush what they hold
        raise
    finally:
        bar.close()
        checkpointer.close()
    if step >= steps_total and not stop_request.requested:
        metrics.write(event="end", step=step, time=time.time())
        if main:
            _write_outputs(distributed.local_copy(state), sde, cfg, run_dir, step, sample_key, metrics)
    elif step >= steps_total:  # a signal in the last step or its checkpoint: the outputs (minutes) wait
        metrics.write(event="stop", step=step, reason=f"on {stop_request.signal}", time=time.time())
        logger.warning(f"trained to the end (step {step}), stopped on {stop_request.signal} before the end-of-run "
                       f"samples and evaluation; run the same command again (train.run_dir={run_dir}) to write them")
    else:
        why = f"on {stop_request.signal}" if stop_request.requested else "(train.stop_after)"
        metrics.write(event="stop", step=step, reason=why, time=time.time())
        logger.warning(f"stopped at step {step} {why} with a checkpoint there; run the same command again "
                       f"(train.run_dir={run_dir}) to resume")
    metrics.close()
    return state


def _write_outputs(local: TrainState, sde, cfg: DictConfig, run_dir: pathlib.Path, step: int, sample_key,
                   metrics: MetricsLog) -> None:
    """The end of a run (process 0): sample PNGs of `train.sample_grids`, the learned schedule's
    plot, the evaluation (`train.evaluate`) and the experiment's report (`train.report`), from
    the EMA weights of `local`, the final state copied to this process."""
    t = cfg.train
    # the learned schedule and prior, if any: the EMA ones, as the network; the PNG of the
    # grid the evaluation draws anyway with the same sampler shows its samples
    shared = shared_sample_grid(cfg, run_dir)
    metrics.images(write_samples(local.ema["network"], build.with_parts(sde, local.ema), cfg, run_dir,
                                 sample_key, step, [n for n in t.sample_grids if n != shared]), step)
    if "schedule" in local.ema:
        plot_schedule(local.ema["schedule"], run_dir / "schedule.png", base=sde.schedule)
        metrics.images([run_dir / "schedule.png"], step)
    if t.evaluate:  # with the learned parts of its weights
        shown = []

        def show(samples):  # the evaluation's first samples as the shared grid's PNG
            shown.append(save_samples_png(samples[: t.num_samples], run_dir, step, shared,
                                          f"the first {t.num_samples} of the evaluation's {len(samples)} "
                                          f"samples, on the {shared}-grid"))
            metrics.images(shown, step)

        try:
            write_evaluation(local, sde, cfg, run_dir, step, None if shared is None else show)
        except Exception:  # an evaluation that fails before it samples leaves the grid its own PNG
            if shared is not None and not shown:
                metrics.images(write_samples(local.ema["network"], build.with_parts(sde, local.ema), cfg,
                                             run_dir, sample_key, step, [shared]), step)
            raise
    if t.report.name is not None:  # the experiment's own report (train.reports)
        from .reports import REPORTS

        REPORTS[t.report.name].write(local, build.with_parts(sde, local.ema), cfg, run_dir, step)


def start_from(state: TrainState, spec, mesh) -> TrainState:
    """`state` (a new run's first) with the parts and EMA, and for `what=everything` the optimiser
    state, of another run's checkpoint (`train.init_from`); a `ConfigError` naming the first array
    that does not fit. Only the arrays are taken: the fields that hold no weights (e.g.
    `model.oversample`) are this run's, so a run may fine-tune with them changed."""
    from .restore import load_state
    from .step import replicate

    _, other, step = load_state(spec.run_dir, spec.step, "train.init_from.run_dir")
    taken = ("parts", "ema") + (("opt_state",) if str(getattr(spec.what, "value", spec.what)) == "everything" else ())
    for name in taken:
        _same_arrays(getattr(other, name), getattr(state, name),
                     f"train.init_from: the {name} of {spec.run_dir} (step {step}) do not fit this run's")
    logger.info(f"started from {spec.run_dir} at its step {step}: {', '.join(taken)}")
    return eqx.tree_at(lambda s: tuple(getattr(s, n) for n in taken), state,
                       tuple(replicate(_arrays_into(getattr(other, n), getattr(state, n)), mesh) for n in taken))


def _arrays_into(other, mine):
    """The arrays of `other` in the structure of `mine`, whose arrays they fit one for one
    (`_same_arrays`), with `mine`'s other leaves and static fields."""
    arrays, rest = eqx.partition(mine, eqx.is_array)
    taken = jax.tree.leaves(eqx.filter(other, eqx.is_array))
    return eqx.combine(jax.tree.unflatten(jax.tree.structure(arrays), taken), rest)


def _same_arrays(got, want, message: str) -> None:
    from .checkpoint import describe_arrays, first_difference

    got, want = describe_arrays(got), describe_arrays(want)
    if got != want:
        raise ConfigError(f"{message}: {first_difference(got, want, 'that run', 'this run')}.")


def prior_warning(prior) -> str | None:
    """What a run is told about its prior at start-up: a warning if it is not trace class."""
    if prior.trace_class:
        return None
    return (f"the prior {type(prior).__name__} is not trace class: its pointwise variance grows with "
            "the grid, so the model is not one model of functions and samples on grids finer than "
            "the training grids degrade. Use prior=matern or prior=laplacian for that.")


def kept_checkpoint(checkpointer: Checkpointer) -> str:
    """The sentence of a non-finite error naming the checkpoint a run can resume from."""
    kept = checkpointer.latest_step()
    return f"The last checkpoint ({'none' if kept is None else f'step {kept}'}) is kept."


def nonfinite_error(state: TrainState, parts, checkpointer: Checkpointer, t) -> NonFiniteError:
    """The error that stops a run at a step whose loss or gradient was not finite (`train.nonfinite`)."""
    from .step import gradient_names

    index, leaf = (int(v) for v in state.first_bad)
    where = gradient_names(parts)[leaf]
    where = "the loss" if where == "loss" else f"the gradient of {where}"
    why = ("" if t.nonfinite == "stop" else f"{int(state.skipped)} steps were skipped (more than "
           f"train.max_skipped = {t.max_skipped}); ")
    return NonFiniteError(
        f"{why}{where} is not finite at step {index + 1} (the first such step; its update was not "
        f"applied). {kept_checkpoint(checkpointer)} "
        + ("Lower optim.lr, or set train.nonfinite=skip to go on without such steps." if t.nonfinite == "stop"
           else "Lower optim.lr, or raise train.max_skipped.")
    )


def optimiser_lr(o: DictConfig, steps_total: int, step: int) -> float:
    """The learning rate of `make_optimiser`'s schedule after `step` updates of a stage (for the
    log: the rate of the next update)."""
    from .step import learning_rate_schedule

    schedule = learning_rate_schedule(o.lr, steps_total, warmup_steps=o.warmup_steps,
                                      final_lr_fraction=o.final_lr_fraction, schedule_free=o.schedule_free)
    return float(schedule(step))
