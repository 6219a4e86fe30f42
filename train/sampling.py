"""Draw samples of a trained model: `python -m train.sample run_dir=runs/NAME [field=value ...]`.

Restores the EMA weights of a run's checkpoint (the latest, or `step=`), builds the sampler of
`configs/sample.yaml`'s `sampler` group of fields, and for every grid in `grids` writes

- `<out>/grid<n>.npz`: `samples` `(num_samples, 1, n, n)`, `num_evaluations` (per sample), the
  sampler's fields and the checkpoint step;
- `<out>/grid<n>.png`: the first `png_count` samples as one image grid,

with `<out>` = `<run_dir>/samples/<sampler tag>` unless `out_dir` is given. Any grid works: the
networks act on functions, so a model trained at 32 and 64 samples at 128 too. Every grid uses
the same keys; `sampler.resolution_consistent_noise: true` also starts every grid from the same
prior draw (the restriction of the finest grid's starting noise), at a compile-time cost.
"""

if __name__ == "__main__":  # first of all, before any import starts a thread (train.memory)
    from .memory import retain_freed_memory

    retain_freed_memory()

import json
import logging
import pathlib
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from omegaconf import DictConfig, OmegaConf

from .config import SAMPLER_NAMES


logger = logging.getLogger("train.sample")


def make_sampler(spec: Any):
    """An `sdeflow.samplers` sampler from a mapping of fields (the `sampler` group of the configs).

    - `name`: `euler_maruyama` (reverse SDE, Euler–Maruyama), `shark` (reverse SDE, ShARK; adaptive
      when `steps` is null), `ode` (probability flow with `solver` tsit5 | heun | euler; adaptive
      Tsit5 when `steps` is null), `ddim`, `pc` (predictor–corrector);
    - `steps`, `rtol`, `atol`, `spacing` (`uniform` | `log_snr`), `corrector_steps`, `snr`, `denoise`;
    - `variables` (`ode` only): `t` (x against t) | `sigma` | `log_sigma` ((x - b)/m against the
      noise level s/m or its log);
    - `t_end` is not the sampler's but `draw`'s (the time the solve stops at);
    - `coarse_grid` (null: off) and `switch_time`: sample coarse-to-fine
      (`sdeflow.samplers.MultilevelSampler`): on the `coarse_grid` square grid down to `switch_time`,
      then on the target grid.

    Raises `ValueError` naming the field for a wrong value.
    """
    import diffrax

    from sdeflow import samplers

    s = dict(spec)
    if s.get("coarse_grid") is not None:
        return _multilevel(s)
    name = s.get("name")
    if name not in SAMPLER_NAMES:
        raise ValueError(f"sampler.name must be one of {', '.join(SAMPLER_NAMES)}, got {name!r}.")
    steps = s.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"sampler.steps must be a positive int or null (adaptive), got {steps!r}.")
    common = dict(denoise=bool(s.get("denoise", False)))
    spacing = s.get("spacing", "uniform")
    if name in ("euler_maruyama", "ddim", "pc") and steps is None:
        raise ValueError(f"sampler.steps must be a positive int for sampler {name!r}, got null.")
    if name == "euler_maruyama":
        return samplers.ReverseSDE(diffrax.Euler(), steps, spacing=spacing, **common)
    if name == "shark":
        return samplers.ReverseSDE(
            diffrax.ShARK(), steps, rtol=float(s.get("rtol", 1e-2)), atol=float(s.get("atol", 1e-2)),
            spacing=spacing, **common,
        )
    if name == "ddim":
        return samplers.DDIM(steps, spacing=spacing, **common)
    if name == "pc":
        return samplers.PredictorCorrector(
            steps, corrector_steps=int(s.get("corrector_steps", 1)), snr=float(s.get("snr", 0.16)),
            spacing=spacing, **common,
        )
    solvers = {"tsit5": diffrax.Tsit5, "heun": diffrax.Heun, "euler": diffrax.Euler}
    solver = s.get("solver", "tsit5")
    if solver not in solvers:
        raise ValueError(f"sampler.solver must be one of {', '.join(solvers)}, got {solver!r}.")
    variables = s.get("variables", "t")
    if variables not in ("t", "sigma", "log_sigma"):
        raise ValueError(f"sampler.variables must be t, sigma or log_sigma, got {variables!r}.")
    return samplers.ProbabilityFlow(
        solvers[solver](), steps, rtol=float(s.get("rtol", 1e-3)), atol=float(s.get("atol", 1e-3)),
        spacing=spacing, variables=variables, **common,
    )


