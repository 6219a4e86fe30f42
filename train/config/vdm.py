"""Schema of the `loss=vdm` option: the ELBO of variational diffusion models
(`sdeflow.losses.vdm_elbo`), trained with a learned monotone noise schedule (the part `schedule`)."""

import dataclasses

from sdeflow.losses import DECODERS

from .diffusion import check_name, Parameterisation, TimeSampling
from .errors import choices, fail, number, positive

DecoderName = choices("DecoderName", DECODERS)


@dataclasses.dataclass
class VdmConfig:
    """The continuous-time ELBO (`sdeflow.losses.vdm_elbo`). With `learned_schedule` the VP SDE's
    schedule is `sdeflow.sde.LearnedSchedule`, trained beside the network as the part `schedule`
    (its own optimiser settings under `optim_parts.schedule`, its EMA, its checkpoints), and the
    samplers, the likelihood and `train.evaluate` use the learned one."""

    name: str = "vdm"  # the loss: vdm (this schema); set by the group option (loss=vdm)
    parameterisation: Parameterisation = Parameterisation.epsilon  # what the network predicts: epsilon | x0 | v | score
    time_sampling: TimeSampling = TimeSampling.stratified  # stratified | uniform | antithetic
    decoder: DecoderName = DecoderName.gaussian  # the reconstruction term: gaussian (a density) | discretised (8-bit values: a distribution over `levels` values)
    levels: int = 256  # discretised decoder: values per grid point, evenly spaced on [-1, 1] (256: 8-bit pixels)
    learned_schedule: bool = True  # train the schedule gamma(t) as the part `schedule` (needs sde=vp); false: the sde's fixed schedule
    gamma_min: float = -13.3  # learned schedule: gamma(0) = log(s^2/m^2) at t = 0 (its initial value if learned)
    gamma_max: float = 5.0  # learned schedule: gamma(1), > gamma_min (its initial value if learned)
    learn_endpoints: bool = True  # learned schedule: train gamma_min and gamma_max too (false: fixed)
    schedule_hidden: int = 64  # learned schedule: width of its monotone network
    variance_reduction: bool = True  # learned schedule: its shape descends the per-example mean of L_diff^2 (Kingma et al. 2021, app. I.2), the network and end points the ELBO

    def check(self, where: str = "loss") -> None:
        check_name(where, self, "vdm")
        positive(f"{where}.levels", self.levels, 2)
        number(f"{where}.gamma_min", self.gamma_min, lambda v: True, "a finite number")
        number(f"{where}.gamma_max", self.gamma_max, lambda v: v > self.gamma_min,
               f"a finite number > {where}.gamma_min ({self.gamma_min})")
        positive(f"{where}.schedule_hidden", self.schedule_hidden)
        if self.variance_reduction and not self.learned_schedule:
            fail(f"{where}.variance_reduction", f"needs {where}.learned_schedule=true (it shapes a learned schedule)",
                 self.variance_reduction)
