"""The continuous-time ELBO of variational diffusion models, on a grid."""

import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..custom_types import Field
from ..grid import field_grid, integer_frequencies, rfft_frequencies
from ..parameterisation import AbstractParameterisation, check_parameterisation, Epsilon
from ..sde import AbstractSDE, known_noise_scale, LearnedSchedule, VPSDE
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


class AbstractDecoder(eqx.Module):
    """The decoder $p(x_0 | z_{t_0})$ of the ELBO and its reconstruction term
    $-E_{q(z_{t_0} | x_0)} \\log p(x_0 | z_{t_0})$."""

    @abc.abstractmethod
    def reconstruction(
        self, sde: AbstractSDE, x0: Float[Array, "batch c *grid"], key: PRNGKeyArray
    ) -> Float[Array, " batch"]:
        """The reconstruction term per example, in nats (one draw of $z_{t_0}$ per example)."""


class GaussianDecoder(AbstractDecoder):
    """$p(x_0 | z) = N((z - b_0)/m_0, (s_0/m_0)^2 C)$: a density on the kept span of the grid, for
    continuous data. Its term is in closed form:
    $\\frac{D}{2} - \\log N(0; 0, C) + D \\log(s_0/m_0)$ with $D$ the kept modes."""

    def reconstruction(self, sde, x0, key):
        del key
        dims = _kept_count(x0[0])
        m0, s0 = sde.marginal(sde.t0)
        log_det = sde.prior.log_density(jnp.zeros_like(x0[0]))  # -1/2 sum log(2 pi N lambda_k)
        value = 0.5 * dims - log_det + dims * jnp.log(s0 / m0)
        return jnp.broadcast_to(value, x0.shape[:1])


class DiscretisedDecoder(AbstractDecoder):
    """The decoder of 8-bit data (variational diffusion models): each grid value is one of `levels`
    values $v_j$ = `low` $+ j w$ ($w$ the bin width), with probabilities
    $\\operatorname{softmax}_j\\big(-(y - v_j)^2 / (2 \\sigma^2)\\big)$ at every point, where
    $y = (z - b_0)/m_0$ and $\\sigma^2 = (s_0/m_0)^2 \\sigma_C^2$ with $\\sigma_C^2$ the pointwise
    variance of $N(0, C)$ on the grid: the Gaussian around $m_0$-scaled $x$ made a distribution over
    the levels. The term is $-\\sum_{\\text{points}} \\log p(x_0 | z)$ of the observed levels: the ELBO
    is then a bound on the discrete log-probability, in bits per value after dividing by the
    number of grid values and $\\log 2$.

    On an even grid the latent keeps the Nyquist components of $x_0$ (the prior does not charge
    them), so the bound is then one on the other values given those. Values of $x_0$ are read as
    their nearest level: data outside [`low`, `high`] (not scaled to the levels' range) are taken
    as the end levels, so scale 8-bit data to that range first.

    **Arguments:**

    - `levels`: the number of values (256 for 8-bit data).
    - `low`, `high`: the first and last value ($[-1, 1]$: 8-bit pixels $p$ as $2p/255 - 1$).
    """

    levels: int = eqx.field(default=256, static=True)
    low: float = eqx.field(default=-1.0, static=True)
    high: float = eqx.field(default=1.0, static=True)

    def __check_init__(self):
        if not (int(self.levels) >= 2 and self.low < self.high):
            raise ValueError(f"need `levels` >= 2 and `low` < `high`, got {self.levels}, {self.low}, {self.high}.")

    def log_probabilities(self, sde: AbstractSDE, z: Field) -> Float[Array, "c *grid levels"]:
        """$\\log p(x_0 = v_j | z_{t_0} = z)$ at every grid value, over the last axis $j$.

        **Arguments:**

        - `sde`: the forward SDE (its $m, s, b$ at $t_0$ and its prior).
        - `z`: one latent field `(c, *grid)`.

        **Returns:**

        An array `(c, *grid, levels)` whose exponentials sum to one over the last axis.
        """
        m0, s0 = sde.marginal(sde.t0)
        y = (z - sde.mean(sde.t0, jnp.zeros_like(z))) / m0
        grid = field_grid(z)
        lam = sde.prior.eigenvalues(grid)
        multiplicity = jnp.where(rfft_frequencies(grid)[-1] == 0, 1.0, 2.0)
        variance = (s0 / m0) ** 2 * jnp.sum(multiplicity * lam)
        values = jnp.linspace(self.low, self.high, int(self.levels), dtype=jnp.float32)
        logits = -0.5 * (y[..., None] - values) ** 2 / variance
        return jax.nn.log_softmax(logits, axis=-1)

    def reconstruction(self, sde, x0, key):
        width = (self.high - self.low) / (int(self.levels) - 1)
        index = jnp.clip(jnp.round((x0 - self.low) / width), 0, int(self.levels) - 1).astype(jnp.int32)
        t0 = jnp.full(x0.shape[:1], sde.t0, jnp.float32)
        z0, _ = jax.vmap(sde.perturb)(jr.split(key, x0.shape[0]), t0, x0)

        def one(z, i):
            log_p = jnp.take_along_axis(self.log_probabilities(sde, z), i[..., None], axis=-1)
            return -jnp.sum(log_p)

        return jax.vmap(one)(z0, index)


