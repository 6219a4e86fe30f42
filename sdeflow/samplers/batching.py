"""A one-sample network whose `jax.vmap` is the network's own `batched` method."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..custom_types import Field


class VmapAsBatched(eqx.Module):
    """`model(t, x)` on one sample, and `model.batched(t, x)` wherever it is `jax.vmap`ped.

    Samplers act on one sample and are vmapped over keys, so without this the network inside
    the solver is `vmap` of its one-sample code. The networks of `nets` compute the same batch
    faster in their own layout (`batched`: the spatial-major layout, canonical matmuls). This
    wrapper uses `jax.custom_batching.custom_vmap` to call that method instead, at every level of
    vmap the solver's loops add (diffrax's `while_loop` under `vmap` included). Values are those
    of `jax.vmap(model)` to float32 round-off.

    Forward-mode differentiation (`jax.jvp`) works through it; reverse mode and `jax.linearize`
    do not (a limitation of `custom_vmap`), so give likelihoods (`sdeflow.likelihood`) and
    anything that differentiates the network the plain model.

    A model without `batched`, or a vmap over the weights themselves, falls back to `jax.vmap`.

    **Arguments:**

    - `model`: a one-sample network `model(t, x)`, optionally with `batched(t, x)`.
    """

    model: Callable[[Array, Field], Field]

    def __call__(self, t: Any, x: Field) -> Float[Array, "o *grid"]:
        params, static = eqx.partition(self.model, eqx.is_array)

        def one(params, t, x):
            return eqx.combine(params, static)(t, x)

        @jax.custom_batching.custom_vmap
        def network(params, t, x):
            return one(params, t, x)

        @network.def_vmap
        def rule(axis_size, in_batched, params, t, x):
            params_batched, t_batched, x_batched = in_batched
            model = eqx.combine(params, static)
            batched = getattr(model, "batched", None)
            if any(jax.tree.leaves(params_batched)) or not callable(batched):
                axes = (jax.tree.map(lambda b: 0 if b else None, params_batched),
                        0 if t_batched else None, 0 if x_batched else None)
                return jax.vmap(one, in_axes=axes)(params, t, x), True
            t = t if t_batched else jnp.broadcast_to(t, (axis_size, *jnp.shape(t)))
            x = x if x_batched else jnp.broadcast_to(x, (axis_size, *x.shape))
            return batched(t, x), True

        return network(params, jnp.asarray(t), x)
