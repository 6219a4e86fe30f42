"""Helpers shared by the tests."""

import jax
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


def primitive_names(fn, *args) -> set[str]:
    """The names of every primitive in the jaxpr of `fn(*args)`, nested jaxprs included (the bodies
    of `custom_jvp`, `pjit`, loops, ...)."""
    names = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    if hasattr(sub, "eqns"):
                        walk(sub)
                    elif hasattr(getattr(sub, "jaxpr", None), "eqns"):
                        walk(sub.jaxpr)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names
