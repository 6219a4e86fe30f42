"""How far a network is from being one operator on every grid: its fields on a grid against the
restrictions of its fields on finer grids, for the same band-limited input."""

from collections.abc import Sequence

import jax.numpy as jnp
from jaxtyping import Array, Float

import sdeflow
from sdeflow.custom_types import RealScalarLike


def fields(model, t: RealScalarLike, u: Float[Array, "c *grid"]) -> tuple[Array, ...]:
    """`model.intermediates(t, u)` for networks that have it (`FNO`, `UNO`: the lifted input,
    every block's output and the output), else `(model(t, u),)`."""
    intermediates = getattr(model, "intermediates", None)
    return tuple(intermediates(t, u)) if intermediates is not None else (model(t, u),)


def relative_l2(a: Float[Array, "c *grid"], b: Float[Array, "c *grid"]) -> Float[Array, ""]:
    """$\\lVert a - b \\rVert_2 / \\lVert b \\rVert_2$ over all channels and points."""
    return jnp.sqrt(jnp.sum(jnp.square(a - b)) / jnp.maximum(jnp.sum(jnp.square(b)), 1e-30))


def discretisation_gaps(model, t: RealScalarLike, u: Float[Array, "c *grid"],
                        factors: Sequence[int] = (2, 4)) -> Float[Array, "f k"]:
    """The relative $L^2$ differences between a network's fields on the grid of `u` and the
    restrictions (`sdeflow.restrict`) to that grid of its fields on grids `factor` times finer,
    given the trigonometric interpolant of `u` there (`sdeflow.prolong`).

    A network that is the same operator on every grid gives zeros up to round-off for every `u`;
    one whose output depends on the grid gives the size of that dependence, field by field, so the
    first field with a large gap is where the grid enters.

    **Arguments:**

    - `model`: a network `model(t, u)` on one sample; with an `intermediates` method (`FNO`,
      `UNO`) every field it lists is compared, otherwise the output only.
    - `t`: the time.
    - `u`: one sample `(c, n_1, ..., n_d)`, taken as the band-limited function it interpolates.
    - `factors`: the refinements compared, integers >= 2.

    **Returns:**

    An array `(len(factors), k)`: row `i` holds, for each of the `k` fields, the difference at
    `factors[i]` relative to the field's norm on the grid of `u`.
    """
    factors = tuple(int(f) for f in factors)
    if not factors or min(factors) < 2:
        raise ValueError(f"`factors` must be integers >= 2, got {factors}.")
    grid = tuple(u.shape[1:])
    coarse = fields(model, t, u)
    rows = []
    for f in factors:
        fine = fields(model, t, sdeflow.prolong(u, tuple(f * n for n in grid)))
        rows.append(jnp.stack([relative_l2(sdeflow.restrict(b, a.shape[1:]), a)
                               for a, b in zip(coarse, fine, strict=True)]))
    return jnp.stack(rows)
