"""nets.linear_map: hand-written transposes, checked for adjointness, and what each mode runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets.linear_map import linear_map
from nets.spectral_conv import (
    _modes_to_pairs_raw,
    _pairs_to_modes_raw,
    _sm_analysis,
    _sm_paired_analysis,
    _sm_paired_synthesis,
    _sm_synthesis_last,
    batched_matmul,
    const_matmul,
)


def _adjointness_gap(f, f_t, x, y):
    """|<f(x), y> - <x, f_t(y)>| relative to the size of the terms."""
    lhs, rhs = jnp.vdot(f(x), y), jnp.vdot(x, f_t(y))
    return float(jnp.abs(lhs - rhs) / (jnp.linalg.norm(f(x)) * jnp.linalg.norm(y)))


@pytest.mark.parametrize("m", [1, 4])
def test_pair_maps_are_each_others_transposes(m, getkey):
    a = jax.random.normal(getkey(), (3, 2, 2 * m + 1, 4, 5))
    y = jax.random.normal(getkey(), (3, 2 * m + 1, 4, 2, 5))
    gap = _adjointness_gap(lambda a: _pairs_to_modes_raw(a, m), lambda y: _modes_to_pairs_raw(y, m),
                           a, y)
    assert gap <= 1e-6


@pytest.mark.parametrize("matrix", [_sm_analysis(9, 3), _sm_paired_analysis(8, 3),
                                    _sm_paired_synthesis(11, 4), _sm_synthesis_last(12, 5)])
def test_matmul_transposes_give_the_gradient_of_the_plain_product(matrix, getkey):
    """The gradient through the hand-written transpose equals the one JAX derives for the plain
    product with the constant, in batched and 2-d form."""
    i, j = matrix.shape
    a = jax.random.normal(getkey(), (3, j, 7))
    g = jax.random.normal(getkey(), (3, i, 7))
    constant = jnp.asarray(matrix, jnp.float32)
    plain, pull = jax.vjp(lambda a: jnp.einsum("ij,kjd->kid", constant, a), a)
    out, pull_ours = jax.vjp(lambda a: batched_matmul(matrix, a, 3), a)
    assert float(jnp.max(jnp.abs(out - plain))) <= 1e-5
    assert float(jnp.max(jnp.abs(pull_ours(g)[0] - pull(g)[0]))) <= 1e-5 * float(
        jnp.max(jnp.abs(pull(g)[0])))
    _, pull_2d = jax.vjp(lambda a: const_matmul(matrix, a), a[0])
    assert float(jnp.max(jnp.abs(pull_2d(g[0])[0] - pull(g)[0][0]))) <= 1e-5 * float(
        jnp.max(jnp.abs(pull(g)[0][0])))


def test_what_each_mode_runs(getkey):
    """The value is `f`'s; reverse mode runs `f_transpose`, forward mode its transpose. With a
    deliberately wrong "transpose" (twice the true one) both derivatives come out doubled, which
    shows where each comes from; with the true one every transformation gives `f`'s."""
    matrix = jnp.asarray(np.arange(12.0).reshape(3, 4) / 7.0)
    x = jax.random.normal(getkey(), (4,))
    v = jax.random.normal(getkey(), (3,))
    tangent = jax.random.normal(getkey(), (4,))

    def make(scale):
        return lambda x: linear_map(lambda x: matrix @ x, lambda y: scale * (matrix.T @ y), x)

    wrong, right = make(2.0), make(1.0)
    assert float(jnp.max(jnp.abs(wrong(x) - matrix @ x))) <= 1e-6
    assert float(jnp.max(jnp.abs(jax.vjp(wrong, x)[1](v)[0] - 2.0 * matrix.T @ v))) <= 1e-5
    tangent_out = jax.jvp(wrong, (x,), (tangent,))[1]
    assert float(jnp.max(jnp.abs(tangent_out - 2.0 * matrix @ tangent))) <= 1e-5
    assert float(jnp.max(jnp.abs(jax.vjp(right, x)[1](v)[0] - matrix.T @ v))) <= 1e-5
    _, lin = jax.linearize(right, x)
    assert float(jnp.max(jnp.abs(lin(tangent) - matrix @ tangent))) <= 1e-5
    batched = jax.vmap(right)(jnp.stack([x, 2 * x]))
    assert float(jnp.max(jnp.abs(batched[1] - 2 * matrix @ x))) <= 1e-5
    def squared_gradient(x):
        return jnp.sum(jax.grad(lambda x: jnp.sum(right(x) ** 2))(x) ** 2)

    second = jax.grad(squared_gradient)(x)
    expected = 8.0 * matrix.T @ (matrix @ (matrix.T @ (matrix @ x)))
    assert float(jnp.max(jnp.abs(second - expected))) <= 1e-4 * float(jnp.max(jnp.abs(expected)))
