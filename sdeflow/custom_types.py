"""Type aliases shared across sdeflow and the networks of `nets`."""

from typing import Union

from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, Shaped


RealScalarLike = Union[float, int, Float[ArrayLike, ""], Int[ArrayLike, ""]]
"""A real scalar: a Python number or a 0-d array."""

Grid = tuple[int, ...]
"""The spatial shape $(n_1, \\ldots, n_d)$ of a grid on the torus $[0, 1)^d$."""

Field = Float[Array, "c *grid"]
"""One sample: a function $u: \\mathbb{T}^d \\to \\mathbb{R}^c$ stored as point values, channels first."""

Spectrum = Float[Array, "*rfft"]
"""Values on the `rfftn` layout of a grid (one per physical frequency kept by `rfftn`)."""

Key = PRNGKeyArray

__all__ = [
    "Array",
    "ArrayLike",
    "Bool",
    "Field",
    "Float",
    "Grid",
    "Int",
    "Key",
    "RealScalarLike",
    "Shaped",
    "Spectrum",
]
