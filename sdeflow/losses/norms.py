"""The norms a denoising loss measures the error $\\hat\\epsilon - \\epsilon$ in."""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..checks import check_instance
from ..custom_types import Field
from ..grid import field_grid, fourier, inverse_fourier
from ..sde import AbstractSDE


class AbstractNorm(eqx.Module):
    """A norm of one field, $\\|v\\|$, for the forward SDE (whose prior may define it)."""

    @abc.abstractmethod
    def squared(self, sde: AbstractSDE, v: Field) -> Float[Array, ""]:
        """$\\|v\\|^2$ of the field `v`, `(c, *grid)`."""


class L2Norm(AbstractNorm):
    """The $L^2(\\mathbb{T}^d)$ norm: the mean over grid points, summed over channels. Finite as the grid
    is refined for $\\epsilon \\sim N(0, C)$ with $C$ trace class."""

    def squared(self, sde: AbstractSDE, v: Field) -> Float[Array, ""]:
        return jnp.sum(jnp.mean(v**2, axis=tuple(range(1, v.ndim))))


class CameronMartinNorm(AbstractNorm):
    """$\\|C^{-1/2} v\\|_{L^2}$, with $\\|v\\|^2 = \\sum_k |\\hat v_k|^2 / \\lambda_k$ on the grid: the norm of
    the likelihood, which grows with the resolution."""

    def squared(self, sde: AbstractSDE, v: Field) -> Float[Array, ""]:
        return sde.prior.cameron_martin_norm2(v)


class InterpolatedNorm(AbstractNorm):
    """$\\|(C / \\lambda_{\\max})^{-r/2} v\\|_{L^2}$ for $0 \\le r \\le 1$: between the $L^2$ norm
    ($r = 0$) and the Cameron-Martin norm ($r = 1$, divided by $\\lambda_{\\max}$), with

    $\\|v\\|^2 = \\sum_k (\\lambda_{\\max} / \\lambda_k)^r |\\hat v_k|^2$

    over the modes the prior charges on the grid ($\\lambda_{\\max}$ the largest of them, the mean
    mode's for a Matérn prior, the same on every grid) and weight 1 on the others, so that $r = 0$ is
    `L2Norm` exactly. In the error of a denoiser it raises the weight of the fine modes, whose noise
    the $L^2$ norm weighs by their small eigenvalues, by $(\\lambda_{\\max} / \\lambda_k)^r$. For
    $\\epsilon \\sim N(0, C)$ the expected square is $\\sum_k \\lambda_{\\max}^r \\lambda_k^{1 - r}$,
    finite as the grid is refined when $C^{1 - r}$ is trace class (a Matérn prior of exponent $s$ on
    the $d$-torus: $(1 - r) s > d / 2$).

    **Arguments:**

    - `power`: the exponent $r$, in $[0, 1]$ (0: `L2Norm`; 1: the Cameron-Martin norm divided by
      $\\lambda_{\\max}$); default 0.25.
    """

    power: float = 0.25

    def __check_init__(self):
        if not 0.0 <= float(self.power) <= 1.0:
            raise ValueError(f"`power` must be in [0, 1] (0: the L2 norm, 1: Cameron-Martin), got {self.power}.")

    def squared(self, sde: AbstractSDE, v: Field) -> Float[Array, ""]:
        # The weights are the loss's choice, not a quantity to train: a learned prior must not
        # lower the loss by reweighting it.
        lam = jax.lax.stop_gradient(sde.prior.eigenvalues(field_grid(v, "v")))
        charged = lam > 0
        ratio = jnp.max(lam) / jnp.where(charged, lam, 1.0)
        root = jnp.where(charged, ratio ** (0.5 * self.power), 1.0)
        w = inverse_fourier(fourier(v) * root, v.shape[1:])
        return jnp.sum(jnp.mean(w**2, axis=tuple(range(1, v.ndim))))


class L1Norm(AbstractNorm):
    """The mean absolute error: `squared` is $\\|v\\|_{L^1}$ itself (the mean over grid points of
    $|v|$, summed over channels), not its square, so a loss with this norm is the "L1 loss" of the
    DDPM codes. Less sensitive to large errors than the $L^2$ loss; not a likelihood bound."""

    def squared(self, sde: AbstractSDE, v: Field) -> Float[Array, ""]:
        return jnp.sum(jnp.mean(jnp.abs(v), axis=tuple(range(1, v.ndim))))


NORMS: dict[str, type[AbstractNorm]] = {
    "l2": L2Norm, "cameron_martin": CameronMartinNorm, "interpolated": InterpolatedNorm, "l1": L1Norm,
}
"""The names a config gives the norms, and their classes."""


def check_norm(norm: object) -> AbstractNorm:
    """`norm` if it is an `AbstractNorm`, else a `TypeError` saying which object to pass."""
    return check_instance(norm, "norm", AbstractNorm, NORMS, "sdeflow.losses")
