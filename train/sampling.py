"""Sampling a trained network: batches of samples on any grid, their PNG grids, and output names."""

import logging
import pathlib
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from omegaconf import DictConfig

from . import build, distributed
from .progress import save_samples

logger = logging.getLogger("train.sampling")


def sampler_tag(spec: Any) -> str:
    """A short folder name for a sampler's fields, e.g. `euler_maruyama_200`, `ode_tsit5_adaptive`."""
    s = dict(spec)
    parts = [s["name"]]
    if s["name"] == "ode":
        parts.append(s.get("solver", "tsit5"))
    parts.append("adaptive" if s.get("steps") is None else str(s["steps"]))
    if s.get("steps") is None:
        parts.append(f"tol{float(s.get('rtol', 1e-3)):g}")
    if s.get("spacing", "uniform") != "uniform":
        parts.append(s["spacing"])
    if s["name"] == "ode" and s.get("variables", "t") != "t":
        parts.append(s["variables"])
    if s.get("t_end") is not None:
        parts.append(f"tend{float(s['t_end']):g}")
    if s.get("coarse_grid") is not None:
        parts.append(f"from{s['coarse_grid']}at{float(s['switch_time']):g}")
    return "_".join(parts)


def output_tag(cfg: DictConfig, defaults: Any = None) -> str:
    """The default output name of a sampling or evaluation program.

    **Arguments:**

    - `cfg`: the program's config (`sampler`, `weights`, and `oversample`, `step`, `num_samples`,
        `seed` where it has them).
    - `defaults`: the program's schema (`train.config.SampleConfig` or `EvaluateConfig`), whose
        defaults of `num_samples` and `seed` need no mention; `None`: neither is named.

    **Returns:**

    The sampler's tag, then `_raw` when the raw weights are sampled instead of the EMA ones,
    `_oversample<f>` when the network's nonlinearities are evaluated on a finer grid than the
    run's, `_step<n>` when a checkpoint other than the latest is asked for, and `_n<count>` and
    `_seed<s>` when the number of samples or their seed differ from `defaults`, so that outputs
    of other settings do not replace each other.
    """
    oversample, step = cfg.get("oversample"), cfg.get("step")
    tag = (sampler_tag(cfg.sampler) + ("_raw" if cfg.weights == "raw" else "")
           + ("" if oversample is None else f"_oversample{float(oversample):g}")
           + ("" if step is None else f"_step{int(step)}"))
    for field, short in (("num_samples", "n"), ("seed", "seed")):
        if defaults is not None and int(cfg[field]) != int(getattr(defaults, field)):
            tag += f"_{short}{int(cfg[field])}"
    return tag


def smallest_report_time(sde) -> float:
    """The smallest time the reports log-space their times from: `sde.t0`, or `1e-3 * sde.t1`
    when `t0` is 0 (a geometric grid cannot reach zero)."""
    return float(sde.t0) or 1e-3 * float(sde.t1)


def field_shape(channels: int, dim: int, n: int) -> tuple[int, ...]:
    """The shape `(c, n, ..., n)` of one sample on the grid of `n` points per axis."""
    return (int(channels),) + (int(n),) * int(dim)


def consistent_start(sde, key, shape: tuple[int, ...]):
    """The start of a sample drawn with `resolution_consistent_noise`: the terminal law's draw from
    a key of its own (`jr.fold_in(key, 1)`), the same function on every grid for the same key."""
    return sde.terminal_sample(jr.fold_in(key, 1), shape)


@eqx.filter_jit
def _draw_batch(score, sampler, keys, shape: tuple[int, ...], t_end: float | None, consistent_noise: bool,
                observation):
    """One batch of `draw`: the sampler vmapped over `keys`. One jitted function for every call, so
    that drawing again with the same kind of model, sampler and grid (other weights and keys; e.g.
    the sample PNGs every `train.sample_every` steps) runs the program compiled the first time.
    The solve does not throw: its outcome comes back for `draw` to check, and the program holds no
    host callback, so JAX's persistent compilation cache keeps it for the next process."""

    conditioned = {} if observation is None else {"observation": observation}

    def one(k):
        if consistent_noise:
            x1 = consistent_start(score.sde, k, shape)
            return sampler.sample(score, k, x_start=x1, t_end=t_end, throw=False, **conditioned)
        return sampler.sample(score, k, shape, t_end=t_end, throw=False, **conditioned)

    result = jax.vmap(one)(keys)
    return result.samples, result.num_evaluations, result.result


