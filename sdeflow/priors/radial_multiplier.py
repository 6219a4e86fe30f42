"""The radial spectral-multiplier ("FNO") prior: one free weight per shell of low modes, a Matérn tail."""

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from ..custom_types import Grid
from ..grid import fourier, kept_modes, rfft_frequencies
from ._base import AbstractPrior
from .matern import Matern


def _shell(k: tuple[Real[Array, "..."], ...]) -> Array:
    """$\\operatorname{round}(|k|)$ (no ties: $|k|^2$ is an integer, never $(r + 1/2)^2$)."""
    k2 = sum(jnp.asarray(ki, jnp.float32) ** 2 for ki in k)
    return jnp.round(jnp.sqrt(k2)).astype(jnp.int32)


class RadialMultiplier(AbstractPrior):
    """$C^{1/2}$ is a Fourier multiplier with a free positive weight $w_r$ on each shell
    $r = \\operatorname{round}(|k|) \\le R$ and the square root of a Matérn spectrum beyond:
    $\\sqrt{\\lambda_k} = w_{\\operatorname{round}(|k|)}$ for $\\operatorname{round}(|k|) \\le R$,
    $\\sqrt{\\lambda^{tail}_k}$ otherwise.

    Finitely many free weights and a trace-class tail keep $C$ trace class; the spectrum is a
    function of the physical frequency only, so the prior is defined on every grid (a grid that
    holds fewer shells keeps the ones it holds). Being radial, it is isotropic, as the data's
    spectrum estimated from a finite sample is not. The weights are stored as $\\log w_r$, ordinary
    array leaves: they can be learned with a network (`learnable`), fitted to data by maximum
    likelihood (`RadialMultiplier.fit`), and are saved with the model.

    **Arguments:**

    - `tail`: the `Matern` prior used beyond the shells (and to initialise the weights).
    - `radius`: $R \\ge 0$, the last shell with its own weight.
    - `log_weights`: optional initial $\\log w_r$, shape `(R + 1,)`; default: the tail's own
      $\\log \\sqrt{\\lambda}$ at $|k| = r$, so that the prior starts close to `tail`.
    - `learnable`: if False, gradients do not flow to the weights.
    """

    tail: Matern
    radius: int = eqx.field(static=True)
    log_weights: Float[Array, " shells"]
    learnable: bool = eqx.field(static=True)
    degenerate: ClassVar[bool] = False
    trace_class: ClassVar[bool] = True

    def __init__(
        self,
        tail: Matern,
        radius: int,
        log_weights: Float[Array, "..."] | None = None,
        learnable: bool = True,
    ):
        if not isinstance(tail, Matern):
            raise ValueError(f"`tail` must be a Matern prior, got {type(tail).__name__}.")
        if isinstance(radius, bool) or int(radius) != radius or radius < 0:
            raise ValueError(f"`radius` must be an int >= 0, got {radius!r}.")
        self.tail = tail
        self.radius = int(radius)
        if log_weights is None:
            r = jnp.arange(self.radius + 1.0)
            log_weights = jnp.log(tail.sqrt_spectrum((r,) + (jnp.zeros_like(r),) * (tail.dim - 1)))
        log_weights = jnp.asarray(log_weights, jnp.float32)
        if log_weights.shape != (self.radius + 1,):
            raise ValueError(f"`log_weights` must have shape ({self.radius + 1},), got {log_weights.shape}.")
        self.log_weights = log_weights
        self.learnable = bool(learnable)

    @property
    def dim(self) -> int:
        return self.tail.dim

    def sqrt_spectrum(self, k: tuple[Real[Array, "..."], ...]) -> Float[Array, "..."]:
        shell = _shell(k)
        log_w = self.log_weights if self.learnable else jax.lax.stop_gradient(self.log_weights)
        low = jnp.exp(log_w[jnp.clip(shell, 0, self.radius)])
        return jnp.where(shell <= self.radius, low, self.tail.sqrt_spectrum(k))

    def trace(self) -> Float[Array, ""]:
        # The shells lie in the box |k_i| <= R: there the free weights replace the tail's values.
        k = jnp.arange(-self.radius, self.radius + 1)
        ks = tuple(k.reshape([-1 if i == j else 1 for j in range(self.dim)]) for i in range(self.dim))
        inside = _shell(ks) <= self.radius
        ones = jnp.ones((2 * self.radius + 1,) * self.dim)
        low = jnp.sum(jnp.where(inside, self.sqrt_spectrum(ks) ** 2 - self.tail.sqrt_spectrum(ks) ** 2, 0.0) * ones)
        return self.tail.trace() + low

    def min_grid(self) -> Grid:
        return (1,) * self.dim

    @classmethod
    def fit(
        cls,
        samples: Float[Array, "batch c *grid"],
        tail: Matern,
        radius: int,
        *,
        center: bool = True,
        learnable: bool = True,
        floor: float = 1e-6,
    ) -> "RadialMultiplier":
        """Fit the shell weights and the tail's amplitude to data by maximum likelihood.

        The model: the fields are $N(\\mu, C)$ with $C$ diagonal in Fourier, $\\lambda_k = w_r^2$ on
        shell $r = \\operatorname{round}(|k|) \\le R$ and $\\lambda_k = a\\, \\lambda^{tail}_k$ beyond,
        with $w_0, \\dots, w_R$ and $a$ free ($s$ and $\\tau$ of the tail fixed). Each Fourier
        coefficient $\\hat u_k - \\hat \\mu_k$ is an independent Gaussian with $E|\\cdot|^2 = \\lambda_k$
        (complex for $k \\ne -k$, a pair with its conjugate; real for $k = -k$), so the log-likelihood
        separates over the free parameters, and setting its derivatives to zero gives:

        - $w_r^2$ = the mean of $|\\hat u_k - \\hat\\mu_k|^2$ over every sample, channel and lattice
          mode $k$ of shell $r$ that the grid keeps (each of $k$ and $-k$ counted: a complex pair
          carries two real degrees of freedom, a real mode one);
        - $a$ = the same mean of $|\\hat u_k - \\hat\\mu_k|^2 / \\lambda^{tail}_k$ over the kept
          modes beyond shell $R$ (unchanged when the grid keeps none).

        $\\hat\\mu$ is the sample mean when `center` (the mean's own MLE, so the variances are the
        biased, divide-by-$B$ estimates), else 0. Every estimate is at least `floor` times the
        tail's eigenvalue there (`floor` times the tail's trace for $a$), which keeps the prior
        non-degenerate on modes where the data have no variance. The fit is arithmetic on the data
        alone: the same data give the same prior.

        **Arguments:**

        - `samples`: a batch of fields of shape `(batch, c, n_1, ..., n_d)`; the grid must keep
          every mode of the shells, $n_i \\ge 2R + 1$.
        - `tail`: the `Matern` prior whose shape ($s$, $\\tau$) the tail keeps.
        - `radius`: $R$.
        - `center`: subtract the sample mean first; needs `batch >= 2`.
        - `learnable`: whether the fitted weights stay trainable.
        - `floor`: the relative floor of the estimates, > 0.

        **Returns:**

        The fitted `RadialMultiplier`.
        """
        prior = cls(tail, radius, learnable=learnable)
        if samples.ndim != tail.dim + 2:
            raise ValueError(f"`samples` must have shape (batch, c, n_1, ..., n_{tail.dim}), got {samples.shape}.")
        grid = tuple(int(n) for n in samples.shape[2:])
        if any(n < 2 * prior.radius + 1 for n in grid):
            raise ValueError(
                f"the grid {grid} of `samples` must keep every mode of the shells up to radius "
                f"{prior.radius}: at least {2 * prior.radius + 1} points per axis."
            )
        if center and samples.shape[0] < 2:
            raise ValueError("`samples` needs at least 2 fields to fit with `center=True`.")
        u_hat = jax.vmap(fourier)(jnp.asarray(samples, jnp.float32))
        if center:
            u_hat = u_hat - jnp.mean(u_hat, axis=0)
        power = jnp.mean(jnp.abs(u_hat) ** 2, axis=(0, 1))
        ks = rfft_frequencies(grid)
        count = jnp.where(ks[-1] == 0, 1.0, 2.0) * kept_modes(grid)  # lattice modes per rfft bin
        shell = _shell(ks)
        shells = jnp.arange(prior.radius + 1).reshape((-1,) + (1,) * len(grid))
        member = (shell[None] == shells) * count
        variance = jnp.sum(member * power, axis=tuple(range(1, len(grid) + 1))) / jnp.sum(
            member, axis=tuple(range(1, len(grid) + 1))
        )
        beyond = (shell > prior.radius) * count
        tail_lambda = tail.sqrt_spectrum(ks) ** 2
        if float(jnp.sum(beyond)) > 0:
            amplitude = float(jnp.sum(beyond * power / tail_lambda) / jnp.sum(beyond))
        else:
            amplitude = 1.0
        amplitude = max(amplitude, floor * float(tail.trace()))
        fitted_tail = Matern(tail.dim, s=tail.s, tau=tail.tau, variance=tail.variance * amplitude)
        r = jnp.arange(prior.radius + 1.0)
        tail_at_r = fitted_tail.sqrt_spectrum((r,) + (jnp.zeros_like(r),) * (tail.dim - 1)) ** 2
        variance = jnp.maximum(variance, floor * tail_at_r)
        if not bool(jnp.all(jnp.isfinite(variance))) or not math.isfinite(amplitude):
            raise ValueError("`samples` hold non-finite values; the spectrum cannot be fitted.")
        return cls(fitted_tail, prior.radius, 0.5 * jnp.log(variance), learnable=learnable)