def _multilevel(s: dict):
    """`sdeflow.samplers.MultilevelSampler` of the fields (`coarse_grid`, `switch_time` and the
    sampler's own): fixed `steps` are split between the phases in proportion to their time spans
    ($1 - t_s$ and $t_s$, for $t_1 = 1$), adaptive steps stay adaptive in both."""
    from sdeflow import samplers

    coarse = s["coarse_grid"]
    if not isinstance(coarse, int) or isinstance(coarse, bool) or coarse < 4:
        raise ValueError(f"sampler.coarse_grid must be null or an int >= 4, got {coarse!r}.")
    switch = s.get("switch_time")
    if not isinstance(switch, (int, float)) or isinstance(switch, bool) or not 0 < switch < 1:
        raise ValueError(f"sampler.switch_time must be a number in (0, 1), got {switch!r}.")
    steps = s.get("steps")
    first, second = steps, steps
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
            raise ValueError(f"sampler.steps must be an int >= 2 or null with coarse_grid, got {steps!r}.")
        first = min(steps - 1, max(1, round(steps * (1 - switch))))
        second = steps - first
    phase = dict(s, coarse_grid=None)
    return samplers.MultilevelSampler(
        make_sampler(dict(phase, steps=first, denoise=False)),
        make_sampler(dict(phase, steps=second)),
        (coarse, coarse),
        float(switch),
    )


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


def output_tag(cfg: DictConfig) -> str:
    """The default output name of a sampling or evaluation program: the sampler's tag, and `_raw`
    when the raw weights are sampled instead of the EMA ones."""
    return sampler_tag(cfg.sampler) + ("_raw" if cfg.weights == "raw" else "")


def select_weights(state, weights: str):
    """The network of a training state: `state.ema` for `"ema"`, `state.model` for `"raw"` (with
    `state=None`, only the name is checked)."""
    from .config import WEIGHTS

    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {' | '.join(WEIGHTS)}, got {weights!r}.")
    if state is None:
        return None
    return state.ema if weights == "ema" else state.model


def load_run(run_dir: str | pathlib.Path, step: int | None = None, weights: str = "ema"):
    """The network of a training run's checkpoint.

    **Arguments:**

    - `run_dir`: the run folder (`config.yaml`, `checkpoints/`).
    - `step`: the checkpoint step, or `None` for the latest.
    - `weights`: `"ema"` (the exponential moving average of the weights) or `"raw"` (the weights
        the optimiser last wrote).

    **Returns:**

    `(cfg, model, sde, step)`: the run's resolved config, the network, the forward SDE and the
    step restored.
    """
    from . import build
    from .checkpoint import Checkpointer
    from .config import total_steps
    from .step import init_state, make_mesh, make_optimiser

    select_weights(None, weights)  # a wrong name fails before the checkpoint is read
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} holds no config.yaml: is it the folder of a training run?")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model_key, train_key, _ = build.split_keys(cfg.train.seed)
    model = build.build_model(cfg, model_key)
    sde = build.build_sde(cfg)
    o = cfg.optim
    optimiser = make_optimiser(
        o.lr, total_steps(cfg), warmup_steps=o.warmup_steps, final_lr_fraction=o.final_lr_fraction,
        clip_norm=o.clip_norm, weight_decay=o.weight_decay, b1=o.b1, b2=o.b2,
    )
    template = init_state(model, optimiser, train_key, make_mesh(jax.devices()[:1]))
    with Checkpointer(run_dir / "checkpoints") as checkpointer:
        state, extra = checkpointer.restore(template, step)
    return cfg, select_weights(state, weights), sde, int(extra["step"])


