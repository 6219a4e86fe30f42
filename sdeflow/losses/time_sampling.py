"""Draws of the diffusion times of a batch: uniform, stratified or antithetic."""

import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray


TIME_SAMPLINGS: tuple[str, ...] = ("uniform", "stratified", "antithetic")


def sample_times(
    key: PRNGKeyArray, batch: int, t0: float, t1: float, method: str = "stratified"
) -> Float[Array, " batch"]:
    """Times in $[t_0, t_1]$ for a batch, each marginally uniform.

    - `"uniform"`: independent;
    - `"stratified"`: one time in each of `batch` equal strata of $[t_0, t_1]$ (lower variance of the
      batch mean, in random order);
    - `"antithetic"`: pairs $u, 1 - u$.

    **Arguments:**

    - `key`: a JAX random key.
    - `batch`: the number of times.
    - `t0`, `t1`: the interval.
    - `method`: one of the above.

    **Returns:**

    An array of shape `(batch,)`.
    """
    if method not in TIME_SAMPLINGS:
        raise ValueError(f"`time_sampling` must be one of {TIME_SAMPLINGS}, got {method!r}.")
    k1, k2 = jr.split(key)
    if method == "uniform":
        u = jr.uniform(k1, (batch,))
    elif method == "stratified":
        u = (jnp.arange(batch) + jr.uniform(k1, (batch,))) / batch
        u = jr.permutation(k2, u)
    else:
        half = jr.uniform(k1, ((batch + 1) // 2,))
        u = jnp.concatenate([half, 1.0 - half])[:batch]
    return t0 + (t1 - t0) * u
