"""Helpers shared by the tests."""

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8) -> bool:
    """Whether two PyTrees have the same structure and allclose leaves."""
    if jtu.tree_structure(x) != jtu.tree_structure(y):
        return False
    return all(
        np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)
        for a, b in zip(jtu.tree_leaves(x), jtu.tree_leaves(y))
    )


def max_abs(x, y) -> float:
    """The largest absolute difference between two arrays."""
    return float(jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y))))
