"""DDIM: the exact discretisation of the probability-flow ODE in the variables $(x - b)/m$ and $s/m$,
and with $\\eta > 0$ its stochastic family up to the ancestral (DDPM) sampler."""

from typing import ClassVar

import diffrax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Int, PRNGKeyArray

from ..custom_types import Field
from .base import AbstractSampler, Stepping, check_num_steps, fixed_stepping
from .keys import time_key
from .score import PreconditionedScore
from .spacing import AbstractSpacing, check_spacing, UniformSpacing


class DDIMSolver(diffrax.AbstractSolver):
    """One DDIM step as a diffrax solver; the term's vector field is the predicted noise $\\hat\\epsilon$.

    With $y = (x - b(t)) / m(t)$ and $\\sigma = s(t) / m(t)$ the probability-flow ODE is exactly
    $dy / d\\sigma = \\hat\\epsilon(t, x)$ (for any $f, g$ with $(s^2)' = 2 f s^2 + g^2$), so freezing
    $\\hat\\epsilon$ over a step and integrating exactly gives
    $x_1 = m_1 \\hat x_0 + b_1 + s_1 \\hat\\epsilon$ with $\\hat x_0 = (x_0 - b_0 - s_0 \\hat\\epsilon)/m_0$:
    DDIM with $\\eta = 0$, first order, one evaluation per step. Diffrax steps in reversed time
    $\\tau = -t$; the term's vector field is $\\hat\\epsilon(-\\tau, x)$.

    With $\\eta > 0$ (Song, Meng and Ermon) the step is
    $x_1 = m_1 \\hat x_0 + b_1 + \\sqrt{s_1^2 - \\sigma^2}\\, \\hat\\epsilon + \\sigma \\xi$, $\\xi \\sim N(0, C)$,
    $\\sigma = \\eta\\, (s_1 / s_0) \\sqrt{s_0^2 - (m_0 / m_1)^2 s_1^2}$: at $\\eta = 1$, $\\sigma^2$ is the
    variance of the forward process's posterior $q(x_1 | x_0^{noisy}, x_0)$ and the step is the
    ancestral (DDPM) step with $x_0$ replaced by $\\hat x_0$.

    With `clip = (lo, hi)` the estimate $\\hat x_0$ is clipped to $[lo, hi]$ pointwise before it is
    used, and $\\hat\\epsilon$ replaced by the noise consistent with it,
    $(x_0 - b_0 - m_0 \\hat x_0) / s_0$ (the `clip_denoised` of the common denoising-diffusion codes):
    at large noise $\\hat x_0$ carries the network's error times $s_0 / m_0$, and a field known to lie
    in a range cannot leave it.

    **Arguments:**

    - `sde`: the forward SDE (its marginal coefficients and prior).
    - `eta`: $\\eta \\in [0, 1]$; 0 (default) is deterministic.
    - `key`: the key of the noise $\\xi$ (folded with the time of each step); needed when `eta > 0`.
    - `clip`: `(lo, hi)`, the range $\\hat x_0$ is clipped to, or `None` (default) for none.
    """

    evaluates_step_end: ClassVar[bool] = False  # the score at each step's start only

    sde: object
    eta: float = 0.0
    key: PRNGKeyArray | None = None
    clip: tuple[float, float] | None = None
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.LocalLinearInterpolation

    def order(self, terms):
        return 1

    def init(self, terms, t0, t1, y0, args):
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        eps = terms.vf(t0, y0, args)
        t0, t1 = -t0, -t1
        m0, s0 = self.sde.marginal(t0)
        m1, s1 = self.sde.marginal(t1)
        zeros = jnp.zeros_like(y0)
        b0 = self.sde.mean(t0, zeros)
        x0_hat = (y0 - b0 - s0 * eps) / m0
        if self.clip is not None:
            x0_hat = jnp.clip(x0_hat, *self.clip)
            eps = (y0 - b0 - m0 * x0_hat) / s0
        if self.eta == 0:
            y1 = m1 * x0_hat + self.sde.mean(t1, zeros) + s1 * eps
        else:
            sigma = self.eta * (s1 / s0) * jnp.sqrt(jnp.maximum(s0**2 - (m0 / m1) ** 2 * s1**2, 0.0))
            noise = self.sde.prior.from_white_noise(jr.normal(time_key(self.key, -t0), y0.shape, y0.dtype))
            y1 = (m1 * x0_hat + self.sde.mean(t1, zeros) + jnp.sqrt(jnp.maximum(s1**2 - sigma**2, 0.0)) * eps
                  + sigma * noise)
        return y1, None, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


class DDIM(AbstractSampler):
    """DDIM sampling: `num_steps` steps of `DDIMSolver` (one evaluation each); deterministic with
    `eta=0`, the ancestral (DDPM) sampler with `eta=1`.

    It solves the same probability-flow ODE as `ProbabilityFlow` and converges to its solution as
    the steps are refined, but is exact when $\\hat\\epsilon$ is constant along the path (e.g. at
    large noise), which makes it accurate with few steps.

    **Arguments:**

    - `num_steps`: the number of equal steps.
    - `spacing`: the fixed time grid, `UniformSpacing()` in $t$ or `LogSNRSpacing()` (see
      `time_grid`).
    - `denoise`: finish with Tweedie's denoising step at $t_0$ (one more evaluation).
    - `eta`: the noise of each step, $\\eta \\in [0, 1]$ (see `DDIMSolver`): 0 deterministic, 1 ancestral.
    - `clip`: `(lo, hi)`, the range each step's estimate of $x_0$ is clipped to (see `DDIMSolver`), or
      `None` (default). Tweedie's final step is not clipped, nor is the estimate a self-conditioned
      network is fed back (Tweedie's, as in training).
    """

    num_steps: int = 50
    spacing: AbstractSpacing = UniformSpacing()
    denoise: bool = False
    eta: float = 0.0
    clip: tuple[float, float] | None = None

    def __check_init__(self):
        check_spacing(self.spacing)
        check_num_steps(self.num_steps)
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"`eta` must be in [0, 1], got {self.eta}.")
        if self.clip is not None and not (len(self.clip) == 2 and float(self.clip[0]) < float(self.clip[1])):
            raise ValueError(f"`clip` must be None or a pair (lo, hi) with lo < hi, got {self.clip}.")

    def build(
        self, score: PreconditionedScore, key: PRNGKeyArray, x: Field, tau_start: Array, tau_end: Array
    ) -> tuple[diffrax.AbstractTerm, diffrax.AbstractSolver, Stepping]:
        del x
        # `args`: the estimate of $x_0$ a self-conditioned score is given (`None` otherwise).
        term = diffrax.ODETerm(lambda tau, x, args: score.epsilon(-tau, x, args))
        stepping = fixed_stepping(score, self.num_steps, tau_start, tau_end, self.spacing)
        clip = None if self.clip is None else (float(self.clip[0]), float(self.clip[1]))
        if self.eta == 0:
            return term, DDIMSolver(score.sde, clip=clip), stepping
        return term, DDIMSolver(score.sde, float(self.eta), key, clip), stepping

    def evaluations(self, solver: diffrax.AbstractSolver, num_steps: Int[Array, ""]) -> Int[Array, ""]:
        return num_steps
