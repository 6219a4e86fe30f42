"""nets.UNet: shapes, shift equivariance on the torus, no BatchNorm, gradients, errors, config."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import nets


def _small(key, **kwargs):
    return nets.UNet(1, 1, **({"channels": 4, "multipliers": (1, 2), "attention_levels": (1,),
                                "groups": 2, "time_features": 8, "time_dim": 8} | kwargs), key=key)


def test_shift_equivariance_on_the_torus(getkey):
    """Circular padding and stride 2: shifting the input by 2 points shifts the output by 2."""
    model = eqx.filter_jit(_small(getkey()))
    u = jr.normal(getkey(), (1, 16, 16))
    out = model(0.4, u)
    shifted = model(0.4, jnp.roll(u, (2, -4), axis=(1, 2)))
    assert out.shape == (1, 16, 16)
    assert float(jnp.max(jnp.abs(shifted - jnp.roll(out, (2, -4), axis=(1, 2))))) <= 1e-5


def test_batched_gradients_and_no_batchnorm(getkey):
    model = _small(getkey())
    def is_norm(x):
        return isinstance(x, (eqx.nn.BatchNorm, eqx.nn.GroupNorm))

    norms = [x for x in jax.tree.leaves(model, is_leaf=is_norm) if is_norm(x)]
    assert norms and not any(isinstance(x, eqx.nn.BatchNorm) for x in norms)  # (the search finds the GroupNorms)
    u = jr.normal(getkey(), (2, 1, 8, 8))
    t = jnp.array([0.1, 0.9])
    out, grads = eqx.filter_jit(lambda m: (m.batched(t, u), eqx.filter_grad(
        lambda m: jnp.mean((m.batched(t, u) - u) ** 2))(m)))(model)
    assert out.shape == u.shape
    leaves = jax.tree.leaves(grads)
    assert len(leaves) == len(jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_one_dimensional_with_coordinates(getkey):
    """In 1-d with coordinate channels, the network knows where it is: a shift of the input by 2
    points (which shifts the output of the network without them, as in the 2-d test above) does not
    shift its output."""
    key, u = getkey(), jr.normal(getkey(), (1, 12))
    for coordinates, equivariant in (("periodic", False), (None, True)):
        model = eqx.filter_jit(_small(key, dim=1, coordinates=coordinates, attention_levels=()))
        out = model(0.5, u)
        assert out.shape == (1, 12)
        gap = float(jnp.max(jnp.abs(model(0.5, jnp.roll(u, 2, axis=1)) - jnp.roll(out, 2, axis=1))))
        assert (gap <= 1e-5) == equivariant, (coordinates, gap)


def test_errors(getkey):
    model = _small(getkey())
    with pytest.raises(ValueError, match="divisible by 2"):
        model(0.1, jnp.zeros((1, 15, 16)))
    with pytest.raises(ValueError, match="attention_levels"):
        _small(getkey(), attention_levels=(3,))
    # no channels: a clear error, not a division by zero in the initialisation
    with pytest.raises(ValueError, match="`in_channels` must be a positive integer, got 0"):
        nets.UNet(0, 1, dim=2, key=getkey())
    with pytest.raises(ValueError, match="`c_out` must be a positive integer, got 0"):
        nets.CircularConv(2, 1, 0, 3, key=getkey())


def test_defaults_instantiate(getkey):
    # shapes only: the default network is not allocated (keeps the test fast)
    model = eqx.filter_eval_shape(lambda key: nets.UNet(1, 1, dim=2, key=key), getkey())
    assert isinstance(model, nets.UNet)
    assert nets.summary(model).startswith("UNet(")


@pytest.mark.parametrize("dim, kernel, stride", [(1, 3, 1), (2, 3, 1), (2, 3, 2), (2, 1, 1), (3, 3, 2)])
def test_circular_conv_is_the_periodic_convolution(dim, kernel, stride):
    """`nets.CircularConv` (computed channels-last) is equinox's circularly padded convolution with
    the same weights, on every dimension and stride the UNet uses."""
    import equinox as eqx

    from nets.circular_conv import CircularConv

    conv = CircularConv(dim, 3, 5, kernel, stride=stride, key=jr.key(0))
    reference = eqx.nn.Conv(dim, 3, 5, kernel, stride=stride, padding=kernel // 2,
                            padding_mode="CIRCULAR", key=jr.key(1))
    reference = eqx.tree_at(lambda m: (m.weight, m.bias), reference,
                            (conv.weight, conv.bias.reshape(reference.bias.shape)))
    x = jr.normal(jr.key(2), (3,) + (8,) * dim)
    np.testing.assert_allclose(np.asarray(conv(x)), np.asarray(reference(x)), rtol=1e-5, atol=1e-5)
    # A shift of the input by `stride` points shifts the output by one (the torus has no edge).
    shifted = conv(jnp.roll(x, stride, axis=1))
    np.testing.assert_allclose(np.asarray(shifted), np.asarray(jnp.roll(conv(x), 1, axis=1)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="must have shape"):
        conv(jnp.zeros((4,) + (8,) * dim))
