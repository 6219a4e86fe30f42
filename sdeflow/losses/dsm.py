"""Denoising score matching in function space."""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..custom_types import Field
from ..parameterisation import AbstractParameterisation, check_parameterisation, Epsilon, X0
from ..sde import AbstractSDE
from .consistency import ResolutionConsistency
from .norms import AbstractNorm, check_norm, L2Norm
from .time_sampling import AbstractTimeSampling, check_time_sampling, StratifiedTimeSampling
from .weighting import AbstractWeighting, check_weighting, SimpleWeighting


def apply_batched(
    model: Callable[..., Field], t: Float[Array, " batch"], x: Float[Array, "batch c *grid"]
) -> Float[Array, "batch o *grid"]:
    """`jax.vmap(model)(t, x)`, through `model.batched(t, x)` when the network offers one.

    Every network in `nets` acts on one sample and also has a `batched` method computing the same
    thing on a batch in a faster memory layout; losses call the network once per batch through here.

    **Arguments:**

    - `model`: a one-sample network `model(t, x) -> output`, optionally with `batched`.
    - `t`: the batch's times.
    - `x`: the batch's inputs.

    **Returns:**

    The batch of outputs.
    """
    batched = getattr(model, "batched", None)
    if callable(batched):
        return batched(t, x)
    return jax.vmap(model)(t, x)


def perturb_batch(
    sde: AbstractSDE, key: PRNGKeyArray, t: Float[Array, " batch"], x0: Float[Array, "batch c *grid"]
) -> tuple[Array, Array, Array, Array, Array]:
    """Noisy inputs of a batch: `(x_t, eps, m, s, b)` with $x_t = m x_0 + b + s \\epsilon$ per sample
    ($m$, $s$ broadcastable against the fields).

    **Arguments:**

    - `sde`: the forward SDE.
    - `key`: a JAX random key, split into one key per sample.
    - `t`: the batch's times, shape `(batch,)`.
    - `x0`: a batch of clean fields, `(batch, c, *grid)`.

    **Returns:**

    A tuple `(x_t, eps, m, s, b)`: the noisy fields `x_t` and the noise `eps` $\\sim N(0, C)$, both
    of shape `(batch, c, *grid)`; the marginal coefficients `m` and `s` at each sample's time, of
    shape `(batch, 1, ..., 1)` (as many axes as `x0`); and the offsets `b` $= b(t)$, the mean of
    $X_t$ given $X_0 = 0$, of shape `(batch, c, *grid)`.
    """
    x_t, eps = jax.vmap(sde.perturb)(jr.split(key, x0.shape[0]), t, x0)
    m, s = jax.vmap(sde.marginal)(t)
    b = jax.vmap(sde.mean)(t, jnp.zeros_like(x0))
    expand = (slice(None),) + (None,) * (x0.ndim - 1)
    return x_t, eps, m[expand], s[expand], b


def dsm_loss(
    model: Callable[..., Field],
    sde: AbstractSDE,
    x0: Float[Array, "batch c *grid"],
    key: PRNGKeyArray,
    *,
    parameterisation: AbstractParameterisation = Epsilon(),
    weighting: AbstractWeighting = SimpleWeighting(),
    time_sampling: AbstractTimeSampling = StratifiedTimeSampling(),
    norm: AbstractNorm = L2Norm(),
    self_conditioning: float | None = None,
    consistency: ResolutionConsistency | None = None,
) -> Float[Array, ""]:
    """The batch mean of $w(t) \\|\\hat\\epsilon(t, x_t) - \\epsilon\\|^2$, $x_t = m x_0 + b + s \\epsilon$,
    $\\epsilon \\sim N(0, C)$.

    The network predicts `parameterisation` (`Epsilon()`, `X0()`, `V()` or `Score()` of
    `sdeflow.parameterisation`); its output is converted exactly to $\\hat\\epsilon$, so the
    objective is fixed by the weighting alone.

    **Arguments:**

    - `model`: acts on one sample: `model(t, x_t) -> output` of the shape of `x_t` (called on the
      whole batch through `apply_batched`). A self-conditioned model (`self_conditioning` not None)
      is called on the channels of `x_t` followed by those of an estimate of $x_0$, so it takes
      `2 c` input channels.
    - `sde`: the forward SDE.
    - `x0`: a batch of clean fields, `(batch, c, *grid)`.
    - `key`: a JAX random key.
    - `parameterisation`: what the model predicts, an `AbstractParameterisation`.
    - `weighting`: the time weighting, an `AbstractWeighting` (`SimpleWeighting()`,
      `LikelihoodWeighting()`, `P2Weighting(...)`).
    - `time_sampling`: how the batch's times are drawn, an `AbstractTimeSampling`
      (`UniformTimeSampling()`, `StratifiedTimeSampling()`, `AntitheticTimeSampling()`).
    - `norm`: the norm of the error, an `AbstractNorm` (`L2Norm()`, `CameronMartinNorm()`).
    - `self_conditioning`: `None` for a plain model; for a self-conditioned one, the probability that
      the extra channels hold the model's own detached estimate of $x_0$ (from a first pass with
      zeros) rather than zeros.
    - `consistency`: `None`, or a `ResolutionConsistency` whose penalty on the network's grid
      dependence (its estimate on a finer grid restricted back, for the same input) is added.

    **Returns:**

    The scalar loss.
    """
    check_parameterisation(parameterisation)
    check_weighting(weighting)
    check_time_sampling(time_sampling)
    check_norm(norm)
    if consistency is not None and not isinstance(consistency, ResolutionConsistency):
        raise TypeError(f"`consistency` must be None or a sdeflow.losses.ResolutionConsistency, got {consistency!r}.")
    if self_conditioning is not None and not 0.0 <= self_conditioning <= 1.0:
        raise ValueError(f"`self_conditioning` must be a probability, got {self_conditioning}.")
    if x0.ndim < 3 or x0.shape[0] < 1:
        raise ValueError(f"`x0` must be a non-empty batch of fields (batch, c, *grid), got shape {x0.shape}.")
    batch = x0.shape[0]
    t_key, noise_key, sc_key = jr.split(key, 3)
    t = time_sampling(t_key, batch, sde.t0, sde.t1)
    x_t, eps, m, s, b = perturb_batch(sde, noise_key, t, x0)
    if self_conditioning is not None:
        zeros = jnp.zeros_like(x_t)
        first = apply_batched(model, t, jnp.concatenate([x_t, zeros], axis=1))
        estimate = X0().from_epsilon(parameterisation.to_epsilon(first, x_t, m, s, b), x_t, m, s, b)
        use = jr.bernoulli(sc_key, self_conditioning, (batch,) + (1,) * (x0.ndim - 1))
        cond = jnp.where(use, jax.lax.stop_gradient(estimate), zeros)
        inputs = jnp.concatenate([x_t, cond], axis=1)
    else:
        inputs = x_t
    output = apply_batched(model, t, inputs)
    eps_hat = parameterisation.to_epsilon(output, x_t, m, s, b)
    weights = jax.vmap(lambda t: weighting(sde, t))(t)
    norms = jax.vmap(lambda v: norm.squared(sde, v))(eps_hat - eps)
    loss = jnp.mean(weights * norms)
    if consistency is not None and consistency.weight > 0:
        loss = loss + consistency(functools.partial(apply_batched, model), parameterisation, norm, sde, weights,
                                  t, inputs, eps_hat, x_t, m, s, b)
    return loss
