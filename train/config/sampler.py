"""Schema of the `sampler` group: how samples are drawn (`train.build.make_sampler` builds it)."""

import dataclasses
from typing import List, Optional

from sdeflow.samplers import SPACINGS, VARIABLES

from .errors import Choice, ConfigError, choices, fail, number, positive, value_range

Spacing = choices("Spacing", SPACINGS)
Variables = choices("Variables", VARIABLES)


class SamplerName(Choice):
    """The samplers of `sdeflow.samplers` a config can name."""

    euler_maruyama = "euler_maruyama"  # the reverse SDE, Euler-Maruyama steps
    shark = "shark"  # the reverse SDE, ShARK (adaptive when steps is null)
    ode = "ode"  # the probability-flow ODE with `solver`
    ddim = "ddim"  # DDIM: the exact discretisation of the probability-flow ODE
    pc = "pc"  # predictor-corrector: Langevin corrector steps before each reverse-SDE step


class OdeSolver(Choice):
    """diffrax solvers of the probability-flow ODE."""

    tsit5 = "tsit5"  # adaptive (PID controller) or fixed steps
    heun = "heun"  # fixed steps
    euler = "euler"  # fixed steps


FIXED_STEPS = (SamplerName.euler_maruyama, SamplerName.ddim, SamplerName.pc)
"""Samplers that need a number of steps."""


@dataclasses.dataclass
class SamplerConfig:
    """A sampler: its name and the fields that apply to it (the others are ignored)."""

    name: SamplerName = SamplerName.euler_maruyama  # euler_maruyama | shark | ode | ddim | pc
    steps: Optional[int] = 200  # number of equal time steps; null: adaptive (ode with tsit5, shark)
    solver: OdeSolver = OdeSolver.tsit5  # ode only: tsit5 | heun | euler
    rtol: float = 1.0e-3  # adaptive steps: relative tolerance of the PID controller, > 0
    atol: float = 1.0e-3  # adaptive steps: absolute tolerance, > 0
    variables: Variables = Variables.t  # ode only: t (x against t) | sigma | log_sigma ((x - b)/m against s/m or its log)
    spacing: Spacing = Spacing.uniform  # fixed steps: uniform in t | log_snr (equal steps of log(s^2/m^2))
    corrector_steps: int = 1  # pc only: Langevin corrector steps before each predictor step
    snr: float = 0.16  # pc only: the corrector's signal-to-noise ratio r > 0 (step size 2 r^2 s(t)^2)
    eta: float = 0.0  # ddim only: noise of each step in [0, 1]; 0 deterministic, 1 the ancestral (DDPM) sampler
    clip: Optional[List[float]] = None  # ddim only: [lo, hi], the range each step's x0 estimate is clipped to (the data's range); null: off
    denoise: bool = True  # finish with Tweedie's denoising step (one more evaluation)
    t_end: Optional[float] = None  # null: solve down to the SDE's t0; else stop at this time in [sde.t0, sde.t1)
    coarse_grid: Optional[int] = None  # null: the target grid throughout; n >= 4: on the n-grid down to switch_time first
    switch_time: float = 0.1  # with coarse_grid: the time the sample moves to the target grid, in (sde.t0, sde.t1)

    def check(self, where: str, t0: float, t1: float, grids: list[int] | None = None) -> None:
        """The fields the library's samplers do not check themselves, for an SDE on $[t_0, t_1]$
        and target `grids`."""
        adaptive = self.steps is None
        if adaptive and self.name in FIXED_STEPS:
            fail(f"{where}.steps", f"must be a positive int for sampler {self.name.value}", None)
        if adaptive and self.name == SamplerName.ode and self.solver != OdeSolver.tsit5:
            raise ConfigError(
                f"{where}.steps is null (adaptive steps), which needs {where}.solver = tsit5, got "
                f"{self.solver.value!r}."
            )
        if not adaptive:
            positive(f"{where}.steps", self.steps, 2 if self.coarse_grid is not None else 1)
        number(f"{where}.rtol", self.rtol, lambda v: v > 0, "a number > 0")
        number(f"{where}.atol", self.atol, lambda v: v > 0, "a number > 0")
        number(f"{where}.eta", self.eta, lambda v: 0 <= v <= 1, "a number in [0, 1]")
        if self.clip is not None:
            value_range(f"{where}.clip", self.clip)
            if self.name != SamplerName.ddim:
                raise ConfigError(f"{where}.clip applies to the ddim sampler only, got sampler {self.name.value!r}.")
        if self.t_end is not None:
            number(f"{where}.t_end", self.t_end, lambda v: t0 <= v < t1,
                   f"null or a number in [sde.t0, sde.t1) = [{t0:g}, {t1:g})")
        if self.coarse_grid is not None:
            positive(f"{where}.coarse_grid", self.coarse_grid, 4)
            number(f"{where}.switch_time", self.switch_time, lambda v: t0 < v < t1,
                   f"a number in (sde.t0, sde.t1) = ({t0:g}, {t1:g})")
            if self.t_end is not None and not self.t_end < self.switch_time:
                raise ConfigError(f"{where}.t_end {self.t_end} must be below {where}.switch_time {self.switch_time}.")
            if grids is not None and any(g < self.coarse_grid for g in grids):
                raise ConfigError(
                    f"{where}.coarse_grid {self.coarse_grid} must not exceed any of the grids it samples {list(grids)}."
                )

    def check_fixed_steps_in_t(self, where: str, needs: str, why: str) -> None:
        """What the sampler's loop must be for `needs` (a setting, named in the messages): fixed
        steps (`why` says why adaptive ones cannot do) in the variables (t, x)."""
        if self.steps is None:
            fail(f"{where}.steps", f"must be a positive int {needs} ({why})", None)
        if self.name == SamplerName.ode and self.variables != Variables.t:
            raise ConfigError(f"{where}.variables must be t {needs}, got {self.variables.value!r}.")

    def check_self_conditioned(self, where: str) -> None:
        """A self-conditioned network (`loss.self_conditioning`) is fed the previous step's estimate
        of $x_0$, which needs fixed steps, in the variables (t, x), of a solver that does not reuse
        its last stage (`sdeflow.samplers.SelfConditioningSolver`)."""
        self.check_fixed_steps_in_t(where, "with loss.self_conditioning",
                                    "adaptive steps cannot feed back the previous step's x0 estimate")
        if self.name == SamplerName.ode and self.solver == OdeSolver.tsit5:
            raise ConfigError(f"{where}.solver tsit5 reuses its last stage across steps, which loss.self_conditioning "
                              "invalidates; use heun or euler.")


SAMPLERS = {
    "euler_maruyama": SamplerConfig(),
    "pc": SamplerConfig(name=SamplerName.pc, steps=100),
    "ode": SamplerConfig(name=SamplerName.ode, steps=None),
    "ddim": SamplerConfig(name=SamplerName.ddim, steps=100),
    "shark": SamplerConfig(name=SamplerName.shark, steps=None, rtol=1e-2, atol=1e-2),
}
"""The options of the `sampler` group."""
