"""The abstract forward SDE $dX = (f(t) X + h(t)) dt + g(t) C^{1/2} dW$ driven by a prior."""

import abc
from collections.abc import Sequence

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float, PRNGKeyArray

from ..custom_types import Field, RealScalarLike
from ..priors import AbstractPrior


def check_times(t0: float, t1: float) -> tuple[float, float]:
    t0, t1 = float(t0), float(t1)
    if not (0 <= t0 < t1):
        raise ValueError(f"need 0 <= `t0` < `t1`, got t0={t0}, t1={t1}.")
    return t0, t1


def check_schedule_end(schedule, t1: float) -> None:
    """Refuse a `t1` past the end of `schedule`'s increasing range (`AbstractSchedule.t_max`)."""
    if float(t1) > schedule.t_max:
        raise ValueError(f"`t1` = {t1} is past the end of {type(schedule).__name__}, which is defined up to "
                         f"t = {schedule.t_max} (beyond it its gamma decreases and g(t) is not real).")


def known_noise_scale(sde: "AbstractSDE", t: RealScalarLike) -> float | None:
    """$s(t)$ of `sde` when it is known while tracing.

    **Arguments:**

    - `sde`: the forward SDE.
    - `t`: a time.

    **Returns:**

    $s(t)$ as a Python float for a fixed schedule at a concrete time, else None (a schedule given
    as traced arrays, a traced time).
    """
    with jax.ensure_compile_time_eval():
        _, s = sde.marginal(t)
    return None if isinstance(s, jax.core.Tracer) else float(s)


def check_score_defined(sde: "AbstractSDE", t: RealScalarLike, what: str) -> None:
    """Refuse to evaluate the score $C\\nabla\\log p_t = -\\hat\\epsilon / s(t)$ at a time where
    $s(t) = 0$ (a fixed schedule at $t = 0$), where it would be inf or NaN, silently.

    **Arguments:**

    - `sde`: the forward SDE.
    - `t`: the time the score is to be evaluated at.
    - `what`: what evaluates it, for the message.

    **Returns:**

    None; raises a `ValueError` when $s(t)$ is known to be 0.
    """
    s = known_noise_scale(sde, t)
    if s is not None and s <= 0:
        raise ValueError(f"{what} evaluates the score at t = {float(t)}, where s(t) = {s}: the score divides by "
                         "s(t). Use t0 > 0 (or stop at `t_end` > 0), a sampler that evaluates only the start of "
                         "each step (Euler-Maruyama, DDIM, predictor-corrector), or a LearnedSchedule.")


