"""`nets.ClippedEstimate`: a self-conditioned network sees its x0-estimate channels clipped to the
data's range and its state channels unchanged, on one sample and in a batch alike."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import nets


def _echo(t, u):
    """A 'network' that returns its whole input times (1 + t), so the wrapper's input is visible."""
    return u * (1.0 + t)


def test_the_estimate_channels_are_clipped_and_the_state_passes_unchanged():
    u = 3.0 * jr.normal(jr.key(0), (4, 8, 8))  # 2 state channels, then 2 estimate channels
    out = nets.ClippedEstimate(_echo, 2, -1.0, 0.5)(jnp.asarray(0.0), u)
    np.testing.assert_array_equal(np.asarray(out[:2]), np.asarray(u[:2]))
    np.testing.assert_array_equal(np.asarray(out[2:]), np.clip(np.asarray(u[2:]), -1.0, 0.5))
    assert float(jnp.max(jnp.abs(u[2:]))) > 1.0  # the clip had something to do


class _WithBatched(eqx.Module):
    """A network with its own `batched` method (computed another way than `vmap` of `__call__`)."""

    scale: jax.Array

    def __call__(self, t, u):
        return jnp.tanh(self.scale * u[:1] + u[1:] * t)

    def batched(self, t, u):
        return jnp.tanh(self.scale * u[:, :1] + jnp.einsum("b,bc...->bc...", t, u[:, 1:]))


def test_batched_equals_vmap_with_and_without_the_networks_own_batched():
    u = 2.0 * jr.normal(jr.key(2), (3, 2, 8, 8))
    t = jnp.asarray([0.1, 0.5, 0.9])
    network = _WithBatched(jnp.asarray(0.7))
    for inner in (network, _echo):
        wrapped = nets.ClippedEstimate(inner, 1, -1.0, 1.0)
        np.testing.assert_allclose(np.asarray(wrapped.batched(t, u)), np.asarray(jax.vmap(wrapped)(t, u)),
                                   rtol=1e-6, atol=1e-6)
    # The clip changes the output: the input's estimate exceeds the range.
    clipped = nets.ClippedEstimate(network, 1, -1.0, 1.0).batched(t, u)
    assert float(jnp.max(jnp.abs(clipped - network.batched(t, u)))) > 1e-3


def test_bad_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="low < high"):
        nets.ClippedEstimate(_echo, 1, 1.0, -1.0)
    with pytest.raises(ValueError, match="2 x 1 channels"):
        nets.ClippedEstimate(_echo, 1, -1.0, 1.0)(jnp.asarray(0.0), jnp.zeros((3, 8, 8)))