DECODERS: dict[str, type[AbstractDecoder]] = {"gaussian": GaussianDecoder, "discretised": DiscretisedDecoder}
"""The decoders by name, for programs that choose one in a config."""


def elbo_undefined(sde: AbstractSDE) -> str | None:
    """Why the ELBO of `sde` is undefined, or None: its decoder term needs noise at $t_0$, which a
    fixed schedule with $t_0 = 0$ has not ($s(t_0) = 0$). A schedule given as traced arrays (a
    trained one) is not judged here.

    **Arguments:**

    - `sde`: the forward SDE.

    **Returns:**

    The reason, a string, or None.
    """
    s0 = known_noise_scale(sde, sde.t0)  # a fixed schedule's s(t0) is known while tracing
    if s0 is None or s0 > 0:
        return None
    return (f"the ELBO's reconstruction term needs noise at t0: s(t0) = {s0} at t0 = {sde.t0}; "
            "use t0 > 0, or a LearnedSchedule (whose gamma(0) is finite).")


def vdm_terms(
    model: Callable[..., Field],
    sde: AbstractSDE,
    x0: Float[Array, "batch c *grid"],
    key: PRNGKeyArray,
    *,
    parameterisation: AbstractParameterisation = Epsilon(),
    time_sampling: AbstractTimeSampling = StratifiedTimeSampling(),
    decoder: AbstractDecoder = GaussianDecoder(),
    variance_reduction: bool = False,
) -> dict[str, Float[Array, " batch"]]:
    """The three terms of the negative ELBO per example, in nats on the grid of `x0` (see
    `vdm_elbo`, which takes their batch means; the arguments are the same).

    **Arguments:**

    Those of `vdm_elbo` (the same names and meanings).

    **Returns:**

    A dict with keys `"diffusion"`, `"prior"` and `"reconstruction"`, each an array of shape
    `(batch,)` holding that term for every example, in nats.
    """
    check_parameterisation(parameterisation)
    check_time_sampling(time_sampling)
    if not isinstance(decoder, AbstractDecoder):
        raise TypeError(f"`decoder` must be an AbstractDecoder (e.g. sdeflow.losses.GaussianDecoder()), got {decoder!r}.")
    if sde.prior.degenerate:
        raise ValueError("the ELBO needs a non-degenerate prior (its log-density); use Matern.")
    reason = elbo_undefined(sde)
    if reason is not None:
        raise ValueError(reason)
    batch = x0.shape[0]
    t_key, noise_key, decoder_key = jr.split(key, 3)
    t = time_sampling(t_key, batch, sde.t0, sde.t1)
    if variance_reduction:
        diffusion = _diffusion_variance_reduced(model, sde, x0, t, noise_key, parameterisation)
    else:
        x_t, eps, m, s, b = perturb_batch(sde, noise_key, t, x0)
        eps_hat = parameterisation.to_epsilon(apply_batched(model, t, x_t), x_t, m, s, b)
        gamma_prime = jax.vmap(sde.gamma_derivative)(t)
        diffusion = 0.5 * (sde.t1 - sde.t0) * gamma_prime * jax.vmap(lambda v: _cm(sde, v))(eps_hat - eps)
    _, s1 = sde.marginal(sde.t1)
    prior = 0.5 * jax.vmap(lambda x: _cm(sde, sde.mean(sde.t1, x) - sde.terminal_mean(x)))(x0) / s1**2
    return {"diffusion": diffusion, "prior": prior, "reconstruction": decoder.reconstruction(sde, x0, decoder_key)}


