"""The networks' shared layers in closed form: the sinusoidal time features, the time embedding
and the coordinate channels."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import nets


def test_sinusoidal_embedding_in_closed_form():
    """$[\\sin(s t \\omega_j), \\cos(s t \\omega_j)]$ with $\\omega_j = 10^{-4 j / (h - 1)}$, $h$ = dim / 2:
    frequencies from 1 down to $10^{-4}$, and the scale multiplying $t$."""
    t, scale = 0.37, 1000.0
    omega = 10.0 ** (-4.0 * np.arange(4) / 3)
    expected = np.concatenate([np.sin(scale * t * omega), np.cos(scale * t * omega)])
    np.testing.assert_allclose(nets.sinusoidal_embedding(t, 8, scale), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nets.sinusoidal_embedding(t * 1000, 8, 1.0), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(nets.sinusoidal_embedding(0.25, 2, 2.0), [np.sin(0.5), np.cos(0.5)], rtol=1e-6)
    for dim in (0, 3):
        with pytest.raises(ValueError, match="even integer"):
            nets.sinusoidal_embedding(t, dim)


def test_time_embedding_is_an_mlp_of_the_scaled_sinusoids():
    """`TimeEmbedding(t) = W_2 silu(W_1 e(t) + b_1) + b_2` with $e$ the sinusoids of `scale * t`:
    one of `scale` 10 at $t$ equals one of `scale` 1 at $10 t$ with the same weights."""
    emb = nets.TimeEmbedding(6, 5, scale=10.0, key=jr.key(0))
    e = np.asarray(nets.sinusoidal_embedding(0.3, 6, 10.0))
    w1, b1 = np.asarray(emb.linear1.weight), np.asarray(emb.linear1.bias)
    w2, b2 = np.asarray(emb.linear2.weight), np.asarray(emb.linear2.bias)
    hidden = w1 @ e + b1
    np.testing.assert_allclose(emb(0.3), w2 @ (hidden / (1 + np.exp(-hidden))) + b2, rtol=1e-5, atol=1e-6)
    unscaled = nets.TimeEmbedding(6, 5, scale=1.0, key=jr.key(0))
    np.testing.assert_allclose(unscaled(3.0), emb(0.3), rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(emb(0.3) - emb(0.31)))) > 1e-3  # a small step in t is resolved


def test_coordinate_features_are_the_positions_on_the_torus():
    """`"periodic"`: $\\cos, \\sin(2\\pi x_i)$ per axis, the same function on every grid (the 8-grid's
    values are the 16-grid's at the common points); `"linear"`: $x_i = j / n$; `None`: no channel."""
    grid = (8, 4)
    x = np.arange(8)[:, None] / 8 + 0 * np.arange(4)[None]
    y = 0 * np.arange(8)[:, None] + np.arange(4)[None] / 4
    periodic = nets.coordinate_features("periodic", grid)
    expected = np.stack([np.cos(2 * np.pi * x), np.cos(2 * np.pi * y), np.sin(2 * np.pi * x), np.sin(2 * np.pi * y)])
    np.testing.assert_allclose(periodic, expected, atol=1e-6)
    np.testing.assert_allclose(nets.coordinate_features("periodic", (16, 8))[:, ::2, ::2], periodic, atol=1e-6)
    # Band-limited: every channel holds only |k| = 1.
    spectrum = np.abs(np.fft.fftn(np.asarray(periodic), axes=(1, 2)))
    k1, k2 = np.meshgrid(np.fft.fftfreq(8, 1 / 8), np.fft.fftfreq(4, 1 / 4), indexing="ij")
    assert spectrum[:, np.abs(k1) + np.abs(k2) != 1].max() < 1e-4
    np.testing.assert_allclose(nets.coordinate_features("linear", grid), np.stack([x, y]), atol=1e-7)
    assert nets.coordinate_features(None, grid).shape == (0, 8, 4)
    assert nets.coordinate_features("periodic", (5,)).shape == (2, 5)
