"""sdeflow.samplers.VmapAsBatched: under vmap it calls `batched`, and a vmapped solve is unchanged."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import nets
from sdeflow import samplers
from sdeflow.priors import Matern
from sdeflow.sde import VPSDE


class Marked(eqx.Module):
    """A network whose `batched` differs from `vmap` of its call (by a factor 2), to see which runs."""

    weight: jax.Array

    def __call__(self, t, x):
        return self.weight * x + t

    def batched(self, t, x):
        return 2.0 * jax.vmap(self)(t, x)


def test_dispatch_to_batched_only_under_vmap():
    model = samplers.VmapAsBatched(Marked(jnp.array(3.0)))
    x = jnp.arange(12.0).reshape(4, 1, 3)
    t = jnp.linspace(0.1, 0.4, 4)
    one = model(t[1], x[1])
    assert jnp.allclose(one, 3.0 * x[1] + t[1])  # one sample: the plain call
    expected = 2.0 * (3.0 * x + t[:, None, None])
    assert jnp.allclose(jax.vmap(model)(t, x), expected)  # vmap: `batched`
    assert jnp.allclose(jax.vmap(model, in_axes=(None, 0))(0.5, x), 2.0 * (3.0 * x + 0.5))
    assert jnp.allclose(jax.vmap(model, in_axes=(0, None))(t, x[0]),
                        2.0 * (3.0 * x[0] + t[:, None, None]))
    nested = jax.vmap(jax.vmap(model))(t.reshape(2, 2), x.reshape(2, 2, 1, 3))
    assert jnp.allclose(nested, expected.reshape(2, 2, 1, 3))
    # vmap over the weights themselves falls back to vmap of the one-sample call
    weights = jnp.array([1.0, 2.0, 3.0, 4.0])
    mapped = jax.vmap(lambda w, t, x: samplers.VmapAsBatched(Marked(w))(t, x))(weights, t, x)
    assert jnp.allclose(mapped, weights[:, None, None] * x + t[:, None, None])
    # forward-mode derivatives go through (the likelihood's Hutchinson estimator uses them)
    _, tangent = jax.jvp(lambda y: model(0.2, y), (x[0],), (jnp.ones_like(x[0]),))
    assert jnp.allclose(tangent, 3.0)


def test_vmapped_sampler_with_a_network_is_unchanged(getkey):
    """Euler-Maruyama vmapped over keys, an FNO inside: the same samples as with the plain FNO,
    and the FNO's `batched` path is what runs."""
    sde = VPSDE(Matern(2, 2.0, 6.0))
    fno = nets.FNO(1, 1, width=8, modes=3, depth=2, projection=16, time_features=8, time_dim=8,
                   key=getkey())
    sampler = samplers.EulerMaruyama(8)
    keys = jr.split(getkey(), 3)

    @eqx.filter_jit
    def run(model):
        score = samplers.PreconditionedScore(model, sde)
        return jax.vmap(lambda k: sampler.sample(score, k, (1, 12, 12)).samples)(keys)

    plain, wrapped = run(fno), run(samplers.VmapAsBatched(fno))
    assert float(jnp.max(jnp.abs(plain - wrapped))) <= 1e-4 * float(jnp.max(jnp.abs(plain)))
    # inside the solver's loops the wrapped network is its `batched` method: a network whose
    # `batched` doubles its output samples as the plain network with a doubled output does
    marked = run(samplers.VmapAsBatched(Marked(jnp.array(0.3))))
    doubled = run(lambda t, x: 2.0 * Marked(jnp.array(0.3))(t, x))
    assert float(jnp.max(jnp.abs(marked - doubled))) <= 1e-5 * float(jnp.max(jnp.abs(doubled)))
    assert float(jnp.max(jnp.abs(marked - run(Marked(jnp.array(0.3)))))) > 0.1
