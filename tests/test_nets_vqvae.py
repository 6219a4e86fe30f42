"""nets.VQVAE and nets.VectorQuantiser: the straight-through estimator, the moving-average codebook
update and its restarts against hand computations, code statistics in closed form, the latent grid
across resolutions, and a few training steps."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import nets

from helpers import max_abs


# one configuration of weights' shapes for both models, so that their initialisations compile once
TINY = {"in_channels": 1, "latent_channels": 4, "num_codes": 16, "width": 8, "res_blocks": 0}


def _quantiser(key, *, sums, counts, idle=None, decay=0.9, epsilon=0.1, restart_after=100):
    q = nets.VectorQuantiser(sums.shape[0], sums.shape[1], decay=decay, epsilon=epsilon,
                             restart_after=restart_after, key=key)
    idle = jnp.zeros(sums.shape[0]) if idle is None else jnp.asarray(idle, jnp.float32)
    return eqx.tree_at(lambda q: (q.sums, q.counts, q.idle), q,
                       (jnp.asarray(sums, jnp.float32), jnp.asarray(counts, jnp.float32), idle))


def _smoothed(counts, epsilon):
    total = counts.sum()
    return (counts + epsilon) / (total + len(counts) * epsilon) * total


def test_nearest_codes_and_straight_through_gradient(getkey):
    """`z_q` holds the nearest codes, and the gradient of $f(z_q)$ with respect to $z$ is $f'$ at
    $z_q$ (the straight-through estimator)."""
    q = nets.VectorQuantiser(8, 3, init_scale=1.0, key=getkey())
    rng = np.random.default_rng(0)
    z = jnp.asarray(rng.normal(size=(3, 5, 2)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 5, 2)), jnp.float32)

    def f(q, z):
        return jnp.sum(w * jnp.sin(q.quantise(z)[0]))

    @jax.jit
    def run(q, z):
        return q.quantise(z), q.codebook, jax.grad(f, argnums=(0, 1))(q, z)

    (z_q, indices), codebook, (grad_q, grad_z) = run(q, z)
    vectors = np.asarray(z).reshape(3, -1).T
    distances = ((vectors[:, None, :] - np.asarray(codebook)[None]) ** 2).sum(-1)
    assert indices.shape == (5, 2) and indices.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(indices).ravel(), distances.argmin(1))
    assert max_abs(z_q, np.asarray(codebook)[np.asarray(indices)].transpose(2, 0, 1)) < 1e-6
    assert max_abs(grad_z, w * jnp.cos(z_q)) < 1e-6
    # the codebook gets no gradient: it is learned by moving averages
    assert float(jnp.max(jnp.abs(grad_q.sums))) == 0.0


def test_update_by_hand_with_a_restart(getkey):
    """One jitted `updated` equals the formulas: counts and sums decay towards the batch's, the
    codes are sums over Laplace-smoothed counts, an unused code's idle counter grows by one; and
    the code idle for more than `restart_after` updates moves onto an encoding of the batch with
    count 1, while the used codes and the code idle for less keep their moving averages."""
    rng = np.random.default_rng(0)
    sums, counts = rng.normal(size=(4, 3)), np.array([1.0, 2.0, 1.0, 3.0])
    q = _quantiser(getkey(), sums=sums, counts=counts, idle=[5.0, 2.0, 1.0, 0.0], restart_after=2)
    z = rng.normal(size=(2, 3, 4))
    indices = np.zeros((2, 4), np.int32)
    indices[0, 1] = 3  # codes 0 and 3 used
    new, codebook = eqx.filter_jit(
        lambda q, z, i, k: (lambda n: (n, n.codebook))(q.updated(z, i, k))
    )(q, jnp.asarray(z, jnp.float32), jnp.asarray(indices), getkey())

    vectors = z.transpose(0, 2, 1).reshape(-1, 3)
    n = np.array([7.0, 0.0, 0.0, 1.0])
    s = np.stack([vectors[np.ravel(indices) == k].sum(0) for k in range(4)])
    ema_counts, ema_sums = 0.9 * counts + 0.1 * n, 0.9 * sums + 0.1 * s
    ema_codebook = ema_sums / _smoothed(ema_counts, 0.1)[:, None]
    assert np.min(np.abs(vectors - np.asarray(codebook[1])).max(1)) < 1e-5  # a batch encoding
    assert np.min(np.abs(vectors - ema_codebook[1]).max(1)) > 1e-2  # which the average is not
    assert max_abs(new.counts, np.where(np.arange(4) == 1, 1.0, ema_counts)) < 1e-6
    np.testing.assert_array_equal(np.asarray(new.idle), [0.0, 0.0, 2.0, 0.0])
    assert max_abs(codebook[np.array([0, 2, 3])], ema_codebook[[0, 2, 3]]) < 1e-5
    # the smoothing is there: without it, the codes would be sums / counts
    assert max_abs(codebook[2], ema_sums[2] / ema_counts[2]) > 1e-2
    # the statistics are consistent: the codes are the sums over the smoothed counts
    smoothed = _smoothed(np.asarray(new.counts), 0.1)
    assert max_abs(new.sums, np.asarray(codebook) * smoothed[:, None]) < 1e-5


def test_statistics_in_closed_form(getkey):
    """Perplexity $K$ and usage 1 for uniform usage, 1 and $1/K$ for one code, $2^{3/2}$ for the
    frequencies (1/2, 1/4, 1/4)."""
    q = nets.VectorQuantiser(8, 2, key=getkey())
    uniform, single, mixed = jax.jit(lambda q: (
        q.statistics(jnp.tile(jnp.arange(8), (3, 2))),
        q.statistics(jnp.full((4, 4), 5)),
        q.statistics(jnp.array([1, 1, 2, 6])),
    ))(q)
    assert float(uniform["perplexity"]) == pytest.approx(8.0, rel=1e-5)
    assert float(uniform["usage"]) == 1.0
    assert float(single["perplexity"]) == pytest.approx(1.0, rel=1e-6)
    assert float(single["usage"]) == pytest.approx(1 / 8)
    assert float(mixed["perplexity"]) == pytest.approx(2**1.5, rel=1e-5)
    assert float(mixed["usage"]) == pytest.approx(3 / 8)


def test_latent_grid_is_a_fixed_fraction_across_resolutions(getkey):
    """One model encodes 32^2 to 8^2 and 64^2 to 16^2 and decodes back; shifting the input by 4
    points on the torus shifts the latent by 1; a grid of 30 is refused."""
    model = nets.VQVAE(**TINY, downsamplings=2, key=getkey())
    x = np.random.default_rng(0).normal(size=(1, 32, 32))
    pair = jnp.asarray(np.stack([x, np.roll(x, (4, -8), axis=(1, 2))]), jnp.float32)
    z_e, indices = eqx.filter_jit(lambda m, x: (lambda z: (z, jax.vmap(m.quantise)(z)[1]))(
        jax.vmap(m.encode)(x)))(model, pair)
    assert model.latent_grid((32, 32)) == (8, 8) and model.latent_grid((64, 64)) == (16, 16)
    assert z_e.shape == (2, 4, 8, 8) and indices.shape == (2, 8, 8)
    assert max_abs(z_e[1], jnp.roll(z_e[0], (1, -2), axis=(1, 2))) < 1e-5
    assert np.array_equal(indices[1], jnp.roll(indices[0], (1, -2), axis=(0, 1)))
    out = eqx.filter_eval_shape(model, jax.ShapeDtypeStruct((1, 32, 32), jnp.float32))
    assert [o.shape for o in out] == [(1, 32, 32), (4, 8, 8), (8, 8)]
    # the same weights on 64^2 (shapes only: no second compilation)
    out = eqx.filter_eval_shape(model, jax.ShapeDtypeStruct((1, 64, 64), jnp.float32))
    assert [o.shape for o in out] == [(1, 64, 64), (4, 16, 16), (16, 16)]
    with pytest.raises(ValueError, match=r"multiples of 4, got grid \(30, 32\)"):
        model.check_grid((30, 32))
    with pytest.raises(ValueError, match=r"grid \(30, 32\)"):
        model.encode(jnp.zeros((1, 30, 32)))
    line = eqx.filter_eval_shape(lambda key: nets.VQVAE(
        in_channels=2, latent_channels=3, num_codes=4, dim=1, width=4, downsamplings=3, key=key
    ), getkey())
    out = eqx.filter_eval_shape(line, jax.ShapeDtypeStruct((2, 48), jnp.float32))
    assert [o.shape for o in out] == [(2, 48), (3, 6), (6,)] and line.latent_grid((48,)) == (6,)


def test_jitted_training_lowers_the_reconstruction_error(getkey):
    """Jitted steps (loss, gradient, Adam, then the codebook's update put back with
    `with_statistics`, scanned) lower the reconstruction error of a tiny batch clearly; the
    straight-through gradient reaches the encoder, and the codebook gets none."""
    model = nets.VQVAE(**TINY, downsamplings=1, decay=0.9, restart_after=10, key=getkey())
    grid = np.linspace(0.0, 2 * np.pi, 16, endpoint=False)
    phases = np.random.default_rng(0).uniform(0.0, 2 * np.pi, (4, 1, 1))
    x = (np.sin(grid[None, :, None] + phases) * np.cos(grid[None, None, :]))[:, None]
    x = jnp.asarray(x, jnp.float32)
    optimiser = optax.adam(3e-3)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def step(carry, key):
        params, state = carry

        def loss(params):
            loss, quantiser, metrics = nets.vqvae_loss(eqx.combine(params, static), x, key)
            return loss, (quantiser, metrics)

        (_, (quantiser, metrics)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, state = optimiser.update(grads, state, params)
        model = eqx.combine(eqx.apply_updates(params, updates), static)
        model = model.with_statistics(quantiser)
        out = (metrics["reconstruction"], jnp.max(jnp.abs(grads.encoder_in.weight)),
               jnp.max(jnp.abs(grads.quantiser.sums)), quantiser.counts)
        return (eqx.filter(model, eqx.is_inexact_array), state), out

    @jax.jit
    def train(params, keys):
        return jax.lax.scan(step, (params, optimiser.init(params)), keys)

    (params, _), (errors, encoder_grads, codebook_grads, counts) = train(
        params, jr.split(getkey(), 30))
    errors = np.asarray(errors)
    assert np.mean(errors[-5:]) < 0.5 * errors[0], errors
    assert np.all(np.asarray(encoder_grads) > 0) and np.all(np.asarray(codebook_grads) == 0)
    assert max_abs(params.quantiser.counts, counts[-1]) == 0.0  # the last update, put back


def test_loss_in_closed_form_and_the_commitment_term_pulls_encodings_to_their_codes(getkey):
    """`vqvae_loss` is $\\mathrm{mean}(\\hat x - x)^2 + \\beta\\,\\mathrm{mean}(z_e - \\mathrm{sg}(z_q))^2$:
    its value, and the commitment term's gradient, which reaches the encoder as that of the
    distance to fixed codes (and no code)."""
    model = nets.VQVAE(**TINY, downsamplings=1, key=getkey())
    x = jr.normal(getkey(), (3, 1, 8, 8))
    key = getkey()

    @eqx.filter_jit
    def terms(model, beta):
        params, static = eqx.partition(model, eqx.is_inexact_array)
        (loss, (_, metrics)), grads = jax.value_and_grad(
            lambda p: (lambda out: (out[0], out[1:]))(nets.vqvae_loss(eqx.combine(p, static), x, key,
                                                                      commitment=beta)), has_aux=True)(params)
        return loss, metrics, grads

    @eqx.filter_jit
    def by_hand(model):
        z_e = jax.vmap(model.encode)(x)
        z_q = jax.lax.stop_gradient(jax.vmap(model.quantise)(z_e)[0])
        reconstruction = jnp.mean((jax.vmap(model.decode)(z_q) - x) ** 2)

        def distance(model):
            return jnp.mean((jax.vmap(model.encode)(x) - z_q) ** 2)

        return reconstruction, distance(model), eqx.filter_grad(distance)(model)

    reconstruction, distance, grad_distance = by_hand(model)
    loss, metrics, grads = terms(model, 0.25)
    loss0, _, grads0 = terms(model, 0.0)
    assert float(distance) > 1e-3  # the encodings are not on their codes at initialisation
    assert float(metrics["reconstruction"]) == pytest.approx(float(reconstruction), rel=1e-5)
    assert float(metrics["commitment"]) == pytest.approx(float(distance), rel=1e-5)
    assert float(loss) == pytest.approx(float(reconstruction + 0.25 * distance), rel=1e-5)
    assert float(loss0) == pytest.approx(float(reconstruction), rel=1e-5)
    # The commitment term's share of the gradient: 0.25 times the distance's, on the encoder.
    share = jax.tree.map(lambda a, b: a - b, grads.encoder_in.weight, grads0.encoder_in.weight)
    expected = 0.25 * grad_distance.encoder_in.weight
    assert max_abs(share, expected) < 1e-4 * float(jnp.max(jnp.abs(expected)))
    assert float(jnp.max(jnp.abs(expected))) > 0
    assert float(jnp.max(jnp.abs(grads.quantiser.sums))) == 0.0


def test_residual_block_adds_its_branch_to_its_input(getkey):
    """A residual block is `h + branch(h)`: with the branch's last convolution zero it is the
    identity, and a model with residual blocks is still shift-equivariant."""
    block = nets.vqvae.ResidualBlock(2, 4, key=getkey())
    h = jr.normal(getkey(), (4, 8, 8))
    silent = eqx.tree_at(lambda b: (b.conv1.weight, b.conv1.bias), block,
                         (jnp.zeros_like(block.conv1.weight), jnp.zeros_like(block.conv1.bias)))
    assert max_abs(silent(h), h) == 0.0
    assert max_abs(block(h), h) > 1e-3
    model = nets.VQVAE(**{**TINY, "res_blocks": 1}, downsamplings=1, key=getkey())
    x = jr.normal(getkey(), (1, 8, 8))
    z, shifted = eqx.filter_jit(lambda m: (m.encode(x), m.encode(jnp.roll(x, (2, -4), axis=(1, 2)))))(model)
    assert max_abs(shifted, jnp.roll(z, (1, -2), axis=(1, 2))) < 1e-5
