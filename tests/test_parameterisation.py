"""Exact conversions between epsilon, x0, v and preconditioned-score outputs."""

import itertools

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from sdeflow.parameterisation import PARAMETERISATIONS, convert, from_epsilon, to_epsilon


@pytest.mark.parametrize("source, target", list(itertools.product(PARAMETERISATIONS, repeat=2)))
def test_round_trip(source, target, getkey):
    x_t, out, b = (jr.normal(getkey(), (2, 5, 6)) for _ in range(3))
    m, s = 0.8, 0.45  # not variance preserving: the conversions must not assume m^2 + s^2 = 1
    there = convert(out, source, target, x_t, m, s, b)
    back = convert(there, target, source, x_t, m, s, b)
    np.testing.assert_allclose(back, out, rtol=1e-5, atol=1e-5)


def test_definitions(getkey):
    """Each kind is what its definition says, given x_t = m x0 + b + s eps."""
    x0, eps, b = (jr.normal(getkey(), (1, 7)) for _ in range(3))
    m, s = 0.6, 0.8
    x_t = m * x0 + b + s * eps
    np.testing.assert_allclose(from_epsilon("x0", eps, x_t, m, s, b), x0, atol=1e-5)
    np.testing.assert_allclose(from_epsilon("v", eps, x_t, m, s, b), m * eps - s * x0, atol=1e-5)
    np.testing.assert_allclose(from_epsilon("score", eps, x_t, m, s, b), -eps / s, atol=1e-5)
    for kind in PARAMETERISATIONS:
        out = from_epsilon(kind, eps, x_t, m, s, b)
        np.testing.assert_allclose(to_epsilon(kind, out, x_t, m, s, b), eps, atol=1e-5)
    # Variance preserving: x0 = m x_t - s v.
    v = m * eps - s * x0
    np.testing.assert_allclose(m * (x_t - b) - s * v, x0, atol=1e-5)


def test_unknown_kind():
    with pytest.raises(ValueError, match="parameterisation"):
        to_epsilon("noise", jnp.zeros(3), jnp.zeros(3), 1.0, 1.0)
