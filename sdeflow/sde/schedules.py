"""Noise schedules as a log signal-to-noise ratio $\\gamma(t) = \\log(s(t)^2 / m(t)^2)$ of the VP process."""

import abc
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from ..custom_types import RealScalarLike


class AbstractSchedule(eqx.Module):
    """A monotone increasing $\\gamma(t) = \\log(s^2 / m^2)$ for the variance-preserving process.

    The VP marginal is then $m^2 = \\sigma(-\\gamma)$, $s^2 = \\sigma(\\gamma)$ ($\\sigma$ the logistic
    function) and its rate $\\beta(t) = \\gamma'(t) \\sigma(\\gamma(t))$. Subclasses give `gamma`; the
    derivative comes from a JVP (as diffrax's `AbstractPath.derivative` does). `t_max` is the time
    up to which $\\gamma$ increases (an SDE on it must end there).
    """

    t_max: ClassVar[float] = math.inf

    @abc.abstractmethod
    def gamma(self, t: RealScalarLike) -> Float[Array, ""]:
        """$\\gamma(t) = \\log(s(t)^2 / m(t)^2)$, increasing in $t$."""

    def gamma_derivative(self, t: RealScalarLike) -> Float[Array, ""]:
        """$\\gamma'(t)$, by forward-mode differentiation of `gamma`."""
        t = jnp.asarray(t, dtype=jnp.float32)
        _, tangent = jax.jvp(self.gamma, (t,), (jnp.ones_like(t),))
        return tangent

    def beta(self, t: RealScalarLike) -> Float[Array, ""]:
        """$\\beta(t) = -\\frac{d}{dt} \\log m(t)^2$ of the VP process, $= \\gamma'(t) \\sigma(\\gamma(t))$."""
        return self.gamma_derivative(t) * jax.nn.sigmoid(self.gamma(t))

    def integrated_beta(self, t: RealScalarLike) -> Float[Array, ""]:
        """$B(t) = \\int_0^t \\beta = -\\log m(t)^2 = \\operatorname{softplus}(\\gamma(t))$."""
        return jax.nn.softplus(self.gamma(t))


