"""The spectral-multiplier ("FNO") prior: fitted or learnable low modes with a Matérn tail."""

from collections.abc import Sequence
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from ..custom_types import Grid
from ..grid import fourier
from ._base import AbstractPrior
from .matern import Matern


def _block_frequencies(modes: tuple[int, ...], half: bool) -> tuple[Array, ...]:
    """Frequencies of the block $|k_i| \\le m_i$ (centred; the last axis $0..m_d$ when `half`)."""
    d = len(modes)
    out = []
    for i, m in enumerate(modes):
        k = jnp.arange(0 if (half and i == d - 1) else -m, m + 1)
        out.append(k.reshape([-1 if j == i else 1 for j in range(d)]))
    return tuple(out)


class SpectralMultiplier(AbstractPrior):
    """$C^{1/2}$ is a Fourier multiplier with free positive weights $w_k$ on the low modes
    $|k_i| \\le m_i$ and the square root of a Matérn spectrum beyond them, so $C$ stays trace class.

    The weights are stored as $\\log w_k$ on the half block $k_d \\ge 0$ (the $k_d = 0$ plane is read
    symmetrically, so $\\lambda_{-k} = \\lambda_k$); they can be learned (they are ordinary array
    leaves) or fitted to data by maximum likelihood with `SpectralMultiplier.fit`, and are saved with
    the model like any other parameter.

    **Arguments:**

    - `tail`: the `Matern` prior used outside the block (and to initialise the weights).
    - `modes`: $m$, an int or one int per axis.
    - `log_weights`: optional initial $\\log w_k$ of shape `(2 m_1 + 1, ..., 2 m_{d-1} + 1, m_d + 1)`
      (centred on the non-last axes); default: the tail's own $\\log \\sqrt{\\lambda_k}$, so the prior
      starts equal to `tail`.
    - `learnable`: if False, gradients do not flow to the weights.
    """

    tail: Matern
    modes: tuple[int, ...] = eqx.field(static=True)
    log_weights: Float[Array, "..."]
    learnable: bool = eqx.field(static=True)
    degenerate: ClassVar[bool] = False
    trace_class: ClassVar[bool] = True

    def __init__(
        self,
        tail: Matern,
        modes: int | Sequence[int],
        log_weights: Float[Array, "..."] | None = None,
        learnable: bool = True,
    ):
        if not isinstance(tail, Matern):
            raise ValueError(f"`tail` must be a Matern prior, got {type(tail).__name__}.")
        self.tail = tail
        modes = (modes,) * tail.dim if isinstance(modes, int) else tuple(int(m) for m in modes)
        if len(modes) != tail.dim or any(m < 0 for m in modes):
            raise ValueError(
                f"`modes` must be a non-negative int or {tail.dim} non-negative ints, got {modes}."
            )
        self.modes = modes
        block = tuple(2 * m + 1 for m in modes[:-1]) + (modes[-1] + 1,)
        if log_weights is None:
            log_weights = jnp.log(tail.sqrt_spectrum(_block_frequencies(modes, half=True)))
            log_weights = log_weights * jnp.ones(block)
        log_weights = jnp.asarray(log_weights, dtype=jnp.float32)
        if log_weights.shape != block:
            raise ValueError(
                f"`log_weights` must have shape {block} for modes {modes}, got {log_weights.shape}."
            )
        self.log_weights = log_weights
        self.learnable = bool(learnable)

    @property
    def dim(self) -> int:
        return self.tail.dim

    def sqrt_spectrum(self, k: tuple[Real[Array, "..."], ...]) -> Float[Array, "..."]:
        k = tuple(jnp.broadcast_arrays(*(jnp.asarray(ki) for ki in k)))
        in_block = jnp.ones(k[0].shape, dtype=bool)
        for ki, m in zip(k, self.modes):
            in_block = in_block & (jnp.abs(ki) <= m)
        # Read -k where k is in the half not stored (k_d < 0, or k_d == 0 with first nonzero < 0).
        flip = k[-1] < 0
        decided = k[-1] != 0
        for ki in k[:-1]:
            flip = flip | (~decided & (ki < 0))
            decided = decided | (ki != 0)
        index = []
        for i, (ki, m) in enumerate(zip(k, self.modes)):
            kc = jnp.where(flip, -ki, ki).astype(jnp.int32)
            offset = 0 if i == self.dim - 1 else m
            index.append(jnp.clip(kc + offset, 0, self.log_weights.shape[i] - 1))
        log_w = self.log_weights if self.learnable else jax.lax.stop_gradient(self.log_weights)
        return jnp.where(in_block, jnp.exp(log_w[tuple(index)]), self.tail.sqrt_spectrum(k))

    def trace(self) -> Float[Array, ""]:
        block = _block_frequencies(self.modes, half=False)
        ones = jnp.ones(tuple(2 * m + 1 for m in self.modes))
        low = jnp.sum(self.sqrt_spectrum(block) ** 2 * ones)
        tail_low = jnp.sum(self.tail.sqrt_spectrum(block) ** 2 * ones)
        return low + self.tail.trace() - tail_low

    def min_grid(self) -> Grid:
        return tuple(2 * m + 1 for m in self.modes)

    @classmethod
    def fit(
        cls,
        samples: Float[Array, "batch c *grid"],
        tail: Matern,
        modes: int | Sequence[int],
        *,
        center: bool = True,
        learnable: bool = True,
    ) -> "SpectralMultiplier":
        """Fit the low-mode weights to data by maximum likelihood of the Gaussian spectrum.

        Under $u \\sim N(\\mu, C)$ with $C$ diagonal in Fourier, the maximum-likelihood eigenvalue of a
        mode is the mean of $|\\hat u_k - \\hat\\mu_k|^2$ over samples and channels ($\\hat \\mu$ the
        sample mean when `center`, else 0), symmetrised over $\\pm k$. The fitted prior carries the
        data's own variance on the low modes (it is not renormalised).

        **Arguments:**

        - `samples`: a batch of fields of shape `(batch, c, n_1, ..., n_d)`.
        - `tail`: the `Matern` prior used beyond the fitted modes.
        - `modes`: $m$, an int or one int per axis; the grid must hold $2 m_i + 1$ points per axis.
        - `center`: subtract the sample mean first (the MLE of the mean); needs `batch >= 2`.
        - `learnable`: whether the fitted weights stay trainable.

        **Returns:**

        The fitted `SpectralMultiplier`.
        """
        prior = cls(tail, modes, learnable=learnable)
        if samples.ndim != tail.dim + 2:
            raise ValueError(
                f"`samples` must have shape (batch, c, n_1, ..., n_{tail.dim}), got {samples.shape}."
            )
        grid = prior.check_grid(samples.shape[2:], "the grid of `samples`")
        if center and samples.shape[0] < 2:
            raise ValueError("`samples` needs at least 2 fields to fit with `center=True`.")
        u_hat = jax.vmap(fourier)(jnp.asarray(samples, jnp.float32))
        if center:
            u_hat = u_hat - jnp.mean(u_hat, axis=0)
        power = jnp.mean(jnp.abs(u_hat) ** 2, axis=(0, 1))
        # Gather the half block from the rfft layout (negative frequencies at index n + k).
        index = []
        for i, (n, m) in enumerate(zip(grid, prior.modes)):
            k = jnp.arange(0 if i == len(grid) - 1 else -m, m + 1)
            index.append((k % n).reshape([-1 if j == i else 1 for j in range(len(grid))]))
        block = power[tuple(index)]
        # Symmetrise the k_d = 0 plane: k and -k are the same real mode.
        plane = block[..., 0]
        plane = 0.5 * (plane + jnp.flip(plane, axis=tuple(range(plane.ndim))))
        block = block.at[..., 0].set(plane)
        floor = 1e-6 * prior.sqrt_spectrum(_block_frequencies(prior.modes, half=True)) ** 2
        log_weights = 0.5 * jnp.log(jnp.maximum(block, floor))
        return cls(tail, prior.modes, log_weights, learnable=learnable)
