"""Self-conditioned sampling: every fixed-step sampler feeds the previous step's estimate of x0 back
to the network as extra channels; adaptive or first-same-as-last solvers refuse with a clear error."""

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from test_samplers import compiled, gaussian_oracle

from sdeflow import samplers
from sdeflow.parameterisation import Epsilon


N = 16
FIXED = {
    "euler_maruyama": samplers.EulerMaruyama(12, denoise=True),
    "ddim_eta": samplers.DDIM(12, eta=0.5, denoise=True),
    "pc": samplers.PredictorCorrector(6, denoise=True),
    "ode_heun": samplers.ProbabilityFlow(diffrax.Heun(), 6, denoise=True),
    "shark": samplers.ReverseSDE(diffrax.ShARK(), 6, denoise=True),
}


def _scores():
    oracle = gaussian_oracle(N)
    plain = samplers.PreconditionedScore(oracle, oracle.sde, Epsilon())
    # A self-conditioned network that ignores its extra channels.
    ignoring = samplers.PreconditionedScore(lambda t, x: oracle(t, x[:1]), oracle.sde, Epsilon(),
                                            self_conditioning=True)
    return oracle, plain, ignoring


def test_a_network_ignoring_its_extra_channels_gives_the_samples_without_them():
    _, plain, ignoring = _scores()
    keys = jr.split(jr.key(0), 2)
    for name, sampler in FIXED.items():
        def both(keys, sampler=sampler):
            one = jax.vmap(lambda k: sampler.sample(plain, k, (1, N)))(keys)
            two = jax.vmap(lambda k: sampler.sample(ignoring, k, (1, N)))(keys)
            return one.samples, two.samples, one.num_evaluations, two.num_evaluations

        a, b, count_a, count_b = compiled(both, keys)(keys)
        # the same arithmetic up to how XLA fuses the slice of the extra channels: equal to float32
        # rounding (a sampler that fed the extra channels into the score would differ at O(1))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(np.asarray(count_a), np.asarray(count_b), err_msg=name)


def _ddim_by_hand(model, sde, ts, clip=None):
    """DDIM written out: step k gives the network the Tweedie estimate of step k - 1 (zeros first),
    clipped to `clip` when given, and a final Tweedie step."""
    def tweedie(t, x, cond):
        m, s = sde.marginal(t)
        cond = cond if clip is None else jnp.clip(cond, *clip)
        eps = model(t, jnp.concatenate([x, cond]))
        return (x - sde.mean(t, jnp.zeros_like(x)) - s * eps) / m, eps

    def step(carry, t01):
        x, cond = carry
        x0_hat, eps = tweedie(t01[0], x, cond)
        m1, s1 = sde.marginal(t01[1])
        return (m1 * x0_hat + sde.mean(t01[1], jnp.zeros_like(x)) + s1 * eps, x0_hat), None

    def by_hand(x):
        (x, cond), _ = jax.lax.scan(step, (x, jnp.zeros_like(x)), jnp.stack([ts[:-1], ts[1:]], axis=1))
        return tweedie(ts[-1], x, cond)[0]

    return by_hand


def test_ddim_feeds_back_the_previous_steps_estimate():
    """With a network that adds its extra channels to the exact noise, the sampler equals a DDIM
    loop written out here, which gives step k the Tweedie estimate of step k - 1 (zeros first)."""
    oracle = gaussian_oracle(N)
    sde = oracle.sde
    model = lambda t, x: oracle(t, x[:1]) + 0.3 * x[1:]
    score = samplers.PreconditionedScore(model, sde, Epsilon(), self_conditioning=True)
    steps = 8
    x1 = sde.terminal_sample(jr.key(0), (1, N))
    ts = samplers.time_grid(sde, steps, sde.t1, sde.t0, samplers.UniformSpacing())

    by_hand = _ddim_by_hand(model, sde, ts)

    def sampled(x):
        return samplers.DDIM(steps, denoise=True).sample(score, jr.key(1), x_start=x).samples

    expected, got = compiled(by_hand, x1)(x1), compiled(sampled, x1)(x1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-5)
    # Without the feedback (zeros every step) the result is far from it.
    zeros = samplers.PreconditionedScore(lambda t, x: model(t, x.at[1:].set(0.0)), sde, Epsilon(),
                                         self_conditioning=True)
    other = compiled(lambda x: samplers.DDIM(steps, denoise=True).sample(zeros, jr.key(1), x_start=x).samples, x1)(x1)
    assert np.max(np.abs(np.asarray(other) - np.asarray(expected))) > 1e-2


