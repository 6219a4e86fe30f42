"""Diffusion in the latent space of an autoencoder: the pieces a run with an `autoencoder` adds.

The score network of such a run models the continuous outputs of the frozen encoder (the latent
maps); the sampled latent maps are snapped to the nearest codes and decoded. An Ornstein–Uhlenbeck
bridge toward a fitted target (`sde=ou_bridge`, `sde.target=constant|field`) keeps that target as
the part `target`, a `FittedTarget`: the running mean of the latent maps the loss has seen.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from sdeflow.grid import field_grid, resample


class FittedTarget(eqx.Module):
    """The running mean of fields, kept as a part of a run: per channel (`per_position=False`) or
    per channel and grid point. It changes through `updated` (statistics a loss returns), never
    through gradients.

    **Fields:**

    - `total`: the sum of the fields seen, on the target's grid, `(c, *grid)`.
    - `count`: how many fields were summed.
    - `per_position`: a field of means (true) or one mean per channel (false).
    """

    total: Float[Array, "c *grid"]
    count: Float[Array, ""]
    per_position: bool = eqx.field(static=True)

    @classmethod
    def zeros(cls, shape: tuple[int, ...], per_position: bool) -> "FittedTarget":
        """A target that has seen nothing yet (its value is zero) on fields of `shape` `(c, *grid)`."""
        return cls(jnp.zeros(shape, jnp.float32), jnp.zeros((), jnp.float32), per_position)

    def value(self) -> Float[Array, "c *grid"]:
        """The mean so far (zero before any update), averaged over the grid unless `per_position`."""
        mean = self.total / jnp.maximum(self.count, 1.0)
        if not self.per_position:
            axes = tuple(range(1, mean.ndim))
            mean = jnp.broadcast_to(jnp.mean(mean, axis=axes, keepdims=True), mean.shape)
        return mean

    def updated(self, fields: Float[Array, "batch c *any"]) -> "FittedTarget":
        """The target after also seeing `fields` (resampled to its grid if they lie on another)."""
        fields = jax.lax.stop_gradient(fields)
        grid = field_grid(self.total)
        if fields.shape[2:] != grid:
            fields = jax.vmap(lambda f: resample(f, grid))(fields)
        return FittedTarget(self.total + jnp.sum(fields, axis=0), self.count + fields.shape[0], self.per_position)

    def with_statistics(self, statistics: "FittedTarget") -> "FittedTarget":
        """`statistics` itself (the training step's protocol for parts with statistics)."""
        return statistics


def encode(autoencoder, x: Float[Array, "batch c *grid"]) -> Float[Array, "batch d *latent"]:
    """The frozen encoder's continuous outputs of a batch (no gradient reaches the encoder)."""
    return jax.lax.stop_gradient(jax.vmap(autoencoder.encode)(x))


def decode(autoencoder, z: Float[Array, "batch d *latent"]) -> tuple[Float[Array, "batch c *grid"], Int[Array, "batch *latent"]]:
    """Latent maps snapped to their nearest codes and decoded; returns the decoded fields and the codes."""
    def one(z):
        z_q, indices = autoencoder.quantise(z)
        return autoencoder.decode(z_q), indices

    return jax.vmap(one)(z)
