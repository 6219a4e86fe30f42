"""Random keys of the samplers' solver steps."""

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, PRNGKeyArray


def time_key(key: PRNGKeyArray, t: Array) -> PRNGKeyArray:
    """A key for time `t`: distinct times (as float32 bit patterns) give independent keys.

    Solvers that draw noise inside a diffrax step (the replacement of conditional sampling, the
    Langevin corrector) have only the step's times to tell steps apart; folding them into one key
    gives fresh noise at every step, the same for the same time.

    **Arguments:**

    - `key`: a JAX random key.
    - `t`: a scalar time.

    **Returns:**

    The key folded with the bits of `t` as a float32.
    """
    return jr.fold_in(key, jax.lax.bitcast_convert_type(jnp.asarray(t, jnp.float32), jnp.uint32))
