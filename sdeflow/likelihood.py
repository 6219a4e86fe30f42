"""Exact likelihoods through the probability-flow ODE (the instantaneous change of variables).

Integrating $dx/dt = v(t, x) = f x + h - \\tfrac12 g^2 C \\nabla \\log p_t(x)$ from $t_0$ to $t_1$
carries a field $x$ to a latent $z$, and
$\\log p_{t_0}(x) = \\log p_{t_1}(z) + \\int_{t_0}^{t_1} \\operatorname{div} v(t, x(t))\\, dt$
with $p_{t_1} \\approx N(x^*, s(t_1)^2 C)$, the forward SDE's terminal law centred on its reference
point (`AbstractSDE.terminal_mean`: $x^* = b(t_1) = 0$ for VP, VE and sub-VP, a bridge's target).

Densities are those of the point values with respect to Lebesgue measure on the span of the modes
the grid keeps (`sdeflow.kept_modes`), as in `AbstractPrior.log_density`: on odd grids that is all
of $\\mathbb{R}^{cN}$; on even grids the Nyquist components are not part of the model (every prior
has a zero eigenvalue there), so the divergence is taken on the kept span and the number of
dimensions is $D = c \\prod_i (n_i - [n_i \\text{ even}])$ (729 per channel at 28 x 28, not 784).
Every value refers to the grid of `x`: state the resolution with it (`LikelihoodResult.grid`).
"""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .checks import check_adaptive_controls
from .custom_types import Field
from .grid import field_grid, fourier, inverse_fourier, kept_modes
from .samplers.probability_flow import probability_flow
from .samplers.score import PreconditionedScore
from .sde import check_score_defined


TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


def model_dimensions(shape: tuple[int, ...]) -> int:
    """The dimension $D$ of the kept span for fields of shape `(c, n_1, ..., n_d)`:
    $c \\prod_i (n_i - 1)$ over even $n_i$ and $n_i$ over odd ones.

    **Arguments:**

    - `shape`: the shape `(c, n_1, ..., n_d)` of one sample, channels first.

    **Returns:**

    $D$, a Python `int`.
    """
    return int(shape[0]) * math.prod(n - 1 if n % 2 == 0 else n for n in shape[1:])


def project(u: Field) -> Field:
    """The orthogonal projection of point values onto the span of the kept modes.

    **Arguments:**

    - `u`: one sample of shape `(c, n_1, ..., n_d)`, channels first.

    **Returns:**

    The projected field, same shape and dtype as `u`: its Nyquist components (on even axes) set to
    zero, every other mode unchanged.
    """
    grid = field_grid(u)
    return inverse_fourier(fourier(u) * kept_modes(grid), grid).astype(u.dtype)


def uniform_dequantise(
    key: PRNGKeyArray, x: Field, *, levels: int = 256, low: float = -1.0, high: float = 1.0
) -> Field:
    """Add uniform noise of one quantisation bin to data quantised to `levels` values on
    `[low, high]` (8-bit images in $[-1, 1]$: bin width $2/255 = 1/127.5$).

    **Arguments:**

    - `key`: a JAX random key.
    - `x`: a quantised field (values `low + j * width`).
    - `levels`: the number of quantisation levels.
    - `low`, `high`: the range of the data.

    **Returns:**

    `x + u * width` with $u \\sim U[0, 1)$ per value.
    """
    if int(levels) != levels or levels < 2 or not high > low:
        raise ValueError(f"need at least 2 `levels` and `low` < `high`, got levels={levels}, low={low}, high={high}.")
    width = (high - low) / (levels - 1)
    return x + width * jr.uniform(key, x.shape, x.dtype)


def bits_per_dim(
    log_likelihood: Float[Array, "*batch"], dimensions: int, *, bin_width: float | None = None
) -> Float[Array, "*batch"]:
    """Negative log-likelihood in bits per dimension.

    Without `bin_width`: $-\\log p(x) / (D \\ln 2)$ (a continuous density). With the bin width
    $w$ of quantised data that was uniformly dequantised (`uniform_dequantise`): the probability of
    the bin is bounded below by $w^D\\,$ times the density, so
    $\\mathrm{bpd} = (-\\log p(x)/D - \\log w) / \\ln 2$, an upper bound on the discrete model's bits
    per dimension (8-bit data in $[-1, 1]$: $w = 1/127.5$, adding $\\log_2 127.5 = 6.99$ bits).

    **Arguments:**

    - `log_likelihood`: $\\log p(x)$ in nats.
    - `dimensions`: $D$ (`LikelihoodResult.dimensions`).
    - `bin_width`: the quantisation bin width, or `None`.

    **Returns:**

    Bits per dimension.
    """
    nats = -log_likelihood / dimensions
    if bin_width is not None:
        nats = nats - math.log(bin_width)
    return nats / math.log(2.0)