def draw(model, sde, parameterisation: str, sampler, key, grid: int, count: int, batch_size: int,
         consistent_noise: bool = False, t_end: float | None = None):
    """`count` samples on the `grid` x `grid` grid, `batch_size` at a time (vmapped and jitted),
    integrated from $t_1$ down to `t_end` (`None`: the SDE's $t_0$; the sampler's `denoise` step
    then acts at `t_end`).

    **Returns:**

    `(samples, num_evaluations)` as NumPy arrays.
    """
    from sdeflow import samplers

    # the network inside the vmapped solver runs its own batched layout (samplers.VmapAsBatched)
    score = samplers.PreconditionedScore(samplers.VmapAsBatched(model), sde, parameterisation)
    if t_end is not None and not (isinstance(t_end, (int, float)) and 0 < t_end < sde.t1):
        raise ValueError(f"sampler.t_end must be null or a number in (0, {sde.t1}), got {t_end!r}.")

    @eqx.filter_jit
    def run(score, keys):
        def one(k):
            if consistent_noise:
                x1 = sde.terminal_sample(jr.fold_in(k, 1), (1, grid, grid))
                return sampler.sample(score, k, x_start=x1, t_end=t_end)
            return sampler.sample(score, k, (1, grid, grid), t_end=t_end)

        result = jax.vmap(one)(keys)
        return result.samples, result.num_evaluations

    keys = jr.split(key, count)
    samples, evaluations = [], []
    for i in range(0, count, batch_size):
        chunk = keys[i : i + batch_size]
        if chunk.shape[0] < batch_size:  # pad the last batch so one compiled program serves all
            chunk = jnp.concatenate([chunk, keys[: batch_size - chunk.shape[0]]])
        x, n = run(score, chunk)
        take = min(batch_size, count - i)
        samples.append(np.asarray(x)[:take])
        evaluations.append(np.asarray(n)[:take])
    return np.concatenate(samples), np.concatenate(evaluations)


def main(cfg: DictConfig) -> list[pathlib.Path]:
    """Run the sampling program for a composed `configs/sample.yaml`; return the files written."""
    from .progress import save_grid

    if cfg.run_dir is None:
        raise ValueError("run_dir must name a training run folder, e.g. run_dir=runs/multilevel_mnist.")
    for field in ("num_samples", "batch_size", "png_count"):
        if not isinstance(cfg[field], int) or cfg[field] < 1:
            raise ValueError(f"{field} must be a positive int, got {cfg[field]!r}.")
    grids = list(cfg.grids)
    if not grids or not all(isinstance(n, int) and n >= 4 for n in grids):
        raise ValueError(f"grids must be a non-empty list of ints >= 4, got {grids!r}.")
    sampler = make_sampler(cfg.sampler)
    run_cfg, model, sde, step = load_run(cfg.run_dir, cfg.step, cfg.weights)
    model = jax.device_put(model, jax.devices()[0])
    out = pathlib.Path(cfg.out_dir) if cfg.out_dir else pathlib.Path(cfg.run_dir) / "samples" / output_tag(cfg)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for n in grids:
        started = time.perf_counter()
        samples, evaluations = draw(
            model, sde, run_cfg.loss.parameterisation, sampler, jr.key(cfg.seed), n, cfg.num_samples,
            min(cfg.batch_size, cfg.num_samples), bool(cfg.sampler.get("resolution_consistent_noise", False)),
            cfg.sampler.get("t_end"),
        )
        seconds = time.perf_counter() - started
        npz = out / f"grid{n}.npz"
        np.savez_compressed(
            npz, samples=samples, num_evaluations=evaluations, step=step,
            sampler=json.dumps(OmegaConf.to_container(cfg.sampler)), seconds=seconds,
        )
        png = out / f"grid{n}.png"
        save_grid(samples[: cfg.png_count], png)
        written += [npz, png]
        logger.info(
            f"{cfg.num_samples} samples at {n}x{n} in {seconds:.1f} s, "
            f"{float(np.mean(evaluations)):.1f} network evaluations each: {npz}, {png}"
        )
    return written


def _main(cfg: DictConfig) -> None:
    from .memory import retain_freed_memory
    from .progress import configure_logging

    configure_logging()
    retain_freed_memory()  # logs what the call at the top of the module did
    main(cfg)


if __name__ == "__main__":
    import hydra

    hydra.main(config_path="../configs", config_name="sample", version_base=None)(_main)()
