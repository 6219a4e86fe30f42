"""The sharded training step: 1 device vs several, EMA recursion, donation, optimiser schedule."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import nets
import sdeflow
from sdeflow.losses import dsm_loss, ResolutionConsistency
from train.step import (
    DataParallel,
    TrainState,
    init_state,
    make_mesh,
    make_optimiser,
    ema_decay_at,
    evaluation_params,
    learning_rate_schedule,
    make_train_step,
    shard_batch,
    tree_max_difference,
)


class _Net(eqx.Module):
    """A small time-conditioned periodic convolution network acting on one sample (1, n, n)."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    time: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jr.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(1, 8, 3, padding=1, padding_mode="CIRCULAR", key=k1)
        self.conv2 = eqx.nn.Conv2d(8, 1, 3, padding=1, padding_mode="CIRCULAR", key=k2)
        self.time = eqx.nn.Linear("scalar", 8, key=k3)

    def __call__(self, t, x):
        return self.conv2(jax.nn.gelu(self.conv1(x) + self.time(t)[:, None, None]))


def _loss(model, x0, key):
    """Denoising loss of a VP-type diffusion with white noise (enough to exercise the step)."""
    kt, kn = jr.split(key)
    t = jr.uniform(kt, (x0.shape[0],), minval=1e-3, maxval=1.0)
    eps = jr.normal(kn, x0.shape)
    m = jnp.exp(-t)[:, None, None, None]
    x_t = m * x0 + jnp.sqrt(1.0 - m**2) * eps
    return jnp.mean((jax.vmap(model)(t, x_t) - eps) ** 2)


def _run(devices, batches, *, ema_decay=0.9, keep_models=False):
    mesh = make_mesh(devices)
    optimiser = make_optimiser(3e-3, 20, warmup_steps=2, clip_norm=1.0, weight_decay=1e-4)
    state = init_state(_Net(jr.key(0)), optimiser, jr.key(1), mesh)
    step = make_train_step(_loss, optimiser, ema_decay, mesh)
    losses, models = [], []
    for batch in batches:
        if keep_models:
            models.append(jax.tree.map(lambda x: np.asarray(x) if eqx.is_array(x) else x, state.parts))
        state, loss = step(state, shard_batch(batch, mesh))
        losses.append(float(loss))
    return state, losses, models, mesh


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(0)
    return [rng.normal(size=(8, 1, 8, 8)).astype(np.float32) for _ in range(4)]


def test_four_devices_equal_one_device(batches):
    assert len(jax.devices()) >= 4
    one, losses_one, _, _ = _run(jax.devices()[:1], batches)
    four, losses_four, _, mesh = _run(jax.devices()[:4], batches)
    # The state is replicated on the 4 devices; the weights moved.
    weight = four.parts.conv1.weight
    assert weight.sharding.is_fully_replicated and len(weight.sharding.device_set) == 4
    assert tree_max_difference(one.parts, _Net(jr.key(0))) > 1e-3
    np.testing.assert_allclose(losses_four, losses_one, rtol=1e-6)
    scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(eqx.filter(one.parts, eqx.is_array)))
    assert tree_max_difference(one.parts, four.parts) < 1e-6 * scale
    assert tree_max_difference(one.ema, four.ema) < 1e-6 * scale
    assert tree_max_difference(one.opt_state, four.opt_state) < 1e-6 * scale
    assert int(one.step) == int(four.step) == len(batches)
    np.testing.assert_array_equal(jr.key_data(one.key), jr.key_data(four.key))


def test_ema_follows_its_recursion_and_buffers_are_donated(batches):
    decay = 0.7
    state, _, models, mesh = _run(jax.devices()[:2], batches, ema_decay=decay, keep_models=True)
    models.append(state.parts)
    # EMA_0 = theta_0 and EMA_k = d EMA_{k-1} + (1 - d) theta_k.
    expected = np.asarray(models[0].conv1.weight)
    for model in models[1:]:
        expected = decay * expected + (1 - decay) * np.asarray(model.conv1.weight)
    np.testing.assert_allclose(np.asarray(state.ema.conv1.weight), expected, rtol=1e-5, atol=1e-7)
    # The old state's buffers were donated to the step.
    optimiser = make_optimiser(1e-3, 10)
    step = make_train_step(_loss, optimiser, decay, mesh)
    old = init_state(_Net(jr.key(0)), optimiser, jr.key(1), mesh)
    new, _ = step(old, shard_batch(batches[0], mesh))
    assert old.parts.conv1.weight.is_deleted() and not new.parts.conv1.weight.is_deleted()
    assert isinstance(new, TrainState)


