"""Forward SDEs driven by a prior's $C^{1/2} dW$, and their noise schedules."""

from ._base import (
    AbstractCentredSDE as AbstractCentredSDE,
    AbstractSDE as AbstractSDE,
    check_score_defined as check_score_defined,
    known_noise_scale as known_noise_scale,
)
from .ou_bridge import OUBridge as OUBridge
from .schedules import (
    AbstractSchedule as AbstractSchedule,
    CosineSchedule as CosineSchedule,
    LearnedSchedule as LearnedSchedule,
    LinearSchedule as LinearSchedule,
)
from .subvp import SubVPSDE as SubVPSDE
from .ve import VESDE as VESDE
from .vp import VPSDE as VPSDE
