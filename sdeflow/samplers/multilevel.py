"""Coarse-to-fine sampling: the reverse dynamics on a coarse grid first, then on the target grid."""

from collections.abc import Sequence

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import PRNGKeyArray

from ..custom_types import Field, Grid, RealScalarLike
from ..grid import fourier, inverse_fourier, kept_modes, resample
from .base import AbstractSampler, SampleResult, start_shape
from .score import PreconditionedScore


class MultilevelSampler(eqx.Module):
    """Coarse-to-fine sampling: integrate the reverse-time dynamics on `coarse_grid` from $t_1$ down to
    `switch_time` $t_s$ with `coarse`, carry the state to the target grid, and go on there down to
    $t_{end}$ with `fine`.

    At $t_s$ the state is interpolated spectrally to the target grid (`sdeflow.resample`) and the modes
    the target grid keeps beyond the coarse grid's are drawn from $N(x^*, s(t_s)^2 C)$ restricted to
    those modes, $x^*$ the SDE's reference point (`AbstractSDE.terminal_mean`: zero for VP, VE and
    sub-VP, a bridge's target), as the terminal law is. That is their forward marginal at $t_s$ for
    data whose modes there are $x^*$'s. For VP, VE and sub-VP, whose $x^*$ is zero, it is exact when
    the data law is band-limited to the coarse grid's modes ($|k_i| < m_i/2$): the prior and the SDE
    act mode by mode, so under the forward process the coarse modes evolve as on the coarse grid and
    the others are independent Gaussians that carry no data; with the exact score the result has the
    law of sampling on the target grid throughout. For a bridge whose target is the data's mean
    (`sde.target` fitted to the data), the new modes have the forward marginal's mean; a target with
    modes the data lacks puts them there. With a learned network it uses the network on the target
    grid only below $t_s$, where the coarse shape of the sample is already decided; the network sees
    the target grid's noise and details there.

    On the coarse grid itself both phases run on that grid (the same time steps as on every grid).
    Conditioning by replacement and chains are not offered here.

    **Arguments:**

    - `coarse`: the sampler from $t_1$ down to $t_s$; its `denoise` must be False.
    - `fine`: the sampler from $t_s$ down to $t_{end}$ (its `denoise` acts at $t_{end}$).
    - `coarse_grid`: the grid of the first phase (every target grid must be at least as fine).
    - `switch_time`: $t_s$, strictly between the SDE's $t_0$ and $t_1$.
    """

    coarse: AbstractSampler
    fine: AbstractSampler
    coarse_grid: Grid = eqx.field(static=True, converter=lambda g: tuple(int(n) for n in g))
    switch_time: float = eqx.field(static=True, converter=float)

    def __check_init__(self):
        if self.coarse.denoise:
            raise ValueError("the coarse sampler of a MultilevelSampler must not denoise (denoise=False).")
        if not self.coarse_grid or min(self.coarse_grid) < 2:
            raise ValueError(f"`coarse_grid` must hold grid sizes >= 2, got {self.coarse_grid}.")
        if not 0.0 < self.switch_time:
            raise ValueError(f"`switch_time` must be a positive time, got {self.switch_time}.")

    @property
    def denoise(self) -> bool:
        return self.fine.denoise

    def sample(
        self,
        score: PreconditionedScore,
        key: PRNGKeyArray,
        shape: Sequence[int] | None = None,
        *,
        x_start: Field | None = None,
        t_end: RealScalarLike | None = None,
        throw: bool = True,
    ) -> SampleResult:
        """Draw one sample on the grid of `shape` (or of `x_start`).

        **Arguments:**

        - `score`: the model as a `PreconditionedScore`.
        - `key`: a JAX random key.
        - `shape`: `(c, n_1, ..., n_d)`, a grid at least as fine as `coarse_grid` on every axis.
        - `x_start`: a state at $t_1$ on the target grid; the coarse phase starts from its restriction
          to `coarse_grid` (`sdeflow.resample`).
        - `t_end`: the final time, default the SDE's $t_0$; below `switch_time`.
        - `throw`: as `AbstractSampler.sample`'s (`False`: read the result's `result`).

        **Returns:**

        A `SampleResult` (no chain) whose counts add up both phases.
        """
        sde = score.sde
        shape = start_shape(shape, x_start)
        grid = shape[1:]
        if len(grid) != len(self.coarse_grid) or any(n < m for n, m in zip(grid, self.coarse_grid)):
            raise ValueError(
                f"the target grid {grid} must have {len(self.coarse_grid)} axes, each at least the "
                f"coarse grid's {self.coarse_grid}."
            )
        if not sde.t0 < self.switch_time < sde.t1:
            raise ValueError(
                f"`switch_time` {self.switch_time} must lie strictly between the SDE's t0 = {sde.t0} "
                f"and t1 = {sde.t1}."
            )
        if isinstance(t_end, (int, float)) and not t_end < self.switch_time:
            raise ValueError(f"`t_end` {t_end} must be below `switch_time` {self.switch_time}.")
        key_coarse, key_fine, key_modes = jr.split(key, 3)
        coarse_shape = (shape[0], *self.coarse_grid)
        start = None if x_start is None else resample(x_start, self.coarse_grid)
        first = self.coarse.sample(
            score, key_coarse, coarse_shape, x_start=start, t_end=self.switch_time, throw=throw
        )
        x = first.samples
        if grid != self.coarse_grid:
            x = resample(x, grid) + self._new_modes(sde, key_modes, shape)
        second = self.fine.sample(
            score, key_fine, x_start=x, t_start=self.switch_time, t_end=t_end, throw=throw
        )
        return SampleResult(
            second.samples,
            first.num_evaluations + second.num_evaluations,
            first.num_steps + second.num_steps,
            result=diffrax.RESULTS.where(
                first.result == diffrax.RESULTS.successful, second.result, first.result
            ),
        )

    def _new_modes(self, sde, key: PRNGKeyArray, shape: tuple[int, ...]) -> Field:
        """The forward marginal at $t_s$ from the SDE's reference point (the centre of its terminal
        law: zero, or a bridge's target, which the mean map leaves in place) on the modes of the
        target grid beyond the coarse grid's (zero on the others)."""
        grid = shape[1:]
        _, s = sde.marginal(self.switch_time)
        noise = sde.prior.from_white_noise(jr.normal(key, shape, jnp.float32))
        y = sde.mean(self.switch_time, sde.terminal_mean(noise)) + s * noise
        mask = kept_modes(grid) & ~kept_modes(grid, self.coarse_grid)
        return inverse_fourier(fourier(y) * mask, grid)
