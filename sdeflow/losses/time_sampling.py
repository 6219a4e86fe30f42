"""Draws of the diffusion times of a batch: uniform, stratified or antithetic."""

import abc

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..checks import check_instance, check_positive_int
from ..custom_types import RealScalarLike


class AbstractTimeSampling(eqx.Module):
    """How the times of a batch are drawn in $[t_0, t_1]$, each marginally uniform."""

    @abc.abstractmethod
    def fractions(self, key: PRNGKeyArray, batch: int) -> Float[Array, " batch"]:
        """`batch` fractions of the interval, each marginally uniform on $[0, 1]$."""

    def __call__(
        self, key: PRNGKeyArray, batch: int, t0: RealScalarLike, t1: RealScalarLike
    ) -> Float[Array, " batch"]:
        """Times in $[t_0, t_1]$ for a batch.

        **Arguments:**

        - `key`: a JAX random key.
        - `batch`: the number of times.
        - `t0`, `t1`: the interval.

        **Returns:**

        An array of shape `(batch,)`.
        """
        return t0 + (t1 - t0) * self.fractions(key, check_positive_int(batch, "batch"))


class UniformTimeSampling(AbstractTimeSampling):
    """Independent uniform times."""

    def fractions(self, key: PRNGKeyArray, batch: int) -> Float[Array, " batch"]:
        k1, _ = jr.split(key)
        return jr.uniform(k1, (batch,))


class StratifiedTimeSampling(AbstractTimeSampling):
    """One time in each of `batch` equal strata of $[t_0, t_1]$, in random order (a lower variance
    of the batch mean than independent times)."""

    def fractions(self, key: PRNGKeyArray, batch: int) -> Float[Array, " batch"]:
        k1, k2 = jr.split(key)
        u = (jnp.arange(batch) + jr.uniform(k1, (batch,))) / batch
        return jr.permutation(k2, u)


class AntitheticTimeSampling(AbstractTimeSampling):
    """Pairs of times at fractions $u$ and $1 - u$."""

    def fractions(self, key: PRNGKeyArray, batch: int) -> Float[Array, " batch"]:
        k1, _ = jr.split(key)
        half = jr.uniform(k1, ((batch + 1) // 2,))
        return jnp.concatenate([half, 1.0 - half])[:batch]


TIME_SAMPLINGS: dict[str, type[AbstractTimeSampling]] = {
    "uniform": UniformTimeSampling,
    "stratified": StratifiedTimeSampling,
    "antithetic": AntitheticTimeSampling,
}
"""The names a config gives the time samplings, and their classes."""


def check_time_sampling(time_sampling: object) -> AbstractTimeSampling:
    """`time_sampling` if it is an `AbstractTimeSampling`, else a `TypeError` saying which object
    to pass."""
    return check_instance(time_sampling, "time_sampling", AbstractTimeSampling, TIME_SAMPLINGS, "sdeflow.losses")
