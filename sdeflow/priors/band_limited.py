"""A prior cut to the modes of a grid: $\\lambda_k$ of another prior on $|k_i| < m_i/2$, zero beyond."""

from collections.abc import Sequence
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from ..custom_types import Grid
from ..grid import kept_modes
from ._base import AbstractPrior


class BandLimited(AbstractPrior):
    """$\\lambda_k = \\lambda^{base}_k$ on the modes $|k_i| < m_i / 2$ that the grid `band` keeps, and
    $\\lambda_k = 0$ beyond.

    Degenerate (every mode outside the band has variance zero) and trace class (finitely many
    nonzero eigenvalues): its samples are the same band-limited functions on every grid that
    holds the band, so fields drawn from it are exact on every such grid. Used for data
    covariances whose law must be known exactly at every resolution (`GaussianMixtureOracle`).

    **Arguments:**

    - `base`: the prior whose eigenvalues are kept.
    - `band`: the grid $m$ whose kept modes are kept (one size per axis, or an int for every axis).
    """

    base: AbstractPrior
    band: Grid = eqx.field(static=True)
    degenerate: ClassVar[bool] = True
    trace_class: ClassVar[bool] = True

    def __init__(self, base: AbstractPrior, band: int | Sequence[int]):
        if not isinstance(base, AbstractPrior):
            raise ValueError(f"`base` must be a prior, got {type(base).__name__}.")
        band = (int(band),) * base.dim if isinstance(band, int) else tuple(int(m) for m in band)
        if len(band) != base.dim or any(m < 1 for m in band):
            raise ValueError(f"`band` must be a positive int or {base.dim} positive ints, got {band}.")
        self.base = base
        self.band = band

    @property
    def dim(self) -> int:
        return self.base.dim

    def sqrt_spectrum(self, k: tuple[Real[Array, "..."], ...]) -> Float[Array, "..."]:
        inside = True
        for ki, m in zip(k, self.band):
            inside = inside & (2 * jnp.abs(jnp.asarray(ki)) < m)
        return jnp.where(inside, self.base.sqrt_spectrum(k), 0.0)

    def trace(self) -> Float[Array, ""]:
        # The eigenvalues of the band, counted once each: on the band grid every mode is kept.
        lam = self.base.eigenvalues(self.band)
        k_last = jnp.arange(lam.shape[-1])
        return jnp.sum(jnp.where(k_last == 0, 1.0, 2.0) * jnp.where(kept_modes(self.band), lam, 0.0))

    def min_grid(self) -> Grid:
        return self.base.min_grid()
