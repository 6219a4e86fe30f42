"""Schemas of the `prior`, `sde` and `loss` groups: the noise, the forward SDE and the training loss.

The choices of the loss are the names of the library's own tables
(`sdeflow.parameterisation.PARAMETERISATIONS`, `sdeflow.losses.TIME_SAMPLINGS`...) as enums, which
`train.build` turns into the library's objects; the values a constructor of the library checks (a
trace-class smoothness, positive scales, `t0 < t1`) are checked by building the object at start-up,
not written again here.
"""

import dataclasses
from typing import Any, Optional

from sdeflow.losses import NORMS, TIME_SAMPLINGS, WEIGHTINGS
from sdeflow.parameterisation import PARAMETERISATIONS

from .errors import Choice, choices, fail, number, positive, value_range

Parameterisation = choices("Parameterisation", PARAMETERISATIONS)
Weighting = choices("Weighting", WEIGHTINGS)
TimeSampling = choices("TimeSampling", TIME_SAMPLINGS)
LossNorm = choices("LossNorm", NORMS)


@dataclasses.dataclass
class MaternConfig:
    """Matérn / Bessel-potential prior: $\\lambda_k = a (\\tau^2 + 4\\pi^2 |k|^2)^{-s}$, trace class for $s > d/2$."""

    _target_: str = "sdeflow.priors.Matern"  # the class built (with the data's dimension)
    s: float = 2.0  # smoothness exponent; must be > d/2
    tau: float = 6.283185307  # inverse length scale tau > 0 (2 pi: unit length scale on the unit torus)
    variance: float = 1.0  # pointwise variance at infinite resolution (trace of C), > 0


@dataclasses.dataclass
class LaplacianConfig:
    """Inverse-Laplacian prior: $\\lambda_k = a (4\\pi^2 |k|^2)^{-s}$ for $k \\ne 0$, mean mode excluded (degenerate)."""

    _target_: str = "sdeflow.priors.Laplacian"  # the class built (with the data's dimension)
    s: float = 2.0  # smoothness exponent; must be > d/2
    variance: float = 1.0  # pointwise variance at infinite resolution (trace of C), > 0


@dataclasses.dataclass
class WhiteConfig:
    """White noise ($\\lambda_k = 1$): NOT trace class; for comparison only (samples degrade with n)."""

    _target_: str = "sdeflow.priors.WhiteNoise"  # the class built (with the data's dimension)
    variance: float = 1.0  # variance of each Fourier mode, > 0; the pointwise variance on an n-grid is this times the kept modes ((n-1)^2 on an even 2-d grid: 961 at 32)


@dataclasses.dataclass
class SpectralMultiplierConfig:
    """Radial spectral-multiplier ("FNO") prior (`sdeflow.priors.RadialMultiplier`): a free weight
    per shell round(|k|) <= radius and a Matérn tail; fitted to the training data by maximum
    likelihood at start-up (`RadialMultiplier.fit`), and learned further with the network when `learn`."""

    _target_: str = "sdeflow.priors.RadialMultiplier"  # the class built (fitted to the data's first fit_count training examples)
    radius: int = 8  # last shell round(|k|) with its own weight, >= 0; the fit's grid must hold 2 radius + 1 points per axis
    s: float = 2.0  # the tail's Matérn smoothness beyond the shells; must be > d/2
    tau: float = 6.283185307  # the tail's inverse length scale tau > 0 (its amplitude is fitted)
    fit_count: int = 1000  # training examples the maximum-likelihood fit uses (the first ones of the train range)
    fit_grid: int = 32  # grid n the examples are resampled to for the fit (n points per axis, n >= 2 radius + 1)
    learn: bool = False  # false: the fit is the prior; true: the fit is the start, trained with the network as the part "prior"


@dataclasses.dataclass
class CombinedConfig:
    """Combined prior $C^{1/2} = a A^{1/2} + b B^{1/2}$ (`sdeflow.priors.Combined`) of two priors of
    this group, each given as the fields of its option with its name (`{name: matern, s: 2.0}`)."""

    _target_: str = "sdeflow.priors.Combined"  # the class built, from the two priors below
    first: Optional[Any] = None  # A, given whole: {name: matern | laplacian | white | fno, and that option's fields}; null: {name: laplacian}
    second: Optional[Any] = None  # B, given whole as A; null: {name: matern} (its defaults: s 2, tau 2 pi)
    a: float = 1.0  # weight of A^(1/2), > 0
    b: float = 0.1  # weight of B^(1/2), > 0


