"""Time weightings $w(t)$ of the denoising loss $w(t) \\|\\hat\\epsilon - \\epsilon\\|^2$."""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..checks import check_instance
from ..custom_types import RealScalarLike
from ..sde import AbstractSDE


class AbstractWeighting(eqx.Module):
    """A weighting $w(t) \\ge 0$ of the $\\epsilon$-prediction loss. Every weighted loss of $x_0$, $v$ or
    the score is such a weighting of the $\\epsilon$ loss (Kingma and Gao, 2023)."""

    @abc.abstractmethod
    def __call__(self, sde: AbstractSDE, t: RealScalarLike) -> Float[Array, ""]:
        """$w(t)$ for the given SDE."""


class SimpleWeighting(AbstractWeighting):
    """$w = 1$: the "simple" loss of DDPM."""

    def __call__(self, sde: AbstractSDE, t: RealScalarLike) -> Float[Array, ""]:
        return jnp.ones_like(jnp.asarray(t, jnp.float32))


class LikelihoodWeighting(AbstractWeighting):
    """$w = \\gamma'(t)$, with $\\gamma = \\log(s^2/m^2)$.

    With the Cameron–Martin norm on the grid (`norm=CameronMartinNorm()`) half this loss is the
    continuous-time diffusion term of the ELBO (variational diffusion models); with the $L^2$ norm it
    is the same time weighting applied to a norm that stays finite as the grid is refined.
    """

    def __call__(self, sde: AbstractSDE, t: RealScalarLike) -> Float[Array, ""]:
        return sde.gamma_derivative(t)


class P2Weighting(AbstractWeighting):
    """$w = (k + \\mathrm{SNR}(t))^{-\\gamma_{p2}}$ with $\\mathrm{SNR} = m^2 / s^2$ (Choi et al., 2022).

    **Arguments:**

    - `p2_gamma`: the exponent $\\gamma_{p2} \\ge 0$ (0 gives the simple loss). Named apart from the
      schedule's $\\gamma(t)$, which is a different thing.
    - `p2_k`: the offset $k > 0$.
    """

    p2_gamma: float = 1.0
    p2_k: float = 1.0

    def __check_init__(self):
        if not (self.p2_gamma >= 0 and self.p2_k > 0):
            raise ValueError(f"need `p2_gamma` >= 0 and `p2_k` > 0, got {self.p2_gamma}, {self.p2_k}.")

    def __call__(self, sde: AbstractSDE, t: RealScalarLike) -> Float[Array, ""]:
        snr = jnp.exp(-sde.gamma(t))
        return (self.p2_k + snr) ** (-self.p2_gamma)


WEIGHTINGS: dict[str, type[AbstractWeighting]] = {
    "simple": SimpleWeighting,
    "likelihood": LikelihoodWeighting,
    "p2": P2Weighting,
}
"""The names a config gives the weightings, and their classes (`P2Weighting` with its defaults)."""


def check_weighting(weighting: object) -> AbstractWeighting:
    """`weighting` if it is an `AbstractWeighting`, else a `TypeError` saying which object to pass."""
    return check_instance(weighting, "weighting", AbstractWeighting, WEIGHTINGS, "sdeflow.losses")
