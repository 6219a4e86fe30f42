"""A mixture of Gaussian fields diffused by an SDE: the exact score at every time and on every grid."""

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..custom_types import Field, Grid, RealScalarLike
from ..grid import field_grid, fourier, inverse_fourier, kept_modes, resample, rfft_frequencies
from ..priors import AbstractPrior, frequency_noise
from ..sde import AbstractSDE


class GaussianMixtureOracle(eqx.Module):
    """Data $X_0 \\sim \\sum_j \\pi_j N(\\mu_j, C_{data})$ with $C_{data}$ diagonal in Fourier,
    diffused by `sde`; every quantity is per-mode arithmetic in Fourier, with no matrix inverse.

    The transition $X_t | X_0 \\sim N(m X_0 + b, s^2 C)$ maps each component to a Gaussian, so
    $X_t \\sim \\sum_j \\pi_j N(m \\mu_j + b, V_t)$ with $V_t$ diagonal in Fourier, eigenvalues
    $v_k(t) = m^2 \\lambda^{data}_k + s^2 \\lambda_k$. With $d_j = x - m \\mu_j - b$ and the
    responsibilities
    $r_j(x) \\propto \\pi_j \\exp(-\\frac12 \\sum_k |\\hat d_{j,k}|^2 / v_k)$ (the components share
    $V_t$, so their normalising constants cancel), the preconditioned score is
    $C \\nabla \\log p_t(x) = -\\sum_j r_j(x)\\, C V_t^{-1} d_j$, the Fourier multiplier
    $-\\lambda_k / v_k$ applied to $\\sum_j r_j d_j$.

    Modes with $v_k = 0$ (a degenerate prior and data without variance there, or modes a
    band-limited data covariance leaves empty under a degenerate prior) carry no density: they are
    left out of the responsibilities and of the log-density, and the score is zero there (as is
    $\\lambda_k$). On modes where $\\lambda_k = 0 < v_k$ the score is zero too, since $C$ kills it.

    The means are fields on one grid, resampled spectrally to the grid of each call; for means
    band-limited to that grid (e.g. a few low modes) every grid sees the same functions, so the
    score of a band-limited $x$ is the same function on every grid that holds it.

    **Arguments:**

    - `sde`: the forward SDE (its prior is $C$).
    - `weights`: $\\pi_j$, positive, summing to one, shape `(J,)`.
    - `means`: $\\mu_j$, fields of shape `(J, c, *grid)`.
    - `covariance`: a prior whose covariance is $C_{data}$ (shared by the components).
    """

    sde: AbstractSDE
    weights: Float[Array, " J"]
    means: Float[Array, "J c *grid"]
    covariance: AbstractPrior

    def __init__(
        self,
        sde: AbstractSDE,
        weights: Float[Array, "..."] | Sequence[float],
        means: Float[Array, "..."],
        covariance: AbstractPrior,
    ):
        weights = jnp.asarray(weights, jnp.float32)
        means = jnp.asarray(means, jnp.float32)
        if weights.ndim != 1 or weights.shape[0] < 1 or not bool(jnp.all(weights > 0)):
            raise ValueError(f"`weights` must be a non-empty vector of positive numbers, got {weights}.")
        if abs(float(jnp.sum(weights)) - 1) > 1e-5:
            raise ValueError(f"`weights` must sum to one, got sum {float(jnp.sum(weights))}.")
        if means.ndim != sde.prior.dim + 2 or means.shape[0] != weights.shape[0]:
            raise ValueError(
                f"`means` must have shape (J={weights.shape[0]}, c, n_1, ..., n_{sde.prior.dim}), "
                f"got {means.shape}."
            )
        if covariance.dim != sde.prior.dim:
            raise ValueError(
                f"`covariance` lives on the {covariance.dim}-d torus, the SDE's prior on the "
                f"{sde.prior.dim}-d one."
            )
        self.sde = sde
        self.weights = weights
        self.means = means
        self.covariance = covariance

    def _check(self, x: Field) -> Grid:
        grid = field_grid(x)
        if x.shape[0] != self.means.shape[1] or len(grid) != self.sde.prior.dim:
            raise ValueError(
                f"`x` must have shape ({self.means.shape[1]}, n_1, ..., n_{self.sde.prior.dim}), got {x.shape}."
            )
        return grid

    def means_on(self, grid: Sequence[int]) -> Float[Array, "J c *grid"]:
        """The means $\\mu_j$ resampled spectrally to `grid`."""
        return jax.vmap(lambda mu: resample(mu, tuple(grid)))(self.means)

    def variances(self, t: RealScalarLike, grid: Sequence[int]) -> Float[Array, "*rfft"]:
        """$v_k(t) = m^2 \\lambda^{data}_k + s^2 \\lambda_k$ on the `rfftn` layout of `grid`, zero
        on the modes the grid does not keep."""
        m, s = self.sde.marginal(t)
        v = m**2 * self.covariance.eigenvalues(grid) + s**2 * self.sde.prior.eigenvalues(grid)
        return jnp.where(kept_modes(grid), v, 0.0)

    def _residuals(self, t: RealScalarLike, x: Field):
        """$\\hat d_j$ of every component, the charged-mode mask, $v$ and the mode multiplicities."""
        grid = self._check(x)
        centres = jax.vmap(lambda mu: self.sde.mean(t, mu))(self.means_on(grid))
        d_hat = jax.vmap(fourier)(x[None] - centres)
        v = self.variances(t, grid)
        charged = v > 0
        multiplicity = jnp.where(rfft_frequencies(grid)[-1] == 0, 1.0, 2.0) * charged
        return grid, d_hat, v, charged, multiplicity

    def _log_components(self, t: RealScalarLike, x: Field):
        grid, d_hat, v, charged, multiplicity = self._residuals(t, x)
        safe = jnp.where(charged, v, 1.0)
        axes = tuple(range(1, d_hat.ndim))
        quadratic = jnp.sum(multiplicity * jnp.abs(d_hat) ** 2 / safe, axis=axes)
        return jnp.log(self.weights) - 0.5 * quadratic, (grid, d_hat, v, charged, multiplicity, safe)

    def responsibilities(self, t: RealScalarLike, x: Field) -> Float[Array, " J"]:
        """$r_j(x) = P(\\text{component } j \\mid X_t = x)$.

        **Arguments:**

        - `t`: the time.
        - `x`: one field `(c, *grid)`.

        **Returns:**

        The posterior weights of the components, shape `(J,)`.
        """
        log_joint, _ = self._log_components(t, x)
        return jax.nn.softmax(log_joint)

    def score(self, t: RealScalarLike, x: Field) -> Field:
        """The exact $C \\nabla \\log p_t(x)$ on the grid of `x` (zero on modes the law does not charge).

        **Arguments:**

        - `t`: the time.
        - `x`: one field `(c, *grid)`.

        **Returns:**

        A field of the shape of `x`.
        """
        log_joint, (grid, d_hat, v, charged, _, safe) = self._log_components(t, x)
        r = jax.nn.softmax(log_joint)
        lam = self.sde.prior.eigenvalues(grid)
        multiplier = jnp.where(charged, -lam / safe, 0.0)
        mixed = jnp.tensordot(r.astype(d_hat.dtype), d_hat, axes=1)
        return inverse_fourier(mixed * multiplier, grid).astype(x.dtype)

    def __call__(self, t: RealScalarLike, x: Field) -> Field:
        """The exact noise prediction $\\epsilon = -s(t)\\, C \\nabla \\log p_t(x)$ (an "epsilon" network)."""
        _, s = self.sde.marginal(t)
        return -s * self.score(t, x)

    def log_density(self, t: RealScalarLike, x: Field) -> Float[Array, ""]:
        """The exact log-density of the point values of $X_t$ at `x`, in nats.

        Each component's density is that of `GaussianOracle.log_density` (point values with
        covariance eigenvalues $N v_k$, with respect to Lebesgue measure on the span of the charged
        modes); the mixture's is their $\\pi$-weighted sum.
        """
        log_joint, (grid, _, _, _, multiplicity, safe) = self._log_components(t, x)
        log_det = self.means.shape[1] * jnp.sum(multiplicity * jnp.log(2 * jnp.pi * math.prod(grid) * safe))
        return jax.nn.logsumexp(log_joint) - 0.5 * log_det

    def sample(
        self, key: PRNGKeyArray, t: RealScalarLike, grid: Sequence[int]
    ) -> tuple[Field, Array]:
        """An exact draw of $X_t$ on `grid`, with the component it came from.

        **Arguments:**

        - `key`: a JAX random key.
        - `t`: the time (the data law itself at $t = 0$ when $m(0) = 1$, $s(0) = 0$).
        - `grid`: the spatial grid.

        **Returns:**

        `(x, j)`: a field `(c, *grid)` and the index of its component.
        """
        grid = tuple(int(n) for n in grid)
        pick, noise = jr.split(key)
        j = jr.categorical(pick, jnp.log(self.weights))
        centre = self.sde.mean(t, self.means_on(grid)[j])
        xi = frequency_noise(noise, self.means.shape[1], grid)
        return centre + inverse_fourier(jnp.sqrt(self.variances(t, grid)) * xi, grid), j
