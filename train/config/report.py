"""Schema of `train.report`: an experiment's own report, written at the end of a run."""

import dataclasses
from typing import Optional

from .errors import Choice, ConfigError, fail, positive


class ReportName(Choice):
    """The reports of `train.reports.REPORTS`."""

    gaussian_mixture = "gaussian_mixture"  # the learned score against the exact one, and the mixture weights of samples (data.generator=gaussian_mixture_fields)
    vqvae_bridge = "vqvae_bridge"  # reconstructions, decoded samples, inpaintings and a chain of a diffusion prior over a VQ-VAE's latent maps
    warmstart = "warmstart"  # train.levels coarse then fine against the fine grid from scratch with the same grid points: held-out loss against training time (train.heldout)
    reaction_diffusion = "reaction_diffusion"  # samples against held-out simulated fields: spectra, mean, variance, channel correlation (data.generator=fitzhugh_nagumo)
    mnist_sdf = "mnist_sdf"  # samples' zero level sets, classifier metrics of their digit images and SDF measures against held-out digits (data.generator=mnist_sdf)


@dataclasses.dataclass
class ReportConfig:
    """An end-of-run report chosen by the experiment (`train.reports.REPORTS`), written to the run folder."""

    name: Optional[ReportName] = None  # the report: null (none) | gaussian_mixture | vqvae_bridge | warmstart | reaction_diffusion | mnist_sdf
    grids: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 128])  # grids n the report measures on (any, also never trained on)
    times: int = 16  # diffusion times at which the score is compared, geometrically spaced over [sde.t0, sde.t1] (from 1e-3 sde.t1 when sde.t0 is 0)
    score_samples: int = 64  # exact draws of X_t per time and grid on which the score is compared
    num_samples: int = 256  # samples drawn with the run's sampler on each grid
    batch_size: int = 128  # samples drawn at once (vmapped)
    inpaint_examples: int = 32  # vqvae_bridge: held-out examples whose central latent patch is inpainted
    inpaint_samples: int = 32  # vqvae_bridge: inpaintings per example (the patch cross-entropy's sample size)
    grid_samples: list[int] = dataclasses.field(default_factory=list)  # samples drawn on each grid of `grids`, in order (reaction_diffusion); empty: num_samples on every grid

    def check(self, where: str = "train.report") -> None:
        if not self.grids or not all(n >= 4 for n in self.grids):
            fail(f"{where}.grids", "must be a non-empty list of ints >= 4", list(self.grids))
        for field in ("times", "score_samples", "num_samples", "batch_size", "inpaint_examples", "inpaint_samples"):
            positive(f"{where}.{field}", getattr(self, field))
        if not all(n >= 2 for n in self.grid_samples):
            fail(f"{where}.grid_samples", "must be ints >= 2", list(self.grid_samples))


def require_generator(data, report: str, generator: str, why: str = "") -> None:
    """Raise a `ConfigError` unless the run's data (`cfg.data`) are the project's generated fields of
    `generator`, which the report `report` compares with (`why`, if given, says in what way)."""
    if data.name != "generated" or data.generator != generator:
        got = f"got data {data.name!r}" + (f" with generator {data.generator!r}." if data.name == "generated" else ".")
        raise ConfigError(f"train.report.name={report} needs data=generated with data.generator={generator}"
                          + (f" ({why})" if why else "") + f", {got}")
