"""The programs' sampling (`train.sampling.draw`) reads a network by its parameterisation and feeds a
self-conditioned one its previous estimate: a network giving the exact noise of Gaussian data in any
of the four forms, with or without extra channels, gives the same samples."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
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