def test_ema_warmup_ramps_the_decay(batches):
    """With warm-up the decay after step n is min(d, (1 + n) / (10 + n)): 0.1, 2/11, 3/12... until it
    reaches d; the EMA follows that recursion, and without warm-up the decay is d throughout."""
    decay = 0.2
    ramp = [float(ema_decay_at(decay, True, jnp.asarray(n))) for n in range(4)]
    np.testing.assert_allclose(ramp, [0.1, 2 / 11, 0.2, 0.2], rtol=1e-6)
    assert ema_decay_at(decay, False, jnp.asarray(0)) == decay
    assert float(ema_decay_at({"network": 0.999}, {"network": True}, jnp.asarray(5))["network"]) == np.float32(6 / 15)
    mesh = make_mesh(jax.devices()[:1])
    optimiser = make_optimiser(3e-3, 20, warmup_steps=2, clip_norm=1.0)
    state = init_state(_Net(jr.key(0)), optimiser, jr.key(1), mesh)
    step = make_train_step(_loss, optimiser, decay, mesh, ema_warmup=True)
    expected = np.asarray(state.parts.conv1.weight)
    for n, batch in enumerate(batches):
        state, _ = step(state, shard_batch(batch, mesh))
        d = min(decay, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * np.asarray(state.parts.conv1.weight)
    np.testing.assert_allclose(np.asarray(state.ema.conv1.weight), expected, rtol=1e-5, atol=1e-7)


def test_optimiser_schedule_and_clipping():
    # With a unit gradient, AdamW's first updates have size lr(step): 0 at the start of the
    # warm-up, the peak after it, final_lr_fraction * peak at the end of the cosine.
    optimiser = make_optimiser(0.1, 11, warmup_steps=1, final_lr_fraction=0.1, clip_norm=None)
    params = {"w": jnp.zeros(())}
    state = optimiser.init(params)
    sizes = []
    for _ in range(12):
        updates, state = optimiser.update({"w": jnp.ones(())}, state, params)
        sizes.append(-float(updates["w"]))
    np.testing.assert_allclose([sizes[0], sizes[1], sizes[11]], [0.0, 0.1, 0.01], rtol=1e-3, atol=1e-7)
    assert all(a >= b for a, b in zip(sizes[1:], sizes[2:]))
    # The logged rate (learning_rate_schedule) is the rate the optimiser applied, step by step.
    logged = learning_rate_schedule(0.1, 11, warmup_steps=1, final_lr_fraction=0.1)
    np.testing.assert_allclose(sizes, [float(logged(i)) for i in range(12)], rtol=1e-3, atol=1e-7)
    # Clipping: a gradient of norm 10 becomes norm 1 before Adam (seen by the second moment).
    clipped = make_optimiser(0.1, 10, clip_norm=1.0)
    state = clipped.init(params)
    _, state = clipped.update({"w": 10 * jnp.ones(())}, state, params)
    adam_state = state[1][0]
    assert isinstance(adam_state, optax.ScaleByAdamState)
    np.testing.assert_allclose(float(adam_state.nu["w"]), 0.001 * 1.0**2, rtol=1e-5)
    with pytest.raises(ValueError, match="warmup_steps"):
        make_optimiser(0.1, 10, warmup_steps=10)
    with pytest.raises(ValueError, match="ema_decay"):
        make_train_step(_loss, optimiser, 1.0, make_mesh(jax.devices()[:1]))


def test_batch_must_split_over_devices():
    with pytest.raises(ValueError, match="multiple of the number of devices 4"):
        shard_batch(np.zeros((6, 1, 4, 4), np.float32), make_mesh(jax.devices()[:4]))


def test_data_parallel_network_equals_one_device():
    # Networks with `batched` run under shard_map on a mesh of several devices: the same outputs,
    # sharded like the batch, and the same training trajectory as on one device.
    sde = sdeflow.sde.VPSDE(sdeflow.priors.Matern(dim=2, s=2.0))
    # No GroupNorm: with one channel per group the biases before it get zero gradient, which Adam
    # turns into round-off-sized noise of size lr, different on every device count.
    net = nets.FNO(1, 1, width=8, modes=3, depth=1, projection=8, norm=None, key=jr.key(0))
    x = np.asarray(jax.vmap(lambda k: sdeflow.priors.Matern(dim=2, s=1.5).sample(k, (1, 8, 8)))(jr.split(jr.key(1), 8)))
    mesh = make_mesh(jax.devices()[:4])
    t = jnp.linspace(0.1, 0.9, 8)
    parallel = jax.jit(lambda m, t, x: DataParallel(m, mesh).batched(t, x))(net, t, shard_batch(x, mesh))
    assert len(parallel.sharding.device_set) == 4 and not parallel.sharding.is_fully_replicated
    np.testing.assert_allclose(parallel, net.batched(t, jnp.asarray(x)), atol=1e-5)
    # a sub-batch that does not split over the devices (a loss's extra pass) runs as one
    odd = jax.jit(lambda m, t, x: DataParallel(m, mesh).batched(t, x))(net, t[:3], jnp.asarray(x[:3]))
    np.testing.assert_allclose(odd, net.batched(t[:3], jnp.asarray(x[:3])), atol=1e-5)

    def loss(model, x0, key):  # with the grid penalty's extra pass on 3 examples, which do not split over 4 devices
        return dsm_loss(model, sde, x0, key, consistency=ResolutionConsistency(1.0, examples=3))

    def run(devices):
        mesh = make_mesh(devices)
        optimiser = make_optimiser(3e-3, 10, warmup_steps=1)
        state = init_state(net, optimiser, jr.key(2), mesh)
        step = make_train_step(loss, optimiser, 0.9, mesh)
        losses = []
        for i in range(3):
            state, value = step(state, shard_batch(np.roll(x, i, axis=0), mesh))
            losses.append(float(value))
        return state, losses

    one, losses_one = run(jax.devices()[:1])
    four, losses_four = run(jax.devices()[:4])
    np.testing.assert_allclose(losses_four, losses_one, rtol=1e-5)
    assert tree_max_difference(one.parts, net) > 1e-3
    assert tree_max_difference(one.parts, four.parts) < 1e-5


def test_schedule_free_parts_evaluate_their_averaged_iterate(batches):
    """With schedule-free AdamW for one part of two (an `optax.multi_transform`, as
    `train.build.build_optimiser` makes it), the EMA (here of decay 0, so the last value) follows
    that part's averaged iterate $x = (y - (1 - \\beta_1) z) / \\beta_1$, not the gradient point
    $y$ the step trains, and the other part's weights as they are."""
    mesh = make_mesh(jax.devices()[:2])
    parts = {"network": _Net(jr.key(0)), "other": _Net(jr.key(3))}

    def loss(parts, x0, key):
        return _loss(parts["network"], x0, key) + _loss(parts["other"], x0, key)

    optimiser = optax.multi_transform(
        {"network": make_optimiser(3e-3, 20, warmup_steps=2, b1=0.8, schedule_free=True),
         "other": make_optimiser(3e-3, 20, warmup_steps=2)},
        {"network": "network", "other": "other"})
    state = init_state(parts, optimiser, jr.key(1), mesh)
    step = make_train_step(loss, optimiser, 0.0, mesh)
    for batch in batches:
        state, _ = step(state, shard_batch(batch, mesh))
    free = [n for n in jax.tree.leaves(state.opt_state, is_leaf=lambda n: isinstance(n, optax.contrib.ScheduleFreeState))
            if isinstance(n, optax.contrib.ScheduleFreeState)]
    assert len(free) == 1 and isinstance(free[0].z["other"], optax.MaskedNode)
    y, z = np.asarray(state.parts["network"].conv1.weight), np.asarray(free[0].z["network"].conv1.weight)
    np.testing.assert_allclose(np.asarray(state.ema["network"].conv1.weight), (y - 0.2 * z) / 0.8, rtol=1e-5, atol=1e-7)
    assert float(np.max(np.abs(np.asarray(state.ema["network"].conv1.weight) - y))) > 1e-4
    assert tree_max_difference(state.ema["other"], state.parts["other"]) == 0.0
    assert tree_max_difference(evaluation_params(state.opt_state, state.parts), state.ema) < 1e-6
    # one schedule-free optimiser on a single part: the same rule
    single = make_optimiser(3e-3, 20, schedule_free=True)
    net = parts["network"]
    single_state = single.init(eqx.filter(net, eqx.is_array))
    np.testing.assert_allclose(np.asarray(evaluation_params(single_state, net).conv1.weight),
                               np.asarray(net.conv1.weight), rtol=1e-6)  # x = y = z at the start


def test_frozen_parts_stay_as_they_are(batches):
    """A step trains only the named parts: the others, and their EMA, keep their values bit for
    bit, and the optimiser holds state for the trained arrays only."""
    mesh = make_mesh(jax.devices()[:2])
    parts = {"network": _Net(jr.key(0)), "frozen": _Net(jr.key(3))}

    def loss(parts, x0, key):  # both parts enter the loss: the frozen one gets no update anyway
        return _loss(parts["network"], x0, key) + _loss(parts["frozen"], x0, key)

    optimiser = make_optimiser(3e-3, 20, warmup_steps=0)
    state = init_state(parts, optimiser, jr.key(1), mesh, trainable={"network"})
    count = len(jax.tree.leaves(state.opt_state))
    step = make_train_step(loss, optimiser, 0.5, mesh, trainable={"network"})
    for batch in batches:
        state, _ = step(state, shard_batch(batch, mesh))
    assert tree_max_difference(state.parts["frozen"], parts["frozen"]) == 0.0
    assert tree_max_difference(state.ema["frozen"], parts["frozen"]) == 0.0
    assert tree_max_difference(state.parts["network"], parts["network"]) > 1e-3
    assert tree_max_difference(state.ema["network"], parts["network"]) > 1e-4
    every = init_state(parts, optimiser, jr.key(1), mesh)
    assert len(jax.tree.leaves(every.opt_state)) > count  # the frozen part's moments are not kept
    with pytest.raises(ValueError, match="must be among the parts"):
        init_state(parts, optimiser, jr.key(1), mesh, trainable={"schedule"})


def test_a_non_finite_step_changes_nothing_and_is_located(batches):
    """A step whose loss or a gradient is not finite applies no update (parts, EMA and optimiser
    state unchanged), still advances the key and the step, counts itself, and records the first
    such step and where it appeared: an index into every part's leaves, trained or not, so that it
    names the same array in a later stage that trains other parts."""
    from train.step import gradient_names

    mesh = make_mesh(jax.devices()[:1])
    # the frozen part's leaves come first, with a None field (a Linear without bias)
    parts = {"frozen": eqx.nn.Linear(3, 3, use_bias=False, key=jr.key(2)), "network": _Net(jr.key(0))}
    optimiser = make_optimiser(3e-3, 20, warmup_steps=0)

    def loss(parts, x0, key):  # finite value; the gradient of conv2's bias is NaN when x0 is positive
        net = parts["network"]
        positive, b2 = jnp.mean(x0) > 0, jnp.sum(net.conv2.bias) ** 2
        root = jnp.sqrt(jnp.where(positive, -1.0 - b2, 1.0 + b2))  # NaN, with a NaN derivative, if positive
        return _loss(net, x0, key) + jnp.where(positive, 0.0, 0.0 * root)

    step = make_train_step(loss, optimiser, 0.5, mesh, trainable={"network"})
    state = init_state(parts, optimiser, jr.key(1), mesh, trainable={"network"})
    state, _ = step(state, shard_batch(-np.abs(batches[0]), mesh))  # a good step
    before = jax.tree.map(np.asarray, eqx.filter((state.parts, state.ema, state.opt_state), eqx.is_array))
    key = np.asarray(jr.key_data(state.key))
    state, value = step(state, shard_batch(np.abs(batches[1]), mesh))  # the NaN gradient
    assert np.isfinite(float(value)) and int(state.step) == 2 and int(state.skipped) == 1
    after = jax.tree.map(np.asarray, eqx.filter((state.parts, state.ema, state.opt_state), eqx.is_array))
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
    assert not np.array_equal(np.asarray(jr.key_data(state.key)), key)
    index, leaf = (int(v) for v in state.first_bad)
    assert index == 1 and gradient_names(parts)[leaf] == "['network'].conv2.bias"
    state, _ = step(state, shard_batch(-np.abs(batches[2]), mesh))  # training goes on
    assert int(state.skipped) == 1 and tuple(int(v) for v in state.first_bad) == (1, leaf)
    assert gradient_names(parts)[0] == "loss"


class _RunningMean(eqx.Module):
    """A part with statistics and no gradient: the running mean of the batches' mean values."""

    total: jax.Array
    count: jax.Array

    def with_statistics(self, other: "_RunningMean") -> "_RunningMean":
        return other


def test_statistics_a_loss_returns_replace_the_parts_and_their_ema(batches):
    """A loss returning `(value, statistics)` has `statistics[name]` put into part `name` and its
    EMA after each applied update (a frozen part included, the EMA not averaged again); a step
    whose gradient is not finite applies none of it."""
    mesh = make_mesh(jax.devices()[:2])
    parts = {"network": _Net(jr.key(0)), "mean": _RunningMean(jnp.zeros(()), jnp.zeros(()))}

    def loss(parts, x0, key):
        m = parts["mean"]
        updated = _RunningMean(m.total + jax.lax.stop_gradient(jnp.mean(x0)), m.count + 1.0)
        bad = jnp.where(jnp.mean(x0) > 5.0, jnp.nan, 0.0)  # a NaN loss for the shifted batch below
        return _loss(parts["network"], x0, key) + bad, {"mean": updated}

    optimiser = make_optimiser(3e-3, 20, warmup_steps=0)
    state = init_state(parts, optimiser, jr.key(1), mesh, trainable={"network"})
    step = make_train_step(loss, optimiser, 0.9, mesh, trainable={"network"})
    for batch in batches[:3]:
        state, _ = step(state, shard_batch(batch, mesh))
    state, _ = step(state, shard_batch(batches[3] + 10.0, mesh))  # not applied
    want = np.mean([np.mean(b) for b in batches[:3]])
    for tree in (state.parts, state.ema):
        assert float(tree["mean"].count) == 3.0
        np.testing.assert_allclose(float(tree["mean"].total) / 3.0, want, rtol=1e-5)
    assert int(state.skipped) == 1
    with pytest.raises(ValueError, match="not among the parts"):
        bad_step = make_train_step(lambda p, x, k: (loss(p, x, k)[0], {"other": p["mean"]}), optimiser, 0.9, mesh,
                                   trainable={"network"})
        bad_step(state, shard_batch(batches[0], mesh))


def test_schedule_free_warm_up_is_the_logged_schedule():
    """Schedule-free AdamW runs on `learning_rate_schedule` (the logged rate): its updates equal
    optax's own warm-up rule's to the last bit."""
    import jax.numpy as jnp
    import optax

    params = {"w": jnp.arange(6.0)}
    ours = make_optimiser(0.1, 20, warmup_steps=5, schedule_free=True, clip_norm=None)
    theirs = optax.contrib.schedule_free_adamw(0.1, warmup_steps=5, b1=0.9, b2=0.999, weight_decay=0.0)
    sa, sb, pa, pb = ours.init(params), theirs.init(params), params, params
    for i in range(12):
        g = {"w": jnp.sin(pa["w"] * (i + 1))}
        ua, sa = ours.update(g, sa, pa)
        ub, sb = theirs.update(g, sb, pb)
        pa, pb = optax.apply_updates(pa, ua), optax.apply_updates(pb, ub)
    np.testing.assert_array_equal(np.asarray(pa["w"]), np.asarray(pb["w"]))
    assert not np.allclose(np.asarray(pa["w"]), np.asarray(params["w"]))
