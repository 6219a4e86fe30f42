"""Schema of `train.heldout`: the loss of held-out data on one grid, logged while a run trains."""

import dataclasses

from .errors import fail, positive
from .evaluation import Weights


@dataclasses.dataclass
class HeldoutConfig:
    """The run's loss on fixed held-out examples on one grid, with the same draws of times and noise at
    every evaluation (common random numbers), logged as `heldout` records of metrics.jsonl with the
    training time so far (`train.heldout.HeldoutLoss`)."""

    every: int = 0  # steps between evaluations (also at the start and the end); 0: never
    grid: int = 64  # grid n of the held-out fields (any the network acts on, also one never trained on)
    num: int = 256  # held-out examples evaluated: the first of data.holdout_range
    batch_size: int = 128  # examples evaluated at once (must divide num)
    seed: int = 0  # seed of the fixed draws of times and noise (the same at every evaluation)
    weights: Weights = Weights.ema  # the weights evaluated: ema (the moving average, the ones sampled) | raw

    def check(self, where: str) -> None:
        positive(f"{where}.every", self.every, 0)
        positive(f"{where}.grid", self.grid, 4)
        positive(f"{where}.num", self.num)
        positive(f"{where}.batch_size", self.batch_size)
        if self.num % self.batch_size:
            fail(f"{where}.batch_size", f"must divide {where}.num = {self.num}", self.batch_size)
        positive(f"{where}.seed", self.seed, 0)
