"""Schema of an evaluation: the fields `train.evaluate` and the end of a training run share."""

import dataclasses
from typing import Optional

from .errors import Choice, fail, number, positive
from .sampler import SamplerConfig


class Weights(Choice):
    """The weights of a trained model that are sampled."""

    ema = "ema"  # the exponential moving average of the weights
    raw = "raw"  # the optimiser's last weights


@dataclasses.dataclass
class ClassifierSettings:
    """The MNIST classifier whose features the Fréchet distance uses."""

    dir: Optional[str] = None  # its folder; null: runs/classifier/<key of its settings>, trained there if missing
    steps: int = 2000  # training steps (batch 64, Adam)
    seed: int = 0  # seed of its initialisation and batches
    channels: list[int] = dataclasses.field(default_factory=lambda: [32, 64])  # convolution channels of its two blocks
    width: int = 128  # the number of its features (the penultimate layer)

    def check(self, where: str) -> None:
        positive(f"{where}.steps", self.steps)
        positive(f"{where}.seed", self.seed, 0)
        positive(f"{where}.width", self.width)
        if len(self.channels) != 2 or min(self.channels) < 1:
            fail(f"{where}.channels", "must be two positive ints", list(self.channels))


@dataclasses.dataclass
class LikelihoodSettings:
    """Bits per dimension of held-out examples under the probability-flow ODE."""

    num_digits: int = 64  # held-out examples whose bits/dim are estimated (0: skip; each is one ODE solve)
    num_probes: int = 4  # Hutchinson probes per example
    rtol: float = 1.0e-4  # relative tolerance of the likelihood ODE (Tsit5 + PID), > 0
    atol: float = 1.0e-4  # absolute tolerance of the likelihood ODE, > 0

    def check(self, where: str) -> None:
        positive(f"{where}.num_digits", self.num_digits, 0)
        positive(f"{where}.num_probes", self.num_probes)
        number(f"{where}.rtol", self.rtol, lambda v: v > 0, "a number > 0")
        number(f"{where}.atol", self.atol, lambda v: v > 0, "a number > 0")


@dataclasses.dataclass
class ElboSettings:
    """Bits per dimension of held-out examples as the ELBO of variational diffusion (any loss),
    split into its prior, diffusion and reconstruction terms."""

    num_examples: int = 256  # held-out examples whose ELBO is estimated (0: skip)
    repeats: int = 4  # independent draws of times and noise per example, averaged
    grids: list[int] = dataclasses.field(default_factory=list)  # grids besides `grid` to report it on (any n >= 4)

    def check(self, where: str) -> None:
        positive(f"{where}.num_examples", self.num_examples, 0)
        positive(f"{where}.repeats", self.repeats)
        if not all(n >= 4 for n in self.grids):
            fail(f"{where}.grids", "must be a list of ints >= 4", list(self.grids))


@dataclasses.dataclass
class EvaluationConfig:
    """How a trained model is evaluated against held-out data."""

    weights: Weights = Weights.ema  # ema (the moving average of the weights) | raw (the optimiser's last weights)
    grid: int = 32  # the grid size n the samples are compared at (and drawn on, unless sample_grid says otherwise)
    sample_grid: Optional[int] = None  # null: grid; m >= grid: samples drawn on the m-grid, restricted to grid for the metrics (power spectrum also at m)
    num_samples: int = 2000  # generated samples, >= 2
    batch_size: int = 250  # samples drawn at once
    seed: int = 0  # the samples' random key
    metrics_block_size: int = 1000  # samples per block of the pairwise metrics (memory bound)
    sliced_projections: int = 512  # random directions of the sliced Wasserstein distance
    sampler: SamplerConfig = dataclasses.field(default_factory=SamplerConfig)  # the sampler (fields of the sampler group)
    classifier: ClassifierSettings = dataclasses.field(default_factory=ClassifierSettings)  # the Fréchet classifier (MNIST data only)
    likelihood: LikelihoodSettings = dataclasses.field(default_factory=LikelihoodSettings)  # bits per dimension
    elbo: ElboSettings = dataclasses.field(default_factory=ElboSettings)  # bits per dimension as an ELBO, by term

    def check(self, where: str, t0: float, t1: float) -> None:
        """The fields under the prefix `where` (`""` for the top level of `train.evaluate`), for an
        SDE on $[t_0, t_1]$."""
        prefix = f"{where}." if where else ""
        positive(f"{prefix}grid", self.grid, 4)
        if self.sample_grid is not None and self.sample_grid < self.grid:
            fail(f"{prefix}sample_grid", f"must be null or a grid size >= grid = {self.grid}", self.sample_grid)
        positive(f"{prefix}num_samples", self.num_samples, 2)
        for field in ("batch_size", "metrics_block_size", "sliced_projections"):
            positive(f"{prefix}{field}", getattr(self, field))
        positive(f"{prefix}seed", self.seed, 0)
        self.sampler.check(f"{prefix}sampler", t0, t1, [self.grid if self.sample_grid is None else self.sample_grid])
        self.classifier.check(f"{prefix}classifier")
        self.likelihood.check(f"{prefix}likelihood")
        self.elbo.check(f"{prefix}elbo")

    def network_grids(self, where: str) -> list[tuple[str, int]]:
        """Every grid the evaluation puts the network on, with the field (under `where`) that sets it."""
        prefix = f"{where}." if where else ""
        grids = [(f"{prefix}grid", self.grid)]
        if self.sample_grid is not None:
            grids.append((f"{prefix}sample_grid", self.sample_grid))
        if self.sampler.coarse_grid is not None:
            grids.append((f"{prefix}sampler.coarse_grid", self.sampler.coarse_grid))
        if self.elbo.num_examples:
            grids += [(f"{prefix}elbo.grids[{i}]", n) for i, n in enumerate(self.elbo.grids)]
        return grids
