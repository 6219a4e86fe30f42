"""White noise: $C = \\sigma^2 I$, offered for comparison; it is not trace class."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from ..checks import check_positive
from ..custom_types import Grid
from ._base import AbstractPrior, check_dim


class WhiteNoise(AbstractPrior):
    """White noise $\\lambda_k = \\sigma^2$ for every $k$.

    Not trace class: its pointwise variance on an $n$-grid is $\\sigma^2$ times the number of kept
    modes and diverges as the grid is refined, so a diffusion driven by it is not well-posed in
    infinite dimensions. It is here to compare against the trace-class priors.

    **Arguments:**

    - `dim`: the dimension $d$ of the torus.
    - `variance`: $\\sigma^2$, the variance of each Fourier mode.
    """

    dim: int = eqx.field(static=True)
    variance: float
    degenerate: ClassVar[bool] = False
    trace_class: ClassVar[bool] = False

    def __init__(self, dim: int, variance: float = 1.0):
        self.dim = check_dim(dim)
        self.variance = check_positive(variance, "variance")

    def sqrt_spectrum(self, k: tuple[Real[Array, "..."], ...]) -> Float[Array, "..."]:
        ones = jnp.ones(jnp.broadcast_shapes(*(jnp.shape(ki) for ki in k)))
        return jnp.sqrt(self.variance) * ones

    def trace(self) -> Float[Array, ""]:
        return jnp.asarray(jnp.inf)

    def min_grid(self) -> Grid:
        return (1,) * self.dim