def vdm_elbo(
    model: Callable[..., Field],
    sde: AbstractSDE,
    x0: Float[Array, "batch c *grid"],
    key: PRNGKeyArray,
    *,
    parameterisation: AbstractParameterisation = Epsilon(),
    time_sampling: AbstractTimeSampling = StratifiedTimeSampling(),
    decoder: AbstractDecoder = GaussianDecoder(),
    variance_reduction: bool = False,
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """The negative ELBO in nats per sample on the grid of `x0` (an upper bound on $-\\log p(x_0)$).

    With $\\gamma = \\log(s^2/m^2)$ and $\\|v\\|^2_{C} = \\sum_k |\\hat v_k|^2 / \\lambda_k$ over the kept modes:

    - diffusion: $\\frac12 (t_1 - t_0) E_t[\\gamma'(t) \\|\\hat\\epsilon - \\epsilon\\|_C^2]$ (Kingma et al.,
      2021, continuous time), the only term with gradients to the network (and to a learned schedule);
    - prior: $KL(N(m_1 x_0 + b_1, s_1^2 C) \\| N(\\mu_1, s_1^2 C)) = \\|m_1 x_0 + b_1 - \\mu_1\\|_C^2 / (2 s_1^2)$
      against the terminal law the samplers start from (`AbstractSDE.terminal_mean`; $m_1^2 \\|x_0\\|_C^2 / (2 s_1^2)$
      when $\\mu_1 = b_1$);
    - reconstruction: $-E \\log p(x_0 | z_{t_0})$ of the `decoder`: `GaussianDecoder()` (a density,
      for continuous data) or `DiscretisedDecoder()` (the probability of 8-bit values).

    With exact scores the diffusion term's expectation is
    $\\frac12 \\int_{\\gamma(t_0)}^{\\gamma(t_1)} (\\ldots)\\, d\\gamma$: it depends on the schedule's values
    at $t_0$ and $t_1$ only, not on its shape in between. The shape changes the variance of the
    one-time estimate, which `variance_reduction` lowers (Kingma et al., 2021, appendix I.2): the
    schedule's shape parameters then descend the gradient of the per-example mean of
    $L_{diff}^2$ instead of $L_{diff}$, while the network and the end points descend the ELBO. It
    needs a `VPSDE` with a `LearnedSchedule` (whose $\\gamma = \\gamma_0 + (\\gamma_1 - \\gamma_0) u(t)$
    splits end points from shape $u$) and changes gradients only, never the value. It is one
    `jax.custom_vjp` around the per-example diffusion term as a function of (network weights,
    $u(t_i)$, $u'(t_i)$, end points): the forward pass keeps $L_i$ and the VJP of the term, the
    backward pass multiplies the cotangents of $u(t_i), u'(t_i)$ by $2 L_i$, so
    $\\partial/\\partial\\eta$ of the batch mean becomes that of the mean of $L_i^2$ at the cost of one
    network evaluation and one backward pass, as without it. Each example's term must depend on
    its own time only (true of every network acting on one sample). With $t_0 = 0$ (use
    `VPSDE(..., t0=0.0)`) the other terms do not depend on the shape at all.

    Needs a non-degenerate prior. Reported per sample; divide by the number of dimensions and
    $\\log 2$ for bits per dimension at this resolution.

    **Arguments:**

    - `model`: acts on one sample, `model(t, x_t) -> output`.
    - `sde`: the forward SDE.
    - `x0`: a batch of clean fields `(batch, c, *grid)`.
    - `key`: a JAX random key.
    - `parameterisation`: what the model predicts, an `AbstractParameterisation`.
    - `time_sampling`: how the diffusion term's times are drawn, an `AbstractTimeSampling`.
    - `decoder`: the reconstruction term's decoder, an `AbstractDecoder`.
    - `variance_reduction`: the variance-reducing gradient of a learned schedule (see above).

    **Returns:**

    `(loss, terms)`: the batch mean of the negative ELBO and a dict of its three terms.
    """
    per_example = vdm_terms(model, sde, x0, key, parameterisation=parameterisation, time_sampling=time_sampling,
                            decoder=decoder, variance_reduction=variance_reduction)
    terms = {name: jnp.mean(value) for name, value in per_example.items()}
    return terms["diffusion"] + terms["prior"] + terms["reconstruction"], terms


def _diffusion_variance_reduced(model, sde, x0, t, key, parameterisation):
    """The per-example diffusion term whose schedule-shape gradient is that of its square."""
    if not (isinstance(sde, VPSDE) and isinstance(sde.schedule, LearnedSchedule)):
        raise ValueError("`variance_reduction` needs a VPSDE with a LearnedSchedule (its shape and end points apart).")
    schedule = sde.schedule
    shape = (jax.vmap(schedule.shape)(t), jax.vmap(schedule.shape_derivative)(t))
    ends = schedule.endpoints()
    eps = jax.vmap(lambda k, x: sde.prior.sample(k, x.shape))(jr.split(key, x0.shape[0]), x0)
    weights, static = eqx.partition(model, eqx.is_inexact_array)
    expand = (slice(None),) + (None,) * (x0.ndim - 1)
    span = sde.t1 - sde.t0

    def term(weights, shape, ends, data):
        (u, du), (g0, g1), (x0, eps, t) = shape, ends, data
        gamma, gamma_prime = g0 + (g1 - g0) * u, (g1 - g0) * du
        m, s = jnp.sqrt(jax.nn.sigmoid(-gamma))[expand], jnp.sqrt(jax.nn.sigmoid(gamma))[expand]
        x_t = m * x0 + s * eps
        output = apply_batched(eqx.combine(weights, static), t, x_t)
        eps_hat = parameterisation.to_epsilon(output, x_t, m, s, jnp.zeros_like(x_t))
        return 0.5 * span * gamma_prime * jax.vmap(lambda v: _cm(sde, v))(eps_hat - eps)

    @jax.custom_vjp
    def squared_shape_gradient(weights, shape, ends, data):
        return term(weights, shape, ends, data)

    def forward(weights, shape, ends, data):
        value, pullback = jax.vjp(term, weights, shape, ends, data)
        return value, (pullback, value)

    def backward(residuals, cotangent):
        pullback, value = residuals
        d_weights, d_shape, d_ends, d_data = pullback(cotangent)
        return d_weights, jax.tree.map(lambda d: 2 * value * d, d_shape), d_ends, d_data

    squared_shape_gradient.defvjp(forward, backward)
    return squared_shape_gradient(weights, shape, ends, (x0, eps, t))


def _cm(sde: AbstractSDE, v: Field) -> Float[Array, ""]:
    """$\\sum_k |\\hat v_k|^2 / \\lambda_k$ over all modes (each of $k$, $-k$ once), per sample."""
    return sde.prior.cameron_martin_norm2(v)
