"""Parameter counts and one-line summaries of the networks."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp


def count_parameters(model: eqx.Module) -> int:
    """The number of learned scalars: the sizes of all floating-point array leaves (a VQ-VAE's
    codebook statistics, which follow moving averages instead of gradients, among them).

    **Arguments:**

    - `model`: any Equinox module (also one built under `eqx.filter_eval_shape`, whose leaves are
      shapes: parameters can be counted without allocating them).

    **Returns:**

    The total number of parameters, an int.
    """
    def inexact(x) -> bool:  # arrays, or their shapes under `eqx.filter_eval_shape`
        return isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and jnp.issubdtype(
            x.dtype, jnp.inexact)

    leaves = [leaf for leaf in jax.tree.leaves(model) if inexact(leaf)]
    return int(sum(math.prod(leaf.shape) for leaf in leaves))


_FIELDS = {
    "FNO": ("in_channels", "out_channels", "width", "modes", "depth"),
    "UNO": ("in_channels", "out_channels", "width", "levels", "block_modes"),
    "UNet": ("in_channels", "out_channels", "channels", "multipliers", "blocks",
             "attention_levels"),
}


def summary(model: eqx.Module) -> str:
    """A one-line description: the class, its main hyperparameters and its parameter count.

    **Arguments:**

    - `model`: a network from `nets` (any module works; then only the count is given).

    **Returns:**

    A string such as `"FNO(in_channels=1, out_channels=1, width=32, modes=(14, 14), depth=4):
    1,234,567 parameters"`.
    """
    name = type(model).__name__
    names = [f for f in _FIELDS.get(name, ()) if hasattr(model, f)]
    fields = ", ".join(f"{f}={getattr(model, f)}" for f in names)
    return f"{name}({fields}): {count_parameters(model):,} parameters"
