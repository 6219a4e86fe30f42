"""The conditional tasks of `train.sample`: super-resolution and inpainting of held-out examples
(`sdeflow.samplers.SuperResolution`, `Inpainting`, by replacement), and the chain of states of
the sampler at chosen times. Each writes `<task>_grid<n>.npz` and `.png` for every grid."""

import json
import logging
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from omegaconf import DictConfig, OmegaConf

import sdeflow
from sdeflow import samplers

from .config import ConfigError
from .evaluation import Reference
from .progress import save_samples
from .sampling import consistent_start, draw, field_shape


logger = logging.getLogger("train.sample")


def held_out(run_cfg: DictConfig, n: int, count: int) -> np.ndarray:
    """The first `count` held-out examples of the run's data as fields on the `n`-grid."""
    fields = Reference(run_cfg, n).fields
    if len(fields) < count:
        raise ConfigError(f"examples={count} is more than the {len(fields)} held-out examples of the run's data.")
    return np.asarray(fields[:count], np.float32)


def centre_square(grid: tuple[int, ...], size: float) -> np.ndarray:
    """`True` inside the central square (cube) of a grid: on each axis of `n` points, the
    `max(1, floor(size n))` points from `(n - width) // 2` on."""
    inside = np.ones(tuple(grid), bool)
    for axis, n in enumerate(grid):
        width = max(1, int(size * n))
        keep = np.zeros(n, bool)
        keep[(n - width) // 2:(n - width) // 2 + width] = True
        inside &= keep.reshape([-1 if a == axis else 1 for a in range(len(grid))])
    return inside


def centre_mask(shape: tuple[int, ...], size: float) -> np.ndarray:
    """The observed points of a field of `shape` `(c, *grid)`: all but the `centre_square` of side `size`."""
    return np.broadcast_to(~centre_square(shape[1:], size), shape).copy()


def upsampled(fields: np.ndarray, n: int) -> np.ndarray:
    """Fields `(B, c, *grid)` shown on the `n`-grid: each value repeated (pixels) when `n` is a
    multiple of the grid, else the trigonometric interpolant."""
    grid = fields.shape[2:]
    if all(n % m == 0 for m in grid):
        for axis, m in enumerate(grid, start=2):
            fields = np.repeat(fields, n // m, axis=axis)
        return fields
    return np.stack([np.asarray(sdeflow.prolong(jnp.asarray(x), (n,) * len(grid))) for x in fields])


def run_task(task: str, model, sde, parameterisation, sampler, cfg: DictConfig, run_cfg: DictConfig,
             out: pathlib.Path, self_conditioning: bool, step: int, channels: int, dim: int) -> list[pathlib.Path]:
    """Draw `task` (`super_resolution`, `inpainting` or `chain`) on every grid of `cfg.grids`.

    **Arguments:**

    - `task`: the task's name.
    - `model`, `sde`, `parameterisation`, `sampler`: the restored run and the built sampler.
    - `cfg`: the composed `train.sample` config (`examples`, `per_example`, `observed_grid`,
      `mask_size`, `chain_times`, `seed`).
    - `run_cfg`: the run's config (its data give the held-out examples).
    - `out`: the output folder.
    - `self_conditioning`: whether the network takes an estimate of $x_0$ as extra channels.
    - `step`: the checkpoint step, recorded in the `.npz`.
    - `channels`, `dim`: the fields' channels and dimension.

    **Returns:**

    The files written.
    """
    score = samplers.PreconditionedScore(samplers.VmapAsBatched(model), sde, parameterisation,
                                         self_conditioning=bool(self_conditioning))
    examples, per_example = int(cfg.examples), int(cfg.per_example)
    key = jr.key(int(cfg.seed))
    t_end = None if cfg.sampler.t_end is None else float(cfg.sampler.t_end)
    consistent = bool(cfg.resolution_consistent_noise)
    written = []

    def conditional(observation, example: int, shape):
        """`per_example` samples given `observation`, the keys `jr.split(jr.fold_in(key, example), per_example)`."""
        return draw(model, sde, parameterisation, sampler, jr.fold_in(key, example), shape, per_example,
                    per_example, consistent, t_end, self_conditioning=self_conditioning, observation=observation)[0]

    for n in cfg.grids:
        started = time.perf_counter()
        arrays, rows, figures = {}, [], {}
        if task == "super_resolution":
            observed = held_out(run_cfg, int(cfg.observed_grid), examples)
            truth = held_out(run_cfg, n, examples)
            shape = field_shape(channels, dim, n)
            drawn = np.stack([conditional(samplers.SuperResolution(jnp.asarray(observed[i]), shape[1:]), i, shape)
                              for i in range(examples)])  # (examples, per_example, c, *grid)
            kept = np.stack([[np.asarray(sdeflow.restrict(jnp.asarray(x), observed.shape[2:])) for x in row]
                             for row in drawn])
            figures["observation_error_max"] = float(np.max(np.abs(kept - observed[:, None])))
            figures["relative_l2_to_truth"] = float(np.sqrt(np.mean((drawn - truth[:, None]) ** 2) / np.mean(truth ** 2)))
            arrays = {"observed": observed, "truth": truth, "samples": drawn}
            rows = [np.concatenate([upsampled(observed[i:i + 1], n), truth[i:i + 1], drawn[i]]) for i in range(examples)]
        elif task == "inpainting":
            truth = held_out(run_cfg, n, examples)
            mask = centre_mask(truth.shape[1:], float(cfg.mask_size))
            shape = truth.shape[1:]
            drawn = np.stack([conditional(samplers.Inpainting(jnp.asarray(mask), jnp.asarray(truth[i])), i, shape)
                              for i in range(examples)])
            figures["observation_error_max"] = float(np.max(np.abs(np.where(mask, drawn - truth[:, None], 0.0))))
            hidden = ~mask
            figures["relative_l2_to_truth_in_mask"] = float(np.sqrt(
                np.sum(np.where(hidden, drawn - truth[:, None], 0.0) ** 2)
                / (per_example * np.sum(np.where(hidden, truth, 0.0) ** 2))))
            arrays = {"truth": truth, "mask": mask, "samples": drawn}
            masked = np.where(mask, truth, -1.0)
            rows = [np.concatenate([truth[i:i + 1], masked[i:i + 1], drawn[i]]) for i in range(examples)]
        else:  # chain
            times = jnp.asarray(list(cfg.chain_times), jnp.float32)
            low = float(sde.t0) if t_end is None else t_end
            if not (float(times[0]) <= float(sde.t1) and float(times[-1]) > low):
                raise ConfigError(f"chain_times must lie in ({'sde.t0' if t_end is None else 'sampler.t_end'}, sde.t1] = "
                                  f"({low:g}, {float(sde.t1):g}], got {list(cfg.chain_times)}.")
            shape = field_shape(channels, dim, n)

            @eqx.filter_jit
            def chains(score, keys):
                def one(k):  # as `draw` draws: the same start on every grid with consistent noise
                    start = consistent_start(sde, k, shape) if consistent else None
                    return sampler.sample(score, k, shape, x_start=start, t_end=t_end, save_ts=times)

                result = jax.vmap(one)(keys)
                return result.chain, result.samples

            states, finals = (np.asarray(a) for a in chains(score, jr.split(key, examples)))
            arrays = {"times": np.asarray(times), "states": states, "samples": finals}
            rows = [np.concatenate([states[i], finals[i:i + 1]]) for i in range(examples)]
        seconds = time.perf_counter() - started
        npz = out / f"{task}_grid{n}.npz"
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(npz, **arrays, step=step, seconds=seconds, figures=json.dumps(figures),
                            sampler=json.dumps(OmegaConf.to_container(cfg.sampler, enum_to_str=True)))
        png = out / f"{task}_grid{n}.png"
        save_samples(np.concatenate(rows), png, nrow=len(rows[0]))
        written += [npz, png]
        logger.info(f"{task} on the {n}-grid in {seconds:.1f} s: {json.dumps(figures)}; {npz}, {png}")
    return written
