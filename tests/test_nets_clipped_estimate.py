"""`nets.ClippedEstimate`: a self-conditioned network sees its x0-estimate channels clipped to the
data's range and its state channels unchanged, on one sample and in a batch alike."""

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


def test_batched_equals_vmap_with_and_without_the_networks_own_batched():
    unet = nets.UNet(2, 1, channels=8, multipliers=(1, 2), attention_levels=(), groups=4, key=jr.key(1))
    u = 2.0 * jr.normal(jr.key(2), (3, 2, 8, 8))
    t = jnp.asarray([0.1, 0.5, 0.9])
    for network in (unet, _echo):
        wrapped = nets.ClippedEstimate(network, 1, -1.0, 1.0)
        np.testing.assert_allclose(np.asarray(wrapped.batched(t, u)), np.asarray(jax.vmap(wrapped)(t, u)),
                                   rtol=1e-5, atol=1e-5)
    # The clip changes the UNet's output: its input estimate exceeds the range.
    clipped = jax.vmap(nets.ClippedEstimate(unet, 1, -1.0, 1.0))(t, u)
    assert float(jnp.max(jnp.abs(clipped - jax.vmap(unet)(t, u)))) > 1e-3


def test_bad_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="low < high"):
        nets.ClippedEstimate(_echo, 1, 1.0, -1.0)
    with pytest.raises(ValueError, match="2 x 1 channels"):
        nets.ClippedEstimate(_echo, 1, -1.0, 1.0)(jnp.asarray(0.0), jnp.zeros((3, 8, 8)))
