"""Experiments' own end-of-run reports, chosen by `train.report.name`.

`REPORTS` maps a report's name to a `Report`: a check of the run's config, called at start-up
before anything compiles, and a writer called with the final state at the end of the run, which
writes its files into the run folder. The training loop knows no experiment by name.
"""

import dataclasses
import pathlib
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from .mixture_report import check_mixture_report, write_mixture_report
from .vqvae_report import check_vqvae_report, write_vqvae_report
from .warmstart_report import check_warmstart, write_warmstart
from .reaction_diffusion_report import check_reaction_diffusion_report, write_reaction_diffusion_report
from .sdf_report import check_sdf_report, write_sdf_report


@dataclasses.dataclass(frozen=True)
class Report:
    """An end-of-run report.

    **Fields:**

    - `check`: `check(cfg)` raises `ConfigError` naming the field when the run cannot be reported on.
    - `write`: `write(state, sde, cfg, run_dir, step)` writes the report's files; returns their paths.
    """

    check: Callable[[DictConfig], None]
    write: Callable[[Any, Any, DictConfig, pathlib.Path, int], list[pathlib.Path]]


REPORTS = {
    "gaussian_mixture": Report(check_mixture_report, write_mixture_report),
    "vqvae_bridge": Report(check_vqvae_report, write_vqvae_report),
    "warmstart": Report(check_warmstart, write_warmstart),
    "reaction_diffusion": Report(check_reaction_diffusion_report, write_reaction_diffusion_report),
    "mnist_sdf": Report(check_sdf_report, write_sdf_report),
}
"""Report name (`train.report.name`) -> `Report`."""
