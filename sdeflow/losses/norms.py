"""The norms a denoising loss measures the error $\\hat\\epsilon - \\epsilon$ in."""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..checks import check_instance
from ..custom_types import Field
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


class L1Norm(AbstractNorm):
    """The mean absolute error: `squared` is $\\|v\\|_{L^1}$ itself (the mean over grid points of
    $|v|$, summed over channels), not its square, so a loss with this norm is the "L1 loss" of the
    DDPM codes. Less sensitive to large errors than the $L^2$ loss; not a likelihood bound."""

    def squared(self, sde: AbstractSDE, v: Field) -> Float[Array, ""]:
        return jnp.sum(jnp.mean(jnp.abs(v), axis=tuple(range(1, v.ndim))))


NORMS: dict[str, type[AbstractNorm]] = {"l2": L2Norm, "cameron_martin": CameronMartinNorm, "l1": L1Norm}
"""The names a config gives the norms, and their classes."""


def check_norm(norm: object) -> AbstractNorm:
    """`norm` if it is an `AbstractNorm`, else a `TypeError` saying which object to pass."""
    return check_instance(norm, "norm", AbstractNorm, NORMS, "sdeflow.losses")
