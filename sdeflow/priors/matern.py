"""The Matérn (Bessel-potential) prior $C \\propto (\\tau^2 - \\Delta)^{-s}$."""

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from ..checks import check_positive
from ..custom_types import Grid
from ._base import AbstractPrior, check_dim, check_float32_spectrum, check_trace_class
from ._lattice import radial_lattice_sum


class Matern(AbstractPrior):
    """$\\lambda_k = a (\\tau^2 + 4\\pi^2 |k|^2)^{-s}$: the Matérn / Bessel-potential covariance.

    Non-degenerate and trace class for $s > d/2$. $\\tau$ is an inverse length scale (in units of
    the unit torus) and $s$ the smoothness: samples lie in $H^r$ for every $r < s - d/2$.

    **Arguments:**

    - `dim`: the dimension $d$ of the torus.
    - `s`: the smoothness exponent, $s > d/2$.
    - `tau`: the inverse length scale $\\tau > 0$.
    - `variance`: the pointwise variance at infinite resolution, $\\operatorname{tr} C$; the scale
      $a$ is set from it.
    """

    dim: int = eqx.field(static=True)
    s: float
    tau: float
    variance: float
    scale: float
    degenerate: ClassVar[bool] = False
    trace_class: ClassVar[bool] = True

    def __init__(self, dim: int, s: float, tau: float = 2 * math.pi, variance: float = 1.0):
        self.dim = check_dim(dim)
        self.s = check_trace_class(s, self.dim)
        self.tau = check_positive(tau, "tau")
        self.variance = check_positive(variance, "variance")
        raw = radial_lattice_sum(
            lambda k2: (self.tau**2 + 4 * math.pi**2 * k2) ** (-self.s), self.dim, 2 * self.s
        )
        self.scale = self.variance / raw
        check_float32_spectrum(self.scale, self.tau**2, self.s, "Matern")

    def sqrt_spectrum(self, k: tuple[Real[Array, "..."], ...]) -> Float[Array, "..."]:
        k2 = sum(jnp.asarray(ki, jnp.float32) ** 2 for ki in k)
        return jnp.sqrt(self.scale) * (self.tau**2 + 4 * math.pi**2 * k2) ** (-self.s / 2)

    def trace(self) -> Float[Array, ""]:
        return jnp.asarray(self.variance)

    def min_grid(self) -> Grid:
        return (1,) * self.dim