def prior_learns(prior: Any) -> bool:
    """Whether a `prior` option (its schema, a composed node, or a nested `{name: ...}` mapping of a
    combined prior) has a part the run trains: a spectral-multiplier prior with `learn`, alone or
    inside a combined one."""
    get = prior.get if isinstance(prior, dict) or hasattr(prior, "keys") else lambda k, d=None: getattr(prior, k, d)
    target = get("_target_") or PRIORS.get(get("name"), object).__dict__.get("_target_")
    if target == SpectralMultiplierConfig._target_:
        return bool(get("learn", False))
    if target == CombinedConfig._target_:
        return prior_learns(get("first") or {}) or prior_learns(get("second") or {})
    return False


class Schedule(Choice):
    """The noise schedules of the VP and sub-VP SDEs."""

    linear = "linear"  # beta(t) linear from beta_min to beta_max
    cosine = "cosine"  # alpha_bar(t) = cos^2(pi/2 (t + s)/(1 + s)) / cos^2(pi/2 s/(1 + s)), mapped to min + (1 - min) alpha_bar with min = min_alpha_bar


@dataclasses.dataclass
class VPConfig:
    """Variance-preserving SDE $dX = -\\beta(t)/2\\, X dt + \\sqrt{\\beta(t)}\\, C^{1/2} dW$."""

    name: str = "vp"  # the SDE: vp (this schema); set by the group option (sde=vp | subvp | ve)
    schedule: Schedule = Schedule.linear  # linear | cosine
    beta_min: float = 0.1  # linear schedule: beta(0) > 0
    beta_max: float = 20.0  # linear schedule: beta(1) >= beta_min
    cosine_offset: float = 0.008  # cosine schedule: offset s > 0
    min_alpha_bar: float = 1.0e-5  # cosine schedule: m(1)^2, in (0, 1)
    t0: float = 1.0e-3  # smallest diffusion time used in training and sampling, 0 <= t0 < t1
    t1: float = 1.0  # final time T

    def check(self, where: str = "sde") -> None:
        check_name(where, self, "vp")


@dataclasses.dataclass
class SubVPConfig(VPConfig):
    """Sub-VP SDE (Song et al.) with the same schedules as the VP SDE."""

    name: str = "subvp"  # the SDE: subvp (this schema); set by the group option

    def check(self, where: str = "sde") -> None:
        check_name(where, self, "subvp")


@dataclasses.dataclass
class VEConfig:
    """Variance-exploding SDE with $\\sigma(t) = \\sigma_{min} (\\sigma_{max} / \\sigma_{min})^t$."""

    name: str = "ve"  # the SDE: ve (this schema); set by the group option
    sigma_min: float = 0.01  # > 0
    sigma_max: float = 50.0  # > sigma_min
    t0: float = 1.0e-3  # smallest diffusion time, 0 <= t0 < t1
    t1: float = 1.0  # final time T

    def check(self, where: str = "sde") -> None:
        check_name(where, self, "ve")


class BridgeTarget(Choice):
    """The field an Ornstein–Uhlenbeck bridge pulls toward."""

    zero = "zero"  # x* = 0
    constant = "constant"  # one value per channel: the mean of the training data (running mean over the batches)
    field = "field"  # one value per channel and grid point: the per-position mean of the training data


@dataclasses.dataclass
class OUBridgeConfig:
    """Ornstein–Uhlenbeck bridge $dX = -\\theta (X - x^*) dt + \\eta C^{1/2} dW$ toward a target
    $x^*$ (`sdeflow.sde.OUBridge`): its terminal law is $N(x^*, \\eta^2 (1 - e^{-2\\theta T}) / (2\\theta) C)$.
    A fitted target (`constant`, one value per channel; `field`, one per channel and grid point) is
    the part `target`, the running mean of the training batches (after an autoencoder, of its
    latent maps): the value learned from the data that minimises the ELBO's prior term
    $E\\,\\mathrm{KL}(q(x_T | x_0) \\| N(x^*, \\Sigma_T))$, whose mean gap is $e^{-\\theta T}(x_0 - x^*)$."""

    name: str = "ou_bridge"  # the SDE: ou_bridge (this schema); set by the group option
    theta: float = 4.0  # the pull theta > 0: the data's weight at T is exp(-theta T)
    eta: float = 2.828427125  # the noise level eta > 0 (2^1.5: the terminal variance is 1 for theta 4, T 1)
    target: BridgeTarget = BridgeTarget.zero  # x*: zero | constant | field
    t0: float = 1.0e-3  # smallest diffusion time, 0 <= t0 < t1
    t1: float = 1.0  # final time T

    def check(self, where: str = "sde") -> None:
        check_name(where, self, "ou_bridge")