class AbstractSDE(eqx.Module):
    """A forward diffusion $dX = (f(t) X + h(t)) dt + g(t) C^{1/2} dW$ on $[t_0, t_1]$.

    Its transition from the data is Gaussian in closed form,
    $X_t | X_0 \\sim N(m(t) X_0 + b(t), s(t)^2 C)$ with $C$ the prior's covariance, so training
    never simulates it. `W` is a cylindrical Wiener process: on an $N$-point grid its point values
    have variance $N t$, and $C^{1/2} dW$ then has the prior's law times $dt$.
    """

    prior: eqx.AbstractVar[AbstractPrior]
    t0: eqx.AbstractVar[float]
    t1: eqx.AbstractVar[float]

    @abc.abstractmethod
    def marginal(self, t: RealScalarLike) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """$(m(t), s(t))$: $X_t | X_0 \\sim N(m X_0 + b(t), s^2 C)$."""

    @abc.abstractmethod
    def mean(self, t: RealScalarLike, x0: Field) -> Field:
        """$E[X_t | X_0 = x_0] = m(t) x_0 + b(t)$."""

    @abc.abstractmethod
    def drift(self, t: RealScalarLike, x: Field) -> Field:
        """$f(t) x + h(t)$."""

    @abc.abstractmethod
    def drift_coefficient(self, t: RealScalarLike) -> Float[Array, ""]:
        """$f(t)$, the linear part of the drift."""

    @abc.abstractmethod
    def diffusion(self, t: RealScalarLike) -> Float[Array, ""]:
        """$g(t)$."""

    def gamma(self, t: RealScalarLike) -> Float[Array, ""]:
        """$\\log(s(t)^2 / m(t)^2)$, the log noise-to-signal ratio."""
        m, s = self.marginal(t)
        return 2 * (jnp.log(s) - jnp.log(m))

    def gamma_derivative(self, t: RealScalarLike) -> Float[Array, ""]:
        """$\\gamma'(t)$, by forward-mode differentiation of `gamma`."""
        t = jnp.asarray(t, dtype=jnp.float32)
        return jax.jvp(self.gamma, (t,), (jnp.ones_like(t),))[1]

    def perturb(self, key: PRNGKeyArray, t: RealScalarLike, x0: Field) -> tuple[Field, Field]:
        """Draw $X_t$ given $X_0 = x_0$.

        **Arguments:**

        - `key`: a JAX random key.
        - `t`: the time.
        - `x0`: one clean field of shape `(c, *grid)`.

        **Returns:**

        `(x_t, eps)` with $\\epsilon \\sim N(0, C)$ and $x_t = m x_0 + b + s \\epsilon$.
        """
        eps = self.prior.sample(key, x0.shape)
        _, s = self.marginal(t)
        return self.mean(t, x0) + s * eps, eps

    def terminal_mean(self, x: Field) -> Field:
        r"""The mean $\mu_1$ of the terminal law $N(\mu_1, s(t_1)^2 C)$ on the grid of `x`: the SDE's
        law at $t_1$ from its reference point, here $x_0 = 0$, so $\mu_1 = b(t_1)$.

        Reverse-time samplers start from this law, and the likelihood and the ELBO's prior term
        measure against it; the mismatch with the true law at $t_1$ is $m(t_1)(E[X_0] - x_{\mathrm{ref}})$.

        **Arguments:**

        - `x`: any field of shape `(c, *grid)` (only its shape and dtype are used).

        **Returns:**

        A field shaped like `x`.
        """
        return self.mean(self.t1, jnp.zeros_like(x))

    def terminal_sample(self, key: PRNGKeyArray, shape: Sequence[int]) -> Field:
        r"""Draw from the terminal law $N(\mu_1, s(t_1)^2 C)$ (`terminal_mean`).

        **Arguments:**

        - `key`: a JAX random key.
        - `shape`: `(channels, n_1, ..., n_d)`.

        **Returns:**

        A field of shape `shape`, where reverse-time samplers start.
        """
        zeros = jnp.zeros(tuple(shape), jnp.float32)
        _, s = self.marginal(self.t1)
        return self.terminal_mean(zeros) + s * self.prior.sample(key, zeros.shape)

    def noise_operator(self, t: RealScalarLike, x: Field) -> lx.AbstractLinearOperator:
        """The linear map $dW \\mapsto g(t) C^{1/2} dW$ on grid white noise of unit variance per point.

        A diffrax `ControlTerm` with this vector field and a Brownian motion of the shape of `x`
        gives the SDE's noise; the factor $\\sqrt{N}$ turns unit-variance point noise into the
        discretised cylindrical Wiener process.

        **Arguments:**

        - `t`: the time.
        - `x`: the current state (only its shape and dtype are used).

        **Returns:**

        A `lineax.FunctionLinearOperator`.
        """
        g = self.diffusion(t)
        structure = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return lx.FunctionLinearOperator(lambda w: g * self.prior.from_white_noise(w), structure)

    def forward_terms(self, brownian: diffrax.AbstractBrownianPath) -> diffrax.MultiTerm:
        """The forward SDE as diffrax terms: drift `ODETerm` plus noise `ControlTerm`.

        **Arguments:**

        - `brownian`: a diffrax Brownian path of the shape of one sample.

        **Returns:**

        A `diffrax.MultiTerm` to solve with an SDE solver such as `diffrax.Euler()`.
        """
        drift = diffrax.ODETerm(lambda t, x, args: self.drift(t, x))
        noise = diffrax.ControlTerm(lambda t, x, args: self.noise_operator(t, x), brownian)
        return diffrax.MultiTerm(drift, noise)


class AbstractCentredSDE(AbstractSDE):
    """A forward SDE with no offset: $h = 0$, $b = 0$ (VP, VE, sub-VP)."""

    def mean(self, t: RealScalarLike, x0: Field) -> Field:
        m, _ = self.marginal(t)
        return m * x0

    def drift(self, t: RealScalarLike, x: Field) -> Field:
        return self.drift_coefficient(t) * x
