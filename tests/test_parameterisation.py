"""Exact conversions between epsilon, x0, v and preconditioned-score outputs."""

import itertools

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from sdeflow.parameterisation import (
    AbstractParameterisation,
    check_parameterisation,
    convert,
    Epsilon,
    PARAMETERISATIONS,
    Score,
    V,
    X0,
)


KINDS = [cls() for cls in PARAMETERISATIONS.values()]


def test_the_table_names_every_parameterisation():
    assert PARAMETERISATIONS == {"epsilon": Epsilon, "x0": X0, "v": V, "score": Score}
    assert all(isinstance(kind, AbstractParameterisation) for kind in KINDS)


@pytest.mark.parametrize("kind", KINDS, ids=list(PARAMETERISATIONS))
def test_each_object_round_trips(kind, getkey):
    """`to_epsilon` inverts `from_epsilon` and back, to float32 round-off (exactly for `Epsilon`)."""
    x_t, eps, b = (jr.normal(getkey(), (2, 5, 6)) for _ in range(3))
    m, s = 0.8, 0.45  # not variance preserving: the conversions must not assume m^2 + s^2 = 1
    out = kind.from_epsilon(eps, x_t, m, s, b)
    np.testing.assert_allclose(kind.to_epsilon(out, x_t, m, s, b), eps, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kind.from_epsilon(kind.to_epsilon(eps, x_t, m, s, b), x_t, m, s, b), eps,
                               rtol=1e-5, atol=1e-5)
    # Per-sample coefficients broadcast against a batch of fields.
    m_b, s_b = jnp.asarray([0.8, 0.6])[:, None, None], jnp.asarray([0.45, 0.8])[:, None, None]
    out = kind.from_epsilon(eps, x_t, m_b, s_b, b)
    np.testing.assert_allclose(kind.to_epsilon(out, x_t, m_b, s_b, b), eps, rtol=1e-5, atol=1e-5)
    if isinstance(kind, Epsilon):
        assert kind.to_epsilon(eps, x_t, m, s, b) is eps and kind.from_epsilon(eps, x_t, m, s, b) is eps


@pytest.mark.parametrize("source, target", list(itertools.product(KINDS, repeat=2)))
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
    np.testing.assert_allclose(X0().from_epsilon(eps, x_t, m, s, b), x0, atol=1e-5)
    np.testing.assert_allclose(V().from_epsilon(eps, x_t, m, s, b), m * eps - s * x0, atol=1e-5)
    np.testing.assert_allclose(Score().from_epsilon(eps, x_t, m, s, b), -eps / s, atol=1e-5)
    for kind in KINDS:
        out = kind.from_epsilon(eps, x_t, m, s, b)
        np.testing.assert_allclose(kind.to_epsilon(out, x_t, m, s, b), eps, atol=1e-5)
    # Variance preserving: x0 = m x_t - s v.
    v = m * eps - s * x0
    np.testing.assert_allclose(m * (x_t - b) - s * v, x0, atol=1e-5)


@pytest.mark.parametrize("name", list(PARAMETERISATIONS))
def test_a_name_is_refused_with_the_object_to_pass(name):
    """Names are for configs: the library answers one with the object it stands for."""
    cls = PARAMETERISATIONS[name]
    with pytest.raises(TypeError, match=rf"pass sdeflow\.parameterisation\.{cls.__name__}\(\)"):
        check_parameterisation(name)
    assert check_parameterisation(cls()) == cls()


def test_unknown_kind():
    with pytest.raises(TypeError, match=r"`parameterisation` takes an AbstractParameterisation.*'noise'"):
        check_parameterisation("noise")
    with pytest.raises(TypeError, match="parameterisation"):
        convert(jnp.zeros(3), "epsilon", V(), jnp.zeros(3), 1.0, 1.0)
