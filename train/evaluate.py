"""Evaluate a trained model: `python -m train.evaluate run_dir=runs/NAME [field=value ...]`.

Draws samples on a grid and compares them with held-out data; `train.evaluation` lists the
metrics of the JSON it writes.
"""

if __name__ == "__main__":  # first of all, before any import starts a thread (train.memory)
    from .memory import retain_freed_memory

    retain_freed_memory()

import json
import logging
import pathlib

from omegaconf import DictConfig

from . import build
from .config import ConfigError, EvaluateConfig, to_schema
from .errors import check_writable, run_program
from .evaluation import evaluate, summary
from .restore import load_run
from .sampling import output_tag

logger = logging.getLogger("train.evaluate")


def main(cfg: DictConfig) -> pathlib.Path:
    """Run the evaluation of a composed `configs/evaluate.yaml`; return the JSON written."""
    program = to_schema(cfg)
    if program.run_dir is None:
        raise ConfigError("run_dir must name a training run folder, e.g. run_dir=runs/multilevel_mnist.")
    run_cfg, model, sde, step = load_run(cfg.run_dir, cfg.step, cfg.weights, cfg.oversample, cfg.data_root)
    program.check("", sde.t0, sde.t1)
    build.check_model_grids(model, build.dimensions(run_cfg)[1], program.network_grids(""))
    if build.self_conditioned(run_cfg.loss):
        program.sampler.check_self_conditioned("sampler")
    on_grid = "" if cfg.sample_grid in (None, cfg.grid) else f"_from{cfg.sample_grid}"
    out = pathlib.Path(cfg.output) if cfg.output else (
        pathlib.Path(cfg.run_dir) / "evaluation" / f"{output_tag(cfg, EvaluateConfig)}_grid{cfg.grid}{on_grid}.json"
    )
    check_writable(out.parent, "output folder", "output")  # before the evaluation's minutes
    result = evaluate(model, sde, run_cfg, cfg, step)
    out.write_text(json.dumps(result, indent=2))
    logger.info(f"evaluation written to {out}: {summary(result)}")
    return out


def _main(cfg: DictConfig) -> None:
    run_program(main, cfg)


if __name__ == "__main__":
    import hydra

    hydra.main(config_path="configs", config_name="evaluate", version_base=None)(_main)()
