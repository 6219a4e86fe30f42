"""The continuous-time ELBO of variational diffusion models, on a grid."""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..custom_types import Field
from ..grid import field_grid, integer_frequencies
from ..parameterisation import AbstractParameterisation, check_parameterisation, Epsilon
from ..sde import AbstractSDE
from .dsm import apply_batched, perturb_batch
from .time_sampling import AbstractTimeSampling, check_time_sampling, StratifiedTimeSampling


def _kept_count(x: Field) -> int:
    """The dimension of the grid law: kept modes per channel (all points on odd grids).

    A mode is kept when $|k_i| < n_i / 2$ on every axis (`kept_modes`), so an axis contributes
    its $n_i$ frequencies on an odd grid and $n_i - 1$ on an even one (no Nyquist bin). Computed
    with NumPy from the static shape, so that the ELBO runs under `jax.jit`.
    """
    grid = field_grid(x)
    per_channel = math.prod(
        int(np.count_nonzero(2 * np.abs(integer_frequencies(n)) < n)) for n in grid
    )
    return per_channel * x.shape[0]


def vdm_elbo(
    model: Callable[..., Field],
    sde: AbstractSDE,
    x0: Float[Array, "batch c *grid"],
    key: PRNGKeyArray,
    *,
    parameterisation: AbstractParameterisation = Epsilon(),
    time_sampling: AbstractTimeSampling = StratifiedTimeSampling(),
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """The negative ELBO in nats per sample on the grid of `x0` (an upper bound on $-\\log p(x_0)$).

    With $\\gamma = \\log(s^2/m^2)$ and $\\|v\\|^2_{C} = \\sum_k |\\hat v_k|^2 / \\lambda_k$ over the kept modes:

    - diffusion: $\\frac12 (t_1 - t_0) E_t[\\gamma'(t) \\|\\hat\\epsilon - \\epsilon\\|_C^2]$ (Kingma et al.,
      2021, continuous time), the only term with gradients to the network (and to a learned schedule);
    - prior: $KL(N(m_1 x_0 + b_1, s_1^2 C) \\| N(b_1, s_1^2 C)) = m_1^2 \\|x_0\\|_C^2 / (2 s_1^2)$ against the
      terminal law the samplers start from;
    - reconstruction: $-E \\log N(x_0; (x_{t_0} - b_0)/m_0, (s_0/m_0)^2 C)$, a Gaussian decoder.

    Needs a non-degenerate prior. Reported per sample; divide by the number of dimensions and
    $\\log 2$ for bits per dimension at this resolution.

    **Arguments:**

    - `model`: acts on one sample, `model(t, x_t) -> output`.
    - `sde`: the forward SDE.
    - `x0`: a batch of clean fields `(batch, c, *grid)`.
    - `key`: a JAX random key.
    - `parameterisation`: what the model predicts, an `AbstractParameterisation`.
    - `time_sampling`: how the diffusion term's times are drawn, an `AbstractTimeSampling`.

    **Returns:**

    `(loss, terms)`: the batch mean of the negative ELBO and a dict of its three terms.
    """
    check_parameterisation(parameterisation)
    check_time_sampling(time_sampling)
    if sde.prior.degenerate:
        raise ValueError("the ELBO needs a non-degenerate prior (its log-density); use Matern.")
    batch = x0.shape[0]
    t_key, noise_key = jr.split(key)
    t = time_sampling(t_key, batch, sde.t0, sde.t1)
    dims = _kept_count(x0[0])
    x_t, eps, m, s, b = perturb_batch(sde, noise_key, t, x0)
    eps_hat = parameterisation.to_epsilon(apply_batched(model, t, x_t), x_t, m, s, b)
    gamma_prime = jax.vmap(sde.gamma_derivative)(t)
    diffusion = 0.5 * (sde.t1 - sde.t0) * gamma_prime * jax.vmap(lambda v: _cm(sde, v))(eps_hat - eps)
    m1, s1 = sde.marginal(sde.t1)
    prior = 0.5 * m1**2 * jax.vmap(lambda x: _cm(sde, x))(x0) / s1**2
    m0, s0 = sde.marginal(sde.t0)
    # E||x0 - decoded||^2_C = (s0/m0)^2 * dims exactly, so the decoder term is in closed form.
    log_det = sde.prior.log_density(jnp.zeros_like(x0[0]))  # -1/2 sum log(2 pi N lambda_k)
    recon = 0.5 * dims - log_det + dims * jnp.log(s0 / m0)
    terms = {"diffusion": jnp.mean(diffusion), "prior": jnp.mean(prior), "reconstruction": recon}
    return terms["diffusion"] + terms["prior"] + terms["reconstruction"], terms


def _cm(sde: AbstractSDE, v: Field) -> Float[Array, ""]:
    """$\\sum_k |\\hat v_k|^2 / \\lambda_k$ over all modes (each of $k$, $-k$ once), per sample."""
    return sde.prior.cameron_martin_norm2(v)


