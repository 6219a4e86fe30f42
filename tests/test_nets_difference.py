"""nets.DifferenceKernel: a first-order differential operator in the limit, on every grid."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import nets
import sdeflow
from nets.difference import stencil_offsets


def _kernel(key, channels, dim):
    kernel = nets.DifferenceKernel(channels, dim=dim, key=key)
    # coefficients of order one (the default's are scaled for a grid of 32)
    return eqx.tree_at(lambda k: k.weight, kernel, kernel.weight * 8 * 3**dim)


def _field(x):
    """Two smooth channels on the 2-torus and their gradients (d/dx_1, d/dx_2)."""
    p, q = 2 * jnp.pi * (x[0] + 2 * x[1]), 2 * jnp.pi * x[0]
    h = jnp.stack([jnp.sin(p), jnp.cos(q) * jnp.sin(2 * jnp.pi * x[1])])
    grad = jnp.stack([
        jnp.stack([2 * jnp.pi * jnp.cos(p), 4 * jnp.pi * jnp.cos(p)]),
        jnp.stack([-2 * jnp.pi * jnp.sin(q) * jnp.sin(2 * jnp.pi * x[1]),
                   2 * jnp.pi * jnp.cos(q) * jnp.cos(2 * jnp.pi * x[1])]),
    ])  # (channel, axis, *grid)
    return h, grad


def _orders(kernel, offsets, grids):
    """Max errors of `kernel` against its limit $\\sum_s w_s\\, o_s \\cdot \\nabla h$ (`offsets` $o_s$)
    on `grids`, relative to the limit's maximum, and the observed orders between successive grids."""
    errors = []
    for grid in grids:
        h, grad = _field(sdeflow.coordinates(grid))
        limit = jnp.einsum("cs,sa,ca...->c...", kernel.weight, offsets, grad)
        errors.append(float(jnp.max(jnp.abs(kernel(h) - limit)) / jnp.max(jnp.abs(limit))))
    return errors, [float(jnp.log2(a / b)) for a, b in zip(errors, errors[1:])]


def test_converges_at_first_order_to_its_differential_operator(getkey):
    """On a smooth field, $D h \\to \\sum_s w_s\\, s \\cdot \\nabla h$ with error $O(\\Delta)$: the
    same weights mean the same operator on every grid. Max errors relative to the limit's
    maximum, measured for three keys: 0.09-0.44 at 32, halving with every doubling of n."""
    kernel = _kernel(getkey(), 2, 2)
    offsets = jnp.array(stencil_offsets(2), jnp.float32)  # (s, axis)
    errors, orders = _orders(kernel, offsets, [(n, n) for n in (32, 64, 128, 256)])
    assert all(0.9 <= p <= 1.1 for p in orders), (errors, orders)
    assert errors[-1] <= 0.1


def test_rectangular_grids_converge_to_the_scaled_operator(getkey):
    """On $n \\times 2n$ grids the limit weighs axis $i$ by $\\Delta_i / \\Delta$ ($\\sqrt 2$ and
    $1/\\sqrt 2$ here), the same for every $n$; the error still halves with each doubling."""
    kernel = _kernel(getkey(), 2, 2)
    offsets = jnp.array(stencil_offsets(2), jnp.float32) * jnp.array([2**0.5, 2**-0.5])
    errors, orders = _orders(kernel, offsets, [(n, 2 * n) for n in (32, 64, 128)])
    assert all(0.9 <= p <= 1.1 for p in orders), (errors, orders)


def test_symmetric_stencil_converges_at_second_order(getkey):
    """With $w_{-s} = -w_s$ the stencil is a central difference: error $O(\\Delta^2)$."""
    kernel = _kernel(getkey(), 2, 2)
    offsets = stencil_offsets(2)
    mirror = jnp.array([offsets.index(tuple(-o for o in s)) for s in offsets])
    kernel = eqx.tree_at(lambda k: k.weight, kernel, (kernel.weight - kernel.weight[:, mirror]) / 2)
    offsets = jnp.array(offsets, jnp.float32)
    errors, orders = _orders(kernel, offsets, [(n, n) for n in (32, 64, 128)])
    assert all(1.9 <= p <= 2.1 for p in orders), (errors, orders)


def test_constants_vanish_and_shifts_commute(getkey):
    kernel = _kernel(getkey(), 3, 2)
    constant = jnp.broadcast_to(jnp.array([1.0, -2.0, 0.5])[:, None, None], (3, 16, 12))
    assert float(jnp.max(jnp.abs(kernel(constant)))) <= 1e-4
    h = jr.normal(getkey(), (3, 16, 12))
    shifted = jnp.roll(h, (3, -5), (1, 2))
    assert jnp.allclose(kernel(shifted), jnp.roll(kernel(h), (3, -5), (1, 2)), atol=1e-4)


@pytest.mark.parametrize("grid", [(17,), (16, 12), (6, 5, 7)])
def test_spatial_major_equals_vmap(grid, getkey):
    dim = len(grid)
    kernel = _kernel(getkey(), 4, dim)
    h = jr.normal(getkey(), (3, 4, *grid))
    expected = jax.vmap(kernel)(h)
    spatial_major = h.transpose(*range(dim + 1, 1, -1), 0, 1)  # (n_d, ..., n_1, B, c)
    got = kernel.spatial_major(spatial_major).transpose(dim, dim + 1, *range(dim - 1, -1, -1))
    assert float(jnp.max(jnp.abs(got - expected))) <= 1e-5 * float(jnp.max(jnp.abs(expected)))


def test_errors(getkey):
    kernel = nets.DifferenceKernel(2, dim=2, key=getkey())
    with pytest.raises(ValueError, match=r"shape \(2, n_1, ..., n_2\)"):
        kernel(jnp.zeros((3, 8, 8)))
    with pytest.raises(ValueError, match="batch, 2"):
        kernel.spatial_major(jnp.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="positive"):
        nets.DifferenceKernel(0, dim=2, key=getkey())