def draw(model, sde, parameterisation, sampler, key, shape: tuple[int, ...], count: int, batch_size: int,
         consistent_noise: bool = False, t_end: float | None = None, self_conditioning: bool = False,
         observation: Any = None):
    """`count` samples of shape `shape` = `(c, n_1, ..., n_d)`, `batch_size` at a time (vmapped and
    jitted), integrated from $t_1$ down to `t_end` (`None`: the SDE's $t_0$; the sampler's
    `denoise` step then acts at `t_end`). `parameterisation` is what the network predicts, an
    `sdeflow.parameterisation` object (`build.build_parameterisation` of the run's name);
    `self_conditioning`: the network takes an estimate of $x_0$ as extra channels, which the sampler
    feeds back from step to step (`build.self_conditioned` of the run's loss); `observation`: an
    `sdeflow.samplers.Inpainting` or `SuperResolution` every sample is conditioned on (replacement,
    fixed-step samplers). The program runs where the arrays are: give `model` and `sde` on one
    device (`train.distributed.local_copy`). The `i`-th sample is drawn with key
    `jr.split(key, count)[i]` whatever the batch size.

    **Returns:**

    `(samples, num_evaluations)` as NumPy arrays; a `RuntimeError` with diffrax's message if a
    sample's solve failed (an adaptive sampler out of `max_steps`).
    """
    from sdeflow import samplers

    shape = tuple(int(n) for n in shape)
    if t_end is not None and not (isinstance(t_end, (int, float)) and 0 < t_end < sde.t1):
        raise ValueError(f"sampler.t_end must be null or a number in (0, {sde.t1}), got {t_end!r}.")
    # the network inside the vmapped solver runs its own batched layout (samplers.VmapAsBatched)
    score = samplers.PreconditionedScore(samplers.VmapAsBatched(model), sde, parameterisation,
                                         self_conditioning=bool(self_conditioning))
    keys = jr.split(key, count)
    samples, evaluations = [], []
    for i in range(0, count, batch_size):
        chunk = keys[i : i + batch_size]
        if chunk.shape[0] < batch_size:  # pad the last batch so one compiled program serves all
            chunk = jnp.concatenate([chunk, keys[: batch_size - chunk.shape[0]]])
        x, n, outcome = _draw_batch(score, sampler, chunk, shape,
                                    None if t_end is None else float(t_end), bool(consistent_noise),
                                    observation)
        take = min(batch_size, count - i)
        outcome = jax.tree.map(lambda v: v[:take], outcome)  # the padding's repeats left out
        samplers.check_results(outcome, f"sampling on the grid {shape[1:]}")
        samples.append(np.asarray(x)[:take])
        evaluations.append(np.asarray(n)[:take])
    return np.concatenate(samples), np.concatenate(evaluations)


def save_samples_png(samples: np.ndarray, run_dir: pathlib.Path, step: int, n: int, how: str) -> pathlib.Path:
    """Save `samples` (drawn on the `n`-grid) as the sample PNG of `step`,
    `samples/step<step>_grid<n>.png` in the run folder, and log `how` they were drawn."""
    path = run_dir / "samples" / f"step{step:07d}_grid{n}.png"
    save_samples(samples, path)
    logger.info(f"samples: {path} ({how})")
    return path


def write_samples(
    model: Any, sde: Any, cfg: DictConfig, run_dir: pathlib.Path, key, step: int,
    grids: list[int] | None = None,
) -> list[pathlib.Path]:
    """Sample grids of `model` (the EMA) at every `train.sample_grids` resolution (or at `grids`),
    as PNGs.

    Every grid uses the same keys (`key`, the same at every step); the starting noise is drawn per
    grid point, so it is not the same function on every grid (`python -m train.sample ...
    resolution_consistent_noise=true` starts every grid from the same prior function).

    **Returns:**

    The paths of the PNGs (`save_samples_png`).
    """
    sampler = build.build_sampler(cfg)
    parameterisation = build.build_parameterisation(cfg.loss.parameterisation)
    channels, dim = build.dimensions(cfg)
    model = distributed.local_copy(model)  # off the mesh: one device samples
    count = cfg.train.num_samples
    paths = []
    for n in cfg.train.sample_grids if grids is None else grids:
        started = time.perf_counter()
        samples, evaluations = draw(model, sde, parameterisation, sampler, key,
                                    field_shape(channels, dim, n), count, count, t_end=cfg.sampler.t_end,
                                    self_conditioning=build.self_conditioned(cfg.loss))
        paths.append(save_samples_png(samples, run_dir, step, n,
                                      f"{count} on the {n}-grid, {np.mean(evaluations):.1f} network evaluations "
                                      f"each on average, {time.perf_counter() - started:.1f} s"))
    return paths
