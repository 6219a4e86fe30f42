"""Denoising score matching in function space."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Field
from ..parameterisation import check_parameterisation, from_epsilon, to_epsilon
from ..sde import AbstractSDE
from .time_sampling import sample_times
from .weighting import AbstractWeighting, make_weighting


NORMS: tuple[str, ...] = ("l2", "cameron_martin")


def squared_norm(sde: AbstractSDE, v: Field, norm: str) -> Float[Array, ""]:
    """$\\|v\\|^2$ of one field: `"l2"` is the $L^2(\\mathbb{T}^d)$ norm (mean over grid points, summed over
    channels), finite as the grid is refined for $\\epsilon \\sim N(0, C)$ with $C$ trace class;
    `"cameron_martin"` is $\\|C^{-1/2} v\\|^2_{L^2} = \\sum_k |\\hat v_k|^2 / \\lambda_k$ on the grid, the norm of
    the likelihood, which grows with the resolution."""
    if norm == "l2":
        return jnp.sum(jnp.mean(v**2, axis=tuple(range(1, v.ndim))))
    if norm == "cameron_martin":
        w = sde.prior.apply_inv_sqrt(v)
        return jnp.sum(jnp.mean(w**2, axis=tuple(range(1, v.ndim))))
    raise ValueError(f"`norm` must be one of {NORMS}, got {norm!r}.")


def dsm_loss(
    model: Callable[..., Field],
    sde: AbstractSDE,
    x0: Float[Array, "batch c *grid"],
    key: PRNGKeyArray,
    *,
    parameterisation: str = "epsilon",
    weighting: str | AbstractWeighting = "simple",
    time_sampling: str = "stratified",
    norm: str = "l2",
    self_conditioning: float | None = None,
) -> Float[Array, ""]:
    """The batch mean of $w(t) \\|\\hat\\epsilon(t, x_t) - \\epsilon\\|^2$, $x_t = m x_0 + b + s \\epsilon$,
    $\\epsilon \\sim N(0, C)$.

    The network predicts `parameterisation` (`"epsilon"`, `"x0"`, `"v"` or `"score"`); its output is
    converted exactly to $\\hat\\epsilon$, so the objective is fixed by the weighting alone.

    **Arguments:**

    - `model`: acts on one sample: `model(t, x_t) -> output` of the shape of `x_t`. A
      self-conditioned model (`self_conditioning` not None) is called on the channels of `x_t`
      followed by those of an estimate of $x_0$, so it takes `2 c` input channels.
    - `sde`: the forward SDE.
    - `x0`: a batch of clean fields, `(batch, c, *grid)`.
    - `key`: a JAX random key.
    - `parameterisation`: what the model predicts.
    - `weighting`: `"simple"`, `"likelihood"`, `"p2"` or an `AbstractWeighting`.
    - `time_sampling`: `"uniform"`, `"stratified"` or `"antithetic"`.
    - `norm`: `"l2"` or `"cameron_martin"` (see `squared_norm`).
    - `self_conditioning`: `None` for a plain model; for a self-conditioned one, the probability that
      the extra channels hold the model's own detached estimate of $x_0$ (from a first pass with
      zeros) rather than zeros.

    **Returns:**

    The scalar loss.
    """
    check_parameterisation(parameterisation)
    if self_conditioning is not None and not 0.0 <= self_conditioning <= 1.0:
        raise ValueError(f"`self_conditioning` must be a probability, got {self_conditioning}.")
    if x0.ndim < 3:
        raise ValueError(f"`x0` must be a batch of fields (batch, c, *grid), got shape {x0.shape}.")
    weight_fn = make_weighting(weighting)
    batch = x0.shape[0]
    t_key, noise_key, sc_key = jr.split(key, 3)
    t = sample_times(t_key, batch, sde.t0, sde.t1, time_sampling)

    def one(t, x0, noise_key, sc_key):
        x_t, eps = sde.perturb(noise_key, t, x0)
        m, s = sde.marginal(t)
        b = sde.mean(t, jnp.zeros_like(x0))
        if self_conditioning is not None:
            zeros = jnp.zeros_like(x_t)
            first = model(t, jnp.concatenate([x_t, zeros]))
            estimate = from_epsilon("x0", to_epsilon(parameterisation, first, x_t, m, s, b), x_t, m, s, b)
            use = jr.bernoulli(sc_key, self_conditioning)
            cond = jnp.where(use, jax.lax.stop_gradient(estimate), zeros)
            output = model(t, jnp.concatenate([x_t, cond]))
        else:
            output = model(t, x_t)
        eps_hat = to_epsilon(parameterisation, output, x_t, m, s, b)
        return weight_fn(sde, t) * squared_norm(sde, eps_hat - eps, norm)

    keys = jr.split(noise_key, batch), jr.split(sc_key, batch)
    return jnp.mean(jax.vmap(one)(t, x0, *keys))