def test_a_clipped_estimate_network_is_fed_back_its_clipped_estimate():
    """`nets.ClippedEstimate` around the network: the sampler equals the DDIM loop written out here
    with each fed-back estimate clipped to the range, and differs from the unclipped loop."""
    import nets

    oracle = gaussian_oracle(N)
    sde = oracle.sde
    model = lambda t, x: oracle(t, x[:1]) + 0.3 * x[1:]
    low, high = -0.05, 0.05
    clipped = samplers.PreconditionedScore(nets.ClippedEstimate(model, 1, low, high), sde, Epsilon(),
                                           self_conditioning=True)
    plain = samplers.PreconditionedScore(model, sde, Epsilon(), self_conditioning=True)
    steps = 8
    x1 = sde.terminal_sample(jr.key(0), (1, N))
    ts = samplers.time_grid(sde, steps, sde.t1, sde.t0, samplers.UniformSpacing())

    by_hand = _ddim_by_hand(model, sde, ts, clip=(low, high))

    def sampled(score):
        return lambda x: samplers.DDIM(steps, denoise=True).sample(score, jr.key(1), x_start=x).samples

    expected = compiled(by_hand, x1)(x1)
    np.testing.assert_allclose(np.asarray(compiled(sampled(clipped), x1)(x1)), np.asarray(expected),
                               rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(np.asarray(compiled(sampled(plain), x1)(x1)) - np.asarray(expected))) > 1e-3


@pytest.mark.parametrize("sampler, message", [
    (samplers.ProbabilityFlow(), "ProbabilityFlow with adaptive steps"),
    (samplers.ReverseSDE(diffrax.ShARK(), None), "ReverseSDE with adaptive steps"),
    (samplers.ProbabilityFlow(diffrax.Euler(), 4, variables=samplers.NoiseLevel()), "variables NoiseLevel"),
    (samplers.ProbabilityFlow(diffrax.Tsit5(), 4), "Tsit5 reuses its last stage"),
])
def test_samplers_that_cannot_feed_back_say_so(sampler, message):
    _, _, ignoring = _scores()
    with pytest.raises(ValueError, match=message):
        jax.eval_shape(lambda k: sampler.sample(ignoring, k, (1, N)), jr.key(0))


@pytest.mark.parametrize("name", ["euler_maruyama", "pc", "ddim_eta"])
def test_each_step_is_given_the_previous_steps_estimate(name):
    """A network that adds its extra channels to the exact noise, sampled self-conditioned, equals
    the same sampler with the same key and a plain network that is handed, at each step's time, the
    Tweedie estimate of the step before (zeros at the first), computed here from the chain of
    states: so every evaluation of a step, the corrector's included, gets that estimate."""
    oracle = gaussian_oracle(N)
    sde = oracle.sde
    model = lambda t, x: oracle(t, x[:1]) + 0.3 * x[1:]
    conditioned = samplers.PreconditionedScore(model, sde, Epsilon(), self_conditioning=True)
    sampler = FIXED[name]
    x1 = sde.terminal_sample(jr.key(0), (1, N))
    run = compiled(lambda x: sampler.sample(conditioned, jr.key(1), x_start=x, chain=True), x1)(x1)
    times = np.concatenate([[sde.t1], np.asarray(run.ts)])  # each step's start, then the end
    starts = np.concatenate([np.asarray(x1)[None], np.asarray(run.chain)[:-1]])  # each step's state
    estimates = [jnp.zeros_like(x1)]
    for t, x in zip(times[:-1], starts):
        estimates.append(conditioned.denoise(float(t), jnp.asarray(x), estimates[-1]))
    table = jnp.stack(estimates)  # table[k]: what the step from times[k] is given; the last, Tweedie's step
    times = jnp.asarray(times, jnp.float32)

    def handed(t, x):
        k = jnp.argmin(jnp.abs(times - t))
        return model(t, jnp.concatenate([x, table[k]]))

    plain = samplers.PreconditionedScore(handed, sde, Epsilon())
    got = compiled(lambda x: sampler.sample(plain, jr.key(1), x_start=x).samples, x1)(x1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(run.samples), rtol=1e-4, atol=1e-4)
    # the feedback matters: zeros at every step give other samples
    zeros = samplers.PreconditionedScore(lambda t, x: model(t, x.at[1:].set(0.0)), sde, Epsilon(),
                                         self_conditioning=True)
    other = compiled(lambda x: sampler.sample(zeros, jr.key(1), x_start=x).samples, x1)(x1)
    assert np.max(np.abs(np.asarray(other) - np.asarray(run.samples))) > 1e-2


def test_the_heun_ode_is_given_an_estimate():
    """The Heun ODE, self-conditioned, differs from the same network given zeros (its two stages
    share one estimate, so the table of the test above cannot say which)."""
    oracle = gaussian_oracle(N)
    sde = oracle.sde
    model = lambda t, x: oracle(t, x[:1]) + 0.3 * x[1:]
    x1 = sde.terminal_sample(jr.key(0), (1, N))
    outs = []
    for net in (model, lambda t, x: model(t, x.at[1:].set(0.0))):
        score = samplers.PreconditionedScore(net, sde, Epsilon(), self_conditioning=True)
        outs.append(compiled(lambda x: FIXED["ode_heun"].sample(score, jr.key(1), x_start=x).samples, x1)(x1))
    assert np.max(np.abs(np.asarray(outs[0]) - np.asarray(outs[1]))) > 1e-2
