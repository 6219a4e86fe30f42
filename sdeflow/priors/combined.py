"""Combined priors: $C^{1/2} = a A + b B$ for two priors diagonal in the same Fourier basis."""

import jax.numpy as jnp
from jaxtyping import Array, Float, Real

from ..checks import check_positive
from ..custom_types import Grid
from ._base import AbstractPrior
from ._lattice import lattice_trace


class Combined(AbstractPrior):
    """$C^{1/2} = a A + b B$, so $\\sqrt{\\lambda_k} = a \\sqrt{\\lambda^A_k} + b \\sqrt{\\lambda^B_k}$.

    Useful to mix a rough and a smooth prior (e.g. a Laplacian with a small Matérn part, which makes
    the combination non-degenerate). The trace is summed numerically over the lattice.

    **Arguments:**

    - `first`: the prior $A$.
    - `second`: the prior $B$, on the same dimension.
    - `a`: the weight of $A^{1/2}$, $a > 0$.
    - `b`: the weight of $B^{1/2}$, $b > 0$.
    """

    first: AbstractPrior
    second: AbstractPrior
    a: float
    b: float

    def __init__(self, first: AbstractPrior, second: AbstractPrior, a: float = 1.0, b: float = 1.0):
        if first.dim != second.dim:
            raise ValueError(
                f"`first` ({type(first).__name__}, d={first.dim}) and `second` "
                f"({type(second).__name__}, d={second.dim}) live on tori of different dimensions."
            )
        self.first = first
        self.second = second
        self.a = check_positive(a, "a")
        self.b = check_positive(b, "b")

    @property
    def dim(self) -> int:
        return self.first.dim

    @property
    def degenerate(self) -> bool:
        return self.first.degenerate and self.second.degenerate

    @property
    def trace_class(self) -> bool:
        return self.first.trace_class and self.second.trace_class

    def sqrt_spectrum(self, k: tuple[Real[Array, "..."], ...]) -> Float[Array, "..."]:
        return self.a * self.first.sqrt_spectrum(k) + self.b * self.second.sqrt_spectrum(k)

    def trace(self) -> Float[Array, ""]:
        if not self.trace_class:
            return jnp.asarray(jnp.inf)
        return lattice_trace(self.sqrt_spectrum, self.dim)

    def min_grid(self) -> Grid:
        return tuple(max(p, q) for p, q in zip(self.first.min_grid(), self.second.min_grid()))
