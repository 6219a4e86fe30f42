"""The Laplacian prior $C \\propto (-\\Delta)^{-s}$, mean mode excluded."""

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from ..checks import check_positive
from ..custom_types import Grid
from ._base import AbstractPrior, check_dim, check_float32_spectrum, check_trace_class
from ._lattice import radial_lattice_sum


class Laplacian(AbstractPrior):
    """$\\lambda_k = a (4\\pi^2 |k|^2)^{-s}$ for $k \\ne 0$ and $\\lambda_0 = 0$.

    Degenerate: the mean mode has zero variance, so samples have zero mean and there is no
    log-density or $C^{-1/2}$ (use `Matern` for those). Trace class for $s > d/2$.

    **Arguments:**

    - `dim`: the dimension $d$ of the torus.
    - `s`: the smoothness exponent, $s > d/2$.
    - `variance`: the pointwise variance at infinite resolution, $\\operatorname{tr} C$; the scale
      $a$ is set from it.
    """

    dim: int = eqx.field(static=True)
    s: float
    variance: float
    scale: float
    degenerate: ClassVar[bool] = True
    trace_class: ClassVar[bool] = True

    def __init__(self, dim: int, s: float, variance: float = 1.0):
        self.dim = check_dim(dim)
        self.s = check_trace_class(s, self.dim)
        self.variance = check_positive(variance, "variance")
        raw = radial_lattice_sum(
            lambda k2: (4 * math.pi**2 * k2) ** (-self.s), self.dim, 2 * self.s, exclude_zero=True
        )
        self.scale = self.variance / raw
        check_float32_spectrum(self.scale, 4 * math.pi**2, self.s, "Laplacian")

    def sqrt_spectrum(self, k: tuple[Real[Array, "..."], ...]) -> Float[Array, "..."]:
        k2 = sum(jnp.asarray(ki, jnp.float32) ** 2 for ki in k)
        safe = jnp.where(k2 == 0, 1.0, k2)
        root = jnp.sqrt(self.scale) * (4 * math.pi**2 * safe) ** (-self.s / 2)
        return jnp.where(k2 == 0, 0.0, root)

    def trace(self) -> Float[Array, ""]:
        return jnp.asarray(self.variance)

    def min_grid(self) -> Grid:
        return (1,) * self.dim