@dataclasses.dataclass
class DsmConfig:
    """Denoising score matching (`sdeflow.losses.dsm_loss`)."""

    name: str = "dsm"  # the loss: dsm (this schema); set by the group option
    parameterisation: Parameterisation = Parameterisation.epsilon  # what the network predicts: epsilon | x0 | v | score
    weighting: Weighting = Weighting.simple  # simple | likelihood | p2
    time_sampling: TimeSampling = TimeSampling.stratified  # stratified | uniform | antithetic
    norm: LossNorm = LossNorm.l2  # l2 (finite as the grid is refined) | cameron_martin (the likelihood's norm) | interpolated (between the two) | l1 (mean absolute error)
    norm_power: float = 0.25  # norm=interpolated only: r in [0, 1], mode k's error weighed by (lambda_max / lambda_k)^r (0: l2, 1: cameron_martin)
    # --- denoising-diffusion switches (P2 weighting, self-conditioning) ---
    p2_gamma: float = 1.0  # weighting=p2 only: the exponent gamma >= 0 of w = (k + SNR)^-gamma (0: the simple loss)
    p2_k: float = 1.0  # weighting=p2 only: the offset k > 0 of w = (k + SNR)^-gamma
    self_conditioning: bool = False  # the network also takes c channels of an x0 estimate (its own, detached; samplers feed the previous step's)
    self_conditioning_prob: float = 0.5  # self_conditioning only: per example, the probability that training feeds the estimate rather than zeros, in [0, 1]
    self_conditioning_clip: Optional[list[float]] = None  # self_conditioning only: [lo, hi], the range the network clips its x0-estimate channels to (the data's range), in training and sampling alike; null: unclipped
    # --- the grid (sdeflow.losses.ResolutionConsistency) ---
    consistency: float = 0.0  # weight of a penalty on the network's grid dependence: its noise estimate on the training grid against the one on a grid consistency_factor times finer, restricted back (0: off)
    consistency_examples: int = 4  # consistency > 0 only: the inputs of each batch the penalty is measured on
    consistency_factor: int = 2  # consistency > 0 only: the finer grid's refinement, an integer >= 2

    def check(self, where: str = "loss") -> None:
        check_name(where, self, "dsm")
        number(f"{where}.p2_gamma", self.p2_gamma, lambda v: v >= 0, "a number >= 0")
        number(f"{where}.p2_k", self.p2_k, lambda v: v > 0, "a number > 0")
        number(f"{where}.norm_power", self.norm_power, lambda v: 0 <= v <= 1, "a number in [0, 1]")
        number(f"{where}.self_conditioning_prob", self.self_conditioning_prob, lambda v: 0 <= v <= 1,
               "a number in [0, 1]")
        value_range(f"{where}.self_conditioning_clip", self.self_conditioning_clip)
        number(f"{where}.consistency", self.consistency, lambda v: v >= 0, "a number >= 0")
        positive(f"{where}.consistency_examples", self.consistency_examples)
        positive(f"{where}.consistency_factor", self.consistency_factor, 2)


def check_name(where: str, node, expected: str) -> None:
    """The `name` of a group option is the option's own: another group option is chosen with
    `group=name`, not by renaming this one."""
    if node.name != expected:
        fail(f"{where}.name", f"is {expected!r} for this schema; choose another option with "
             f"{where.split('.')[-1]}=NAME", node.name)


PRIORS = {"matern": MaternConfig, "laplacian": LaplacianConfig, "white": WhiteConfig,
          "fno": SpectralMultiplierConfig, "combined": CombinedConfig}
SDES = {"vp": VPConfig, "subvp": SubVPConfig, "ve": VEConfig, "ou_bridge": OUBridgeConfig}
from .vdm import VdmConfig  # noqa: E402  (it imports the choices above)

from .autoencoder import VqvaeLossConfig  # noqa: E402

LOSSES = {"dsm": DsmConfig, "vdm": VdmConfig, "vqvae": VqvaeLossConfig}
