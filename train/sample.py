"""Draw samples of a trained model: `python -m train.sample run_dir=runs/NAME [field=value ...]`.

Restores the EMA weights of a run's checkpoint (the latest, or `step=`), builds the sampler of
the `sampler` group (`sampler=pc sampler.steps=50 ...`), and for every grid in `grids` writes

- `<out>/grid<n>.npz`: `samples` `(num_samples, channels, n, ..., n)`, `num_evaluations` (per
  sample), the sampler's fields and the checkpoint step;
- `<out>/grid<n>.png`: the first `png_count` samples as one image grid,

with `<out>` = `<run_dir>/samples/<sampler tag>` unless `out_dir` is given (the tag gains `_raw`,
`_oversample<f>`, `_step<n>`, `_n<count>` and `_seed<s>` when those differ from the defaults, so that
other settings do not replace its files; `train.sampling.output_tag`). Any grid works: the
networks act on functions, so a model trained at 32 and 64 samples at 128 too.

`task=` draws, on every grid, instead of samples (files `<task>_grid<n>.npz` and `.png`, one row
per held-out example or chain):

- `super_resolution`: the first `examples` held-out examples given on `observed_grid`, each
  completed `per_example` times on the grid (`sdeflow.samplers.SuperResolution`); the row shows
  the observation, the truth on the grid and the samples;
- `inpainting`: the examples with a central square of side `mask_size` masked, filled in
  (`sdeflow.samplers.Inpainting`); the row shows the truth, the masked input and the samples;
- `chain`: `examples` samples with the state at each of `chain_times`, then the sample.

The `.npz` holds the arrays and `figures`: the largest deviation from the observation (zero up to
round-off: replacement keeps it exactly) and the relative L2 distance to the truth. Every grid uses
the same keys; `resolution_consistent_noise=true` also starts every grid from the same
prior draw (the restriction of the finest grid's starting noise), at a compile-time cost.
"""

if __name__ == "__main__":  # first of all, before any import starts a thread (train.memory)
    from .memory import retain_freed_memory

    retain_freed_memory()

import json
import logging
import pathlib
import time

import jax.random as jr
import numpy as np
from omegaconf import DictConfig, OmegaConf

from . import build as build_lib
from .config import SampleConfig, to_schema
from .errors import check_writable, run_program
from .progress import save_samples
from .restore import load_run
from .sampling import draw, field_shape, output_tag

logger = logging.getLogger("train.sample")


def main(cfg: DictConfig) -> list[pathlib.Path]:
    """Run the sampling program for a composed `configs/sample.yaml`; return the files written."""
    to_schema(cfg).check()
    run_cfg, model, sde, step = load_run(cfg.run_dir, cfg.step, cfg.weights, cfg.oversample, cfg.data_root)
    grids = list(cfg.grids)
    sampler_cfg = OmegaConf.to_object(cfg.sampler)
    sampler_cfg.check("sampler", sde.t0, sde.t1, grids)
    if build_lib.self_conditioned(run_cfg.loss):
        sampler_cfg.check_self_conditioned("sampler")
    channels, dim = build_lib.dimensions(run_cfg)
    coarse = [] if cfg.sampler.coarse_grid is None else [("sampler.coarse_grid", cfg.sampler.coarse_grid)]
    build_lib.check_model_grids(model, dim, [(f"grids[{i}]", n) for i, n in enumerate(grids)] + coarse)
    sampler = build_lib.build_sampler(run_cfg, cfg.sampler)
    parameterisation = build_lib.build_parameterisation(run_cfg.loss.parameterisation)
    out = pathlib.Path(cfg.out_dir) if cfg.out_dir else pathlib.Path(cfg.run_dir) / "samples" / output_tag(cfg, SampleConfig)
    check_writable(out, "output folder", "out_dir")
    if str(cfg.task) != "samples":
        from .resolution_tasks import run_task

        return run_task(str(cfg.task), model, sde, parameterisation, sampler, cfg, run_cfg, out,
                        build_lib.self_conditioned(run_cfg.loss), step, channels, dim)
    written = []
    for n in grids:
        started = time.perf_counter()
        samples, evaluations = draw(
            model, sde, parameterisation, sampler, jr.key(cfg.seed),
            field_shape(channels, dim, n), cfg.num_samples, min(cfg.batch_size, cfg.num_samples),
            cfg.resolution_consistent_noise, cfg.sampler.t_end, build_lib.self_conditioned(run_cfg.loss),
        )
        seconds = time.perf_counter() - started
        npz = out / f"grid{n}.npz"
        np.savez_compressed(
            npz, samples=samples, num_evaluations=evaluations, step=step,
            sampler=json.dumps(OmegaConf.to_container(cfg.sampler, enum_to_str=True)), seconds=seconds,
        )
        png = out / f"grid{n}.png"
        save_samples(samples[: cfg.png_count], png)
        written += [npz, png]
        logger.info(
            f"{cfg.num_samples} samples on the {n}-grid in {seconds:.1f} s, "
            f"{float(np.mean(evaluations)):.1f} network evaluations each: {npz}, {png}"
        )
    return written


def _main(cfg: DictConfig) -> None:
    run_program(main, cfg)


if __name__ == "__main__":
    import hydra

    hydra.main(config_path="configs", config_name="sample", version_base=None)(_main)()
