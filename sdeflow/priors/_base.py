"""The abstract Gaussian prior $N(0, C)$ with $C$ diagonal in the Fourier basis."""

import abc
import math
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, Real

from ..custom_types import Field, Grid
from ..grid import field_grid, fourier, inverse_fourier, kept_modes, rfft_frequencies
from ._noise import frequency_noise


def check_trace_class(s: float, dim: int, name: str = "s") -> float:
    s = float(s)
    if not s > dim / 2:
        raise ValueError(
            f"`{name}` must exceed d/2 = {dim / 2} for a trace-class covariance in d = {dim} "
            f"dimensions (eigenvalues ~ |k|^(-2s) must be summable), got {name}={s}."
        )
    return s


def check_float32_spectrum(scale: float, base: float, s: float, what: str) -> None:
    """Raise a `ValueError` unless the largest eigenvalue's square root $\\sqrt{a}\\, b^{-s/2}$,
    computed as the priors compute it in float32 ($a$ the scale, $b$ the base of the power at the
    lowest charged mode), is a positive finite number: a large `s` overflows the scale."""
    import numpy as np

    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        root = np.sqrt(np.float32(scale)) * np.float32(base) ** np.float32(-s / 2)
    if not (np.isfinite(root) and root > 0):
        raise ValueError(
            f"{what}: s = {s} makes the spectrum overflow float32 (its normalising scale is {scale:.3g}); "
            "use a smaller `s`."
        )


def check_dim(dim: int) -> int:
    if int(dim) not in (1, 2, 3):
        raise ValueError(f"`dim` must be 1, 2 or 3 (the dimension of the torus), got {dim}.")
    return int(dim)


