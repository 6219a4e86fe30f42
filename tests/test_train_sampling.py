"""The programs' sampling (`train.sampling.draw`) reads a network by its parameterisation and feeds a
self-conditioned one its previous estimate: a network giving the exact noise of Gaussian data in any
of the four forms, with or without extra channels, gives the same samples."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from test_samplers import gaussian_oracle

from sdeflow import samplers
from sdeflow.parameterisation import convert, Epsilon, PARAMETERISATIONS
from train.sampling import draw


class _Exact(eqx.Module):
    """The oracle's exact noise converted to `target`; with `extra`, it takes (and ignores) c more
    input channels, as a self-conditioned network does."""

    oracle: samplers.GaussianOracle
    target: object
    extra: bool = eqx.field(static=True)

    def __call__(self, t, x):
        x = x[: x.shape[0] // 2] if self.extra else x
        m, s = self.oracle.sde.marginal(t)
        b = self.oracle.sde.mean(t, jnp.zeros_like(x))
        return convert(self.oracle(t, x), Epsilon(), self.target, x, m, s, b)


def test_draw_reads_every_parameterisation_and_self_conditioning():
    oracle = gaussian_oracle(16)
    sde, sampler = oracle.sde, samplers.DDIM(6, denoise=True)

    def sample(target, extra):
        model = _Exact(oracle, target, extra)
        out, evaluations = draw(model, sde, target, sampler, jr.key(0), (1, 16), 2, 2, self_conditioning=extra)
        assert np.all(evaluations == 7)
        return out

    reference = sample(Epsilon(), False)
    assert np.all(np.isfinite(reference)) and np.std(reference) > 0.1
    for name, cls in PARAMETERISATIONS.items():
        if name != "epsilon":  # the reference; self-conditioning rides along with v
            np.testing.assert_allclose(sample(cls(), name == "v"), reference, rtol=1e-4, atol=1e-4, err_msg=name)


def test_draw_compiles_once_for_other_weights_and_keys():
    # one jitted program for every draw: the PNGs drawn every train.sample_every steps, or on the
    # same grid again, trace nothing the second time
    from jax._src import monitoring

    oracle = gaussian_oracle(16)
    model = _Exact(oracle, Epsilon(), False)
    traced = []

    def listen(event, seconds, **info):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            traced.append(info.get("fun_name"))

    monitoring.register_event_duration_secs_listener(listen)
    try:
        first, _ = draw(model, oracle.sde, Epsilon(), samplers.DDIM(4), jr.key(0), (1, 16), 3, 3)
        assert traced, "the listener sees the first draw's trace"
        other = jax.tree.map(lambda x: x * 1.0 if eqx.is_inexact_array(x) else x, model)  # new buffers
        traced.clear()
        second, _ = draw(other, oracle.sde, Epsilon(), samplers.DDIM(4), jr.key(1), (1, 16), 3, 3)
    finally:
        monitoring.unregister_event_duration_listener(listen)
    assert traced == []
    assert not np.allclose(first, second)  # other keys, other samples


def test_local_copy_puts_a_meshs_replicated_weights_on_one_device():
    # what the end of a run samples and evaluates: a program given arrays replicated over the
    # training mesh would run on every device of it
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from train.distributed import local_copy

    oracle = gaussian_oracle(16)
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    single = _Exact(oracle, Epsilon(), False)
    replicated = jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, PartitionSpec())) if eqx.is_array(x)
                              else x, (single, oracle.sde, jr.key(3)))
    assert {d for x in jax.tree.leaves(replicated) if eqx.is_array(x) for d in x.devices()} == set(jax.devices()[:2])
    local = local_copy(replicated)
    assert {d for x in jax.tree.leaves(local) if eqx.is_array(x) for d in x.devices()} == {jax.devices()[0]}
    for a, b in zip(jax.tree.leaves(local[:2]), jax.tree.leaves((single, oracle.sde))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    model, sde, _ = local
    got, _ = draw(model, sde, Epsilon(), samplers.DDIM(4), jr.key(0), (1, 16), 2, 2)
    want, _ = draw(single, oracle.sde, Epsilon(), samplers.DDIM(4), jr.key(0), (1, 16), 2, 2)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_draw_reports_a_failed_solve():
    # the compiled sampler does not throw (no host callback); draw checks the outcome on the host
    oracle = gaussian_oracle(16)
    model = _Exact(oracle, Epsilon(), False)
    with pytest.raises(RuntimeError, match=r"grid \(16,\) failed for 3 of 3 samples: The maximum number of solver steps"):
        draw(model, oracle.sde, Epsilon(), samplers.ProbabilityFlow(max_steps=2), jr.key(0), (1, 16), 3, 3)
    out, _ = draw(model, oracle.sde, Epsilon(), samplers.ProbabilityFlow(), jr.key(0), (1, 16), 3, 3)
    assert np.all(np.isfinite(out))