class LikelihoodResult(eqx.Module):
    """The log-likelihood of one field under the probability-flow ODE.

    **Fields:**

    - `log_likelihood`: $\\log p_{t_0}(x)$ in nats (Hutchinson: the mean over probes).
    - `stderr`: the standard error of `log_likelihood` over the probes (0 for the exact trace).
    - `prior_log_density`: $\\log p_{t_1}(z)$ of the latent.
    - `divergence_integral`: $\\int_{t_0}^{t_1} \\operatorname{div} v\\, dt$ (mean over probes).
    - `latent`: $z = x(t_1)$.
    - `num_steps`: the ODE solver's steps (accepted and rejected).
    - `dimensions`: $D$, the dimension the density refers to (see the module docstring).
    - `grid`: the grid the value refers to.
    """

    log_likelihood: Float[Array, ""]
    stderr: Float[Array, ""]
    prior_log_density: Float[Array, ""]
    divergence_integral: Float[Array, ""]
    latent: Field
    num_steps: Int[Array, ""]
    dimensions: int = eqx.field(static=True)
    grid: tuple[int, ...] = eqx.field(static=True)

    def bits_per_dim(self, bin_width: float | None = None) -> Float[Array, ""]:
        """`bits_per_dim(self.log_likelihood, self.dimensions, bin_width=bin_width)`."""
        return bits_per_dim(self.log_likelihood, self.dimensions, bin_width=bin_width)


def _probes(key: PRNGKeyArray | None, x: Field, trace: str, num_probes: int, probe: str) -> Array:
    if trace == "exact":
        n = x.size
        basis = jnp.eye(n, dtype=x.dtype).reshape((n, *x.shape))
    else:
        if key is None:
            raise ValueError("the Hutchinson trace needs a `key` for its probes.")
        shape = (num_probes, *x.shape)
        if probe == "rademacher":
            basis = jr.rademacher(key, shape, x.dtype)
        else:
            basis = jr.normal(key, shape, x.dtype)
    # E[(P z)(P z)^T] = P for both probe laws (and the basis), so z^T P J P z estimates tr(P J P).
    return jax.vmap(project)(basis)


def log_likelihood(
    score: PreconditionedScore,
    x: Field,
    key: PRNGKeyArray | None = None,
    *,
    trace: str = "hutchinson",
    num_probes: int = 4,
    probe: str = "rademacher",
    solver: diffrax.AbstractSolver = diffrax.Tsit5(),
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
) -> LikelihoodResult:
    """$\\log p_{t_0}(x)$ by the probability-flow ODE augmented with the divergence of its velocity.

    The divergence on the kept span, $\\operatorname{tr}(P\\, \\partial v / \\partial x\\, P)$, is
    either exact (`trace="exact"`: one Jacobian-vector product per grid value, for small grids) or
    Hutchinson's estimate $z^T P J P z$ with `num_probes` Rademacher or Gaussian probes, held fixed
    along the trajectory. Each probe's integral is kept apart, so `stderr` is the Monte Carlo
    standard error of the result. The terminal term is the prior's log-density scaled to
    $N(x^*, s(t_1)^2 C)$ (`AbstractSDE.terminal_mean`):
    $\\log p_{t_1}(z) = \\log N(0, C)((z - x^*)/s) - D \\log s$, which needs a non-degenerate prior.

    **Arguments:**

    - `score`: the model as a `PreconditionedScore`.
    - `x`: one field `(c, *grid)` (e.g. dequantised data, see `uniform_dequantise`).
    - `key`: the key of the probes (Hutchinson only).
    - `trace`: `"exact"` or `"hutchinson"`.
    - `num_probes`: Hutchinson probes.
    - `probe`: `"rademacher"` or `"gaussian"`.
    - `solver`: a diffrax ODE solver with an error estimate.
    - `rtol`, `atol`: tolerances of the PID controller.
    - `max_steps`: the most steps the solve may take.

    **Returns:**

    A `LikelihoodResult` (nats; `.bits_per_dim(...)` for bits per dimension).
    """
    if trace not in TRACES:
        raise ValueError(f"`trace` must be one of {TRACES}, got {trace!r}.")
    if probe not in PROBES:
        raise ValueError(f"`probe` must be one of {PROBES}, got {probe!r}.")
    if trace == "hutchinson" and int(num_probes) < 1:
        raise ValueError(f"`num_probes` must be a positive integer, got {num_probes}.")
    check_adaptive_controls(rtol, atol, max_steps)
    grid = field_grid(x)
    sde = score.sde
    sde.prior.require_non_degenerate("the likelihood's terminal density")
    check_score_defined(sde, sde.t0, "the likelihood's probability-flow ODE")
    x = jnp.asarray(x, jnp.float32)
    probes = _probes(key, x, trace, int(num_probes), probe)
    velocity = probability_flow(score)

    def augmented(t, state, args):
        y, _ = state
        v, jvp = jax.linearize(lambda u: velocity(t, u), y)
        if trace == "exact":
            divergence = jnp.sum(jax.lax.map(lambda z: jnp.vdot(z, jvp(z)), probes, batch_size=64))
            return v, divergence[None]
        return v, jax.vmap(lambda z: jnp.vdot(z, jvp(z)))(probes)

    num = 1 if trace == "exact" else probes.shape[0]
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(augmented),
        solver,
        sde.t0,
        sde.t1,
        (sde.t1 - sde.t0) / 32,
        (x, jnp.zeros((num,), jnp.float32)),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=int(max_steps),
    )
    z, integrals = solution.ys[0][-1], solution.ys[1][-1]
    dimensions = model_dimensions(x.shape)
    _, s1 = sde.marginal(sde.t1)
    prior_term = sde.prior.log_density((z - sde.terminal_mean(z)) / s1) - dimensions * jnp.log(s1)
    values = prior_term + integrals
    stderr = jnp.std(values, ddof=1) / jnp.sqrt(num) if num > 1 else jnp.zeros(())
    return LikelihoodResult(
        jnp.mean(values),
        stderr,
        prior_term,
        jnp.mean(integrals),
        z,
        jnp.asarray(solution.stats["num_steps"], jnp.int32),
        dimensions,
        grid,
    )
