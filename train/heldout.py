"""The loss of held-out data while a run trains (`train.heldout`), and the clock of training time.

`HeldoutLoss` evaluates the run's loss on the first `num` held-out examples on one grid with the
same draws of times and noise at every evaluation (common random numbers): two evaluations differ
only through the weights, so the logged curve is smooth and two runs evaluated with the same seed
are compared on the same estimate. `TrainingClock` counts the seconds of training (steps, data and
compilation), without the pauses for held-out evaluations, checkpoints and sample grids, so that
a `heldout` record says how much training time reached its loss.
"""

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Key, PRNGKeyArray, PyTree

from .config import ConfigError
from .step import value_and_statistics


def heldout_batches(
    fields: Float[np.ndarray, "num ..."], batch_size: int, seed: int
) -> tuple[Float[Array, "chunks batch ..."], Key[Array, " chunks"]]:
    """The held-out fields in chunks of `batch_size`, and one fixed key per chunk.

    **Arguments:**

    - `fields`: the held-out fields `(num, c, *grid)`; `num` a multiple of `batch_size`.
    - `batch_size`: examples per chunk.
    - `seed`: the seed of the keys (chunk `i` gets `fold_in(key(seed), i)`).

    **Returns:**

    `(chunks, keys)`: the fields `(num / batch_size, batch_size, c, *grid)` and the keys `(num / batch_size,)`.
    """
    count = len(fields) // batch_size
    chunks = jnp.asarray(fields[: count * batch_size]).reshape(count, batch_size, *fields.shape[1:])
    keys = jax.vmap(lambda i: jr.fold_in(jr.key(seed), i))(jnp.arange(count))
    return chunks, keys


class HeldoutLoss:
    """The mean of `loss_fn(parts, chunk_i, key_i)` over fixed held-out chunks and keys (one compiled program).

    **Arguments:**

    - `loss_fn`: `loss_fn(parts, x0, key) -> scalar`, the batch mean of the run's loss (`train.build.build_loss`).
    - `fields`: the held-out fields on the evaluation grid, `(num, c, *grid)`.
    - `batch_size`: examples evaluated at once (divides `num`).
    - `seed`: the seed of the fixed draws of times and noise.
    """

    def __init__(self, loss_fn: Callable[[PyTree, Array, PRNGKeyArray], Array], fields: np.ndarray,
                 batch_size: int, seed: int):
        self.chunks, self.keys = heldout_batches(fields, batch_size, seed)

        @eqx.filter_jit
        def mean_loss(parts, chunks, keys):
            def value(chunk_key):  # the loss's value, without any statistics it updates
                return value_and_statistics(loss_fn(parts, *chunk_key))[0]

            return jnp.mean(jax.lax.map(value, (chunks, keys)))

        self._mean_loss = mean_loss

    def __call__(self, parts: PyTree) -> float:
        """The held-out loss of `parts` (arrays on one device, or replicated)."""
        return float(self._mean_loss(parts, self.chunks, self.keys))


def make_heldout_loss(cfg: Any, source: Any, loss_fn: Callable) -> HeldoutLoss:
    """The `HeldoutLoss` of a run's `train.heldout` on its data `source` with its loss `loss_fn`; a
    `ConfigError` when the data hold fewer held-out examples than `train.heldout.num`."""
    h = cfg.train.heldout
    values = source.load("holdout").values
    if len(values) < h.num:
        raise ConfigError(f"train.heldout.num must be at most the {len(values)} held-out examples of the data "
                          f"(data.holdout_range), got {h.num}.")
    fields = np.asarray(source.converter(int(h.grid))(values[: h.num]), np.float32)
    return HeldoutLoss(loss_fn, fields, int(h.batch_size), int(h.seed))


class TrainingClock:
    """Seconds of training: wall-clock time that runs except inside `paused`.

    **Arguments:**

    - `seconds`: the training time already spent (a resumed run's, from its checkpoint).
    """

    def __init__(self, seconds: float = 0.0):
        self._before = float(seconds)
        self._since = time.perf_counter()

    def seconds(self) -> float:
        """The training time so far (the time of a pause counts as of its start)."""
        return self._before + (0.0 if self._since is None else time.perf_counter() - self._since)

    @contextlib.contextmanager
    def paused(self, state: PyTree = None) -> Iterator[None]:
        """Stop the clock for the block, once the work queued on `state` is done (it is training time)."""
        if self._since is None:  # already paused
            yield
            return
        jax.block_until_ready(state)
        self._before, self._since = self.seconds(), None
        try:
            yield
        finally:
            self._since = time.perf_counter()