class LinearSchedule(AbstractSchedule):
    """$\\beta(t) = \\beta_{min} + t (\\beta_{max} - \\beta_{min})$ (DDPM's schedule in continuous time).

    **Arguments:**

    - `beta_min`: $\\beta(0) > 0$.
    - `beta_max`: $\\beta(1) \\ge \\beta_{min}$.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __check_init__(self):
        if not (0 < self.beta_min <= self.beta_max):
            raise ValueError(
                f"need 0 < `beta_min` <= `beta_max`, got beta_min={self.beta_min}, beta_max={self.beta_max}."
            )

    def gamma(self, t: RealScalarLike) -> Float[Array, ""]:
        t = jnp.asarray(t, dtype=jnp.float32)
        big_b = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2
        return jnp.log(jnp.expm1(big_b))


class CosineSchedule(AbstractSchedule):
    """$\\bar\\alpha(t) = m(t)^2 = \\cos^2(\\frac{\\pi}{2} \\frac{t + s}{1 + s}) / \\cos^2(\\frac{\\pi}{2} \\frac{s}{1+s})$
    (Nichol and Dhariwal), floored smoothly at `min_alpha_bar` so that $\\gamma(1)$ is finite.

    **Arguments:**

    - `offset`: $s > 0$, which keeps $\\beta$ finite near $t = 0$.
    - `min_alpha_bar`: $\\bar\\alpha(1)$; $\\bar\\alpha$ is mapped to `min + (1 - min) * alpha_bar`.

    Defined on $[0, 1]$: an SDE with this schedule must have $t_1 \\le 1$.
    """

    offset: float = 0.008
    min_alpha_bar: float = 1e-5
    t_max: ClassVar[float] = 1.0  # beyond 1, alpha_bar grows again (gamma decreases)

    def __check_init__(self):
        if not (self.offset > 0 and 0 < self.min_alpha_bar < 1):
            raise ValueError(
                f"need `offset` > 0 and 0 < `min_alpha_bar` < 1, got {self.offset}, {self.min_alpha_bar}."
            )

    def gamma(self, t: RealScalarLike) -> Float[Array, ""]:
        t = jnp.asarray(t, dtype=jnp.float32)
        s = self.offset
        base = math.cos(0.5 * math.pi * s / (1 + s)) ** 2
        # cos(pi/2 (t + s)/(1 + s)) as sin(pi/2 (1 - t)/(1 + s)): equal, but exactly 0 at t = 1, where
        # float32's cos(pi/2) is -4e-8 and gave beta(1) < 0, so g(1) = sqrt(beta(1)) was NaN
        alpha_bar = jnp.sin(0.5 * jnp.pi * (1 - t) / (1 + s)) ** 2 / base
        alpha_bar = self.min_alpha_bar + (1 - self.min_alpha_bar) * alpha_bar
        return jnp.log1p(-alpha_bar) - jnp.log(alpha_bar)


class LearnedSchedule(AbstractSchedule):
    """The monotone learned schedule of variational diffusion models.

    $\\gamma(t) = \\gamma_0 + (\\gamma_1 - \\gamma_0)\\, u(t)$ with the normalised shape
    $u(t) = \\frac{\\phi(t) - \\phi(0)}{\\phi(1) - \\phi(0)}$,
    $\\phi(t) = l_1(t) + l_3(\\operatorname{sigmoid}(l_2(l_1(t) - \\tfrac12)))$, every weight kept positive (softplus,
    and $10^{-3}$ added to the slope of $l_1$), so $\\phi$ is strictly increasing whatever values an
    optimiser step writes: $\\gamma$ is increasing with $\\gamma(0) = \\gamma_0$, $\\gamma(1) = \\gamma_1$.

    The end points are stored as $\\gamma_0$ and $\\log(e^{\\gamma_1 - \\gamma_0} - 1)$ (the gap through a
    softplus), so learned ones stay ordered. Fixed end points (`learn_endpoints=False`) are the
    constructor's numbers, kept as static values: no gradient, weight decay or optimiser step reaches
    them.

    **Arguments:**

    - `gamma_min`: $\\gamma_0$, the log noise-to-signal ratio at $t = 0$.
    - `gamma_max`: $\\gamma_1 > \\gamma_0$, at $t = 1$.
    - `learn_endpoints`: whether $\\gamma_0, \\gamma_1$ are trained (else they are fixed).
    - `hidden`: the width of the monotone network.
    - `key`: a JAX random key for the network's initialisation.
    """

    gamma_start: Float[Array, ""]
    gamma_gap: Float[Array, ""]
    w1: Float[Array, "2"]
    w2: Float[Array, "2 hidden"]
    w3: Float[Array, " hidden"]
    learn_endpoints: bool = eqx.field(static=True)
    fixed_endpoints: tuple[float, float] | None = eqx.field(static=True)

    def __init__(
        self,
        gamma_min: float = -13.3,
        gamma_max: float = 5.0,
        learn_endpoints: bool = True,
        hidden: int = 64,
        *,
        key: PRNGKeyArray,
    ):
        gamma_min, gamma_max = float(gamma_min), float(gamma_max)
        if not gamma_min < gamma_max:
            raise ValueError(f"need `gamma_min` < `gamma_max`, got {gamma_min} and {gamma_max}.")
        if int(hidden) < 1:
            raise ValueError(f"`hidden` must be a positive integer, got {hidden}.")
        k1, k2, k3 = jr.split(key, 3)
        gap = gamma_max - gamma_min
        self.gamma_start = jnp.asarray(gamma_min, jnp.float32)
        self.gamma_gap = jnp.asarray(gap + math.log(-math.expm1(-gap)), jnp.float32)  # softplus^-1(gap)
        self.w1 = jr.normal(k1, (2,)) * 0.1  # (weight, bias) of l1
        self.w2 = jr.normal(k2, (2, int(hidden))) * 0.1  # (weight, bias) of l2
        self.w3 = jr.normal(k3, (int(hidden),)) * 0.1
        self.learn_endpoints = bool(learn_endpoints)
        self.fixed_endpoints = None if learn_endpoints else (gamma_min, gamma_max)

    def endpoints(self) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """$(\\gamma_0, \\gamma_1)$: the fixed numbers, or the learned values (always $\\gamma_0 < \\gamma_1$)."""
        if self.fixed_endpoints is not None:
            return tuple(jnp.asarray(g, jnp.float32) for g in self.fixed_endpoints)
        return self.gamma_start, self.gamma_start + jax.nn.softplus(self.gamma_gap)

    @property
    def gamma_min(self) -> Float[Array, ""]:
        """$\\gamma_0 = \\gamma(0)$."""
        return self.endpoints()[0]

    @property
    def gamma_max(self) -> Float[Array, ""]:
        """$\\gamma_1 = \\gamma(1)$."""
        return self.endpoints()[1]

    def _rise(self, t: Float[Array, ""]) -> Float[Array, ""]:
        """$\\phi(t) - \\phi(0)$, as a sum of non-negative differences: no cancellation of large
        terms, so the shape stays finite, in $[0, 1]$ and non-decreasing in float32 whatever the
        weights' size."""
        pos = jax.nn.softplus
        slope = pos(self.w1[0]) + 1e-3

        def inner(t):
            return jax.nn.sigmoid(pos(self.w2[0]) * (slope * t + self.w1[1] - 0.5) + self.w2[1])

        return slope * t + jnp.mean(pos(self.w3) * (inner(t) - inner(jnp.zeros(()))))

    def shape(self, t: RealScalarLike) -> Float[Array, ""]:
        """The normalised shape $u(t) = (\\phi(t) - \\phi(0)) / (\\phi(1) - \\phi(0)) \\in [0, 1]$,
        increasing, $u(0) = 0$, $u(1) = 1$; it depends on the network's weights only, not on the
        end points."""
        t = jnp.asarray(t, dtype=jnp.float32)
        return self._rise(t) / self._rise(jnp.ones(()))

    def shape_derivative(self, t: RealScalarLike) -> Float[Array, ""]:
        """$u'(t)$, by forward-mode differentiation of `shape`."""
        t = jnp.asarray(t, dtype=jnp.float32)
        return jax.jvp(self.shape, (t,), (jnp.ones_like(t),))[1]

    def gamma(self, t: RealScalarLike) -> Float[Array, ""]:
        g0, g1 = self.endpoints()
        return g0 + (g1 - g0) * self.shape(t)
