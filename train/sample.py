"""Draw samples of a trained model: `python -m train.sample run_dir=runs/NAME [field=value ...]`.

Restores the EMA weights of a run's checkpoint (the latest, or `step=`), builds the sampler of
`configs/sample.yaml`'s `sampler` group of fields, and for every grid in `grids` writes

- `<out>/grid<n>.npz`: `samples` `(num_samples, channels, *grid)`, `num_evaluations` (per
  sample), the sampler's fields and the checkpoint step;
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

import jax
import jax.random as jr
import numpy as np
from omegaconf import DictConfig, OmegaConf

from .build import make_sampler
from .restore import load_run
from .sampling import draw, output_tag


logger = logging.getLogger("train.sample")


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
