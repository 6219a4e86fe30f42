"""Gaussian data diffused by an SDE: the exact score, marginal law and log-density (for testing)."""

import math
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ..custom_types import Field, RealScalarLike
from ..grid import field_grid, fourier, inverse_fourier, kept_modes, rfft_frequencies
from ..priors import AbstractPrior
from ..sde import AbstractSDE


class GaussianOracle(eqx.Module):
    """Data $X_0 \\sim N(\\mu, C_{data})$ with $C_{data}$ diagonal in Fourier, diffused by `sde`.

    Then $X_t \\sim N(m \\mu + b, m^2 C_{data} + s^2 C)$, diagonal in Fourier with eigenvalues
    $v_k(t) = m^2 \\lambda^{data}_k + s^2 \\lambda_k$, and the preconditioned score is exact:
    $C \\nabla \\log p_t(x) = -C (m^2 C_{data} + s^2 C)^{-1} (x - m\\mu - b)$, i.e. the Fourier
    multiplier $-\\lambda_k / v_k(t)$. Called as `oracle(t, x)` it returns the exact
    $\\epsilon = -s\\, C \\nabla \\log p_t$, a perfect "epsilon" network.

    **Arguments:**

    - `sde`: the forward SDE.
    - `mean`: $\\mu$, a field `(c, *grid)` (the grid every method works on).
    - `covariance`: a prior whose covariance is $C_{data}$.
    """

    sde: AbstractSDE
    mean: Float[Array, "c *grid"]
    covariance: AbstractPrior

    def _grid(self, x: Field) -> tuple[int, ...]:
        grid = field_grid(x)
        if x.shape != self.mean.shape:
            raise ValueError(f"the oracle works on shape {self.mean.shape}, got {x.shape}.")
        return grid

    def variances(self, t: RealScalarLike, grid: Sequence[int]) -> Float[Array, "*rfft"]:
        """$v_k(t) = m^2 \\lambda^{data}_k + s^2 \\lambda_k$ on the `rfftn` layout of `grid`."""
        m, s = self.sde.marginal(t)
        return m**2 * self.covariance.eigenvalues(grid) + s**2 * self.sde.prior.eigenvalues(grid)

    def marginal_mean(self, t: RealScalarLike) -> Field:
        """$m(t) \\mu + b(t)$."""
        return self.sde.mean(t, self.mean)

    def score(self, t: RealScalarLike, x: Field) -> Field:
        """The exact $C \\nabla \\log p_t(x)$ (zero on modes the law does not charge)."""
        grid = self._grid(x)
        v = self.variances(t, grid)
        lam = self.sde.prior.eigenvalues(grid)
        multiplier = jnp.where(v > 0, -lam / jnp.where(v > 0, v, 1.0), 0.0)
        return inverse_fourier(fourier(x - self.marginal_mean(t)) * multiplier, grid)

    def __call__(self, t: RealScalarLike, x: Field) -> Field:
        """The exact noise prediction $\\epsilon = -s(t)\\, C \\nabla \\log p_t(x)$."""
        _, s = self.sde.marginal(t)
        return -s * self.score(t, x)

    def sample(self, key: PRNGKeyArray, t: RealScalarLike) -> Field:
        """An exact draw of $X_t$."""
        from ..priors import frequency_noise

        grid = field_grid(self.mean)
        xi = frequency_noise(key, self.mean.shape[0], grid)
        root = jnp.sqrt(jnp.where(kept_modes(grid), self.variances(t, grid), 0.0))
        return self.marginal_mean(t) + inverse_fourier(root * xi, grid)

    def log_density(self, t: RealScalarLike, x: Field) -> Float[Array, ""]:
        """The exact log-density of the point values of $X_t$ at `x`, in nats.

        As for `AbstractPrior.log_density`: the point values have covariance eigenvalues $N v_k$, and
        the density is with respect to Lebesgue measure on the span of the kept modes (the Nyquist
        components of even grids are not part of the law and are ignored).
        """
        grid = self._grid(x)
        v = self.variances(t, grid)
        kept = kept_modes(grid) & (v > 0)
        k_last = rfft_frequencies(grid)[-1]
        multiplicity = jnp.where(k_last == 0, 1.0, 2.0) * kept
        safe = jnp.where(kept, v, 1.0)
        u_hat = fourier(x - self.marginal_mean(t))
        quadratic = jnp.sum(multiplicity * jnp.abs(u_hat) ** 2 / safe)
        log_det = x.shape[0] * jnp.sum(multiplicity * jnp.log(2 * jnp.pi * math.prod(grid) * safe))
        return -0.5 * (quadratic + log_det)