class AbstractPrior(eqx.Module):
    """A centred Gaussian measure $N(0, C)$ on functions $\\mathbb{T}^d \\to \\mathbb{R}^c$.

    $C e_k = \\lambda_k e_k$ for the Fourier modes $e_k(x) = e^{2\\pi i k \\cdot x}$, with $\\lambda_k$ a
    function of the physical frequency $k$ only; multi-channel fields use the same operator per
    channel. Subclasses give $\\sqrt{\\lambda_k}$ (`sqrt_spectrum`), the trace and the smallest grid
    they fit on; everything else (sampling, $C^{\\pm 1/2}$, $C$, log-density) is defined here.

    On an $n$-grid the prior keeps the modes $|k_i| < n_i / 2$ (`sdeflow.kept_modes`): a sample is
    $u = \\sum_{|k_i| < n_i/2} \\sqrt{\\lambda_k} \\xi_k e_k$, so its pointwise variance is the sum of
    the kept eigenvalues and converges to $\\operatorname{tr} C$ as the grid is refined.
    """

    dim: eqx.AbstractVar[int]
    degenerate: eqx.AbstractClassVar[bool]
    trace_class: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def sqrt_spectrum(self, k: tuple[Real[Array, "..."], ...]) -> Float[Array, "..."]:
        """$\\sqrt{\\lambda_k}$ at physical frequencies `k` (one broadcastable array per axis)."""

    @abc.abstractmethod
    def trace(self) -> Float[Array, ""]:
        """$\\operatorname{tr} C = \\sum_{k \\in \\mathbb{Z}^d} \\lambda_k$, the pointwise variance at
        infinite resolution (infinite for white noise)."""

    @abc.abstractmethod
    def min_grid(self) -> Grid:
        """The smallest grid on which every mode the prior fixes is represented."""

    # -- checks ------------------------------------------------------------------------------

    def check_grid(self, grid: Sequence[int], name: str = "grid") -> Grid:
        """Check that `grid` has `dim` axes and holds `min_grid()`; return it as a tuple."""
        grid = tuple(int(n) for n in grid)
        if len(grid) != self.dim:
            raise ValueError(
                f"`{name}` {grid} has {len(grid)} spatial axes but the prior {type(self).__name__} is "
                f"defined on the {self.dim}-dimensional torus."
            )
        smallest = self.min_grid()
        if any(n < m for n, m in zip(grid, smallest)):
            raise ValueError(
                f"`{name}` {grid} is smaller than the grid {smallest} needed for the modes fixed by "
                f"{type(self).__name__}; sample on a finer grid."
            )
        return grid

    def _field_grid(self, u: Array, name: str = "u") -> Grid:
        return self.check_grid(field_grid(u, name), f"the grid of `{name}`")

    # -- spectra -------------------------------------------------------------------------------

    def sqrt_eigenvalues(self, grid: Sequence[int]) -> Float[Array, "*rfft"]:
        """$\\sqrt{\\lambda_k}$ on the `rfftn` layout of `grid`, zero on the modes the grid does not keep.

        **Arguments:**

        - `grid`: the spatial shape `(n_1, ..., n_d)`.

        **Returns:**

        A real array of shape `rfft_shape(grid)`.
        """
        grid = self.check_grid(grid)
        root = self.sqrt_spectrum(rfft_frequencies(grid))
        return jnp.where(kept_modes(grid), root, 0.0)

    def eigenvalues(self, grid: Sequence[int]) -> Float[Array, "*rfft"]:
        """$\\lambda_k$ on the `rfftn` layout of `grid`, zero on the modes the grid does not keep.

        **Arguments:**

        - `grid`: the spatial shape `(n_1, ..., n_d)`.

        **Returns:**

        A real array of shape `rfft_shape(grid)`.
        """
        return self.sqrt_eigenvalues(grid) ** 2

    def _multiply(self, u: Field, multiplier: Array) -> Field:
        grid = field_grid(u)
        return inverse_fourier(fourier(u) * multiplier, grid).astype(u.dtype)

    # -- operators -----------------------------------------------------------------------------

    def apply_sqrt(self, u: Field) -> Field:
        """$C^{1/2} u$ on the grid of `u` (modes the grid does not keep are set to zero).

        **Arguments:**

        - `u`: one field of shape `(c, n_1, ..., n_d)`.

        **Returns:**

        A field of the same shape.
        """
        return self._multiply(u, self.sqrt_eigenvalues(self._field_grid(u)))

    def apply(self, u: Field) -> Field:
        """$C u$ on the grid of `u` (modes the grid does not keep are set to zero).

        **Arguments:**

        - `u`: one field of shape `(c, n_1, ..., n_d)`.

        **Returns:**

        A field of the same shape.
        """
        return self._multiply(u, self.eigenvalues(self._field_grid(u)))

    def require_non_degenerate(self, what: str):
        """Raise a `ValueError` if the prior is degenerate (`degenerate`: some eigenvalue is zero),
        saying that `what` (a quantity that needs $C^{-1}$, e.g. a log-density) does not exist.

        **Arguments:**

        - `what`: the quantity asked for, named in the message.
        """
        if self.degenerate:
            raise ValueError(
                f"{type(self).__name__} is degenerate (some eigenvalue is zero, e.g. the mean mode), "
                f"so {what} does not exist; use a Matern prior or a combination with one."
            )

    def apply_inv_sqrt(self, u: Field) -> Field:
        """$C^{-1/2} u$ on the grid of `u`, on the kept modes (the pseudo-inverse on the grid).

        **Arguments:**

        - `u`: one field of shape `(c, n_1, ..., n_d)`.

        **Returns:**

        A field of the same shape. Raises for a degenerate prior.
        """
        self.require_non_degenerate("C^(-1/2)")
        root = self.sqrt_eigenvalues(self._field_grid(u))
        return self._multiply(u, jnp.where(root > 0, 1.0 / jnp.where(root > 0, root, 1.0), 0.0))

    def from_white_noise(self, w: Field) -> Field:
        """$\\sqrt N C^{1/2} w$: unit-variance point noise $w \\sim N(0, I)$ on an $N$-point grid to a
        draw of $N(0, C)$ (the law of `sample`).

        The cylindrical Wiener process on an $N$-point grid has point variance $N t$, so
        this is also the map from its increments to those of $C^{1/2} W$.

        **Arguments:**

        - `w`: one field of shape `(c, n_1, ..., n_d)`.

        **Returns:**

        A field of the same shape.
        """
        return math.sqrt(math.prod(self._field_grid(w, "w"))) * self.apply_sqrt(w)

    def cameron_martin_norm2(self, v: Field) -> Float[Array, ""]:
        """$\\sum_k |\\hat v_k|^2 / \\lambda_k$ over every mode the grid keeps with $\\lambda_k > 0$ (each of $k$,
        $-k$ once), summed over channels.

        It is $v^T \\Sigma^{-1} v$ for the covariance $\\Sigma$ of the point values of a sample (eigenvalues
        $N \\lambda_k$), with the pseudo-inverse on modes the prior does not charge, so it also serves
        degenerate priors. A sample of the prior has it close to the number of charged modes.

        **Arguments:**

        - `v`: one field of shape `(c, n_1, ..., n_d)`.

        **Returns:**

        A scalar.
        """
        grid = self._field_grid(v, "v")
        lam = self.eigenvalues(grid)
        k_last = rfft_frequencies(grid)[-1]
        # rfftn holds k and -k once for 0 < k_d: count those bins twice.
        weight = jnp.where(k_last == 0, 1.0, 2.0) / jnp.where(lam > 0, lam, 1.0)
        return jnp.sum(jnp.where(lam > 0, weight, 0.0) * jnp.abs(fourier(v)) ** 2)

    # -- sampling and density ------------------------------------------------------------------

    def sample(self, key: PRNGKeyArray, shape: Sequence[int]) -> Field:
        """Draw one field $u \\sim N(0, C)$ on a grid.

        The same key gives the same function at every resolution: restricting a sample drawn on a
        finer grid gives exactly the sample drawn on the coarser one.

        **Arguments:**

        - `key`: a JAX random key.
        - `shape`: `(channels, n_1, ..., n_d)`.

        **Returns:**

        A float32 array of shape `shape`.
        """
        shape = tuple(int(n) for n in shape)
        if len(shape) != self.dim + 1 or shape[0] < 1:
            raise ValueError(
                f"`shape` must be (channels, n_1, ..., n_{self.dim}) for a prior on the {self.dim}-d "
                f"torus, got {shape}."
            )
        grid = self.check_grid(shape[1:], "shape")
        xi = frequency_noise(key, shape[0], grid)
        return inverse_fourier(self.sqrt_eigenvalues(grid) * xi, grid).astype(jnp.float32)

    def log_density(self, u: Field) -> Float[Array, ""]:
        """Log-density of the grid marginal of $N(0, C)$ at the point values `u`.

        With $N$ grid points and $K$ the kept modes, the point values have covariance with eigenvalues
        $N \\lambda_k$, so
        $\\log p(u) = -\\frac12 \\sum_{k \\in K} |\\hat u_k|^2 / \\lambda_k
        - \\frac12 \\sum_{k \\in K} \\log(2 \\pi N \\lambda_k)$ per channel, with respect to Lebesgue
        measure on the span of the kept modes (all of $\\mathbb{R}^N$ on odd grids; on even grids the
        Nyquist components are not part of the law and are ignored).

        **Arguments:**

        - `u`: one field of shape `(c, n_1, ..., n_d)`.

        **Returns:**

        The log-density in nats, a scalar. Raises for a degenerate prior.
        """
        self.require_non_degenerate("the log-density")
        grid = self._field_grid(u)
        kept = kept_modes(grid)
        multiplicity = jnp.where(rfft_frequencies(grid)[-1] == 0, 1.0, 2.0) * kept
        safe = jnp.where(kept, self.eigenvalues(grid), 1.0)
        log_det = u.shape[0] * jnp.sum(multiplicity * jnp.log(2 * jnp.pi * math.prod(grid) * safe))
        return -0.5 * (self.cameron_martin_norm2(u) + log_det)
