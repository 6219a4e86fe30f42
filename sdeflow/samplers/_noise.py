"""The noise $g(t) C^{1/2} dW$ of the reverse SDE as a diffrax term, and Cameron–Martin norms."""

import math

import diffrax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Field, RealScalarLike
from ..grid import field_grid, fourier, rfft_frequencies
from ..priors import AbstractPrior
from ..sde import AbstractSDE


def apply_noise_sqrt(prior: AbstractPrior, w: Field) -> Field:
    """$\\sqrt N C^{1/2} w$: unit-variance point noise to a sample of $N(0, C)$ (for $w \\sim N(0, I)$).

    The cylindrical Wiener process on an $N$-point grid has point variance $N t$ (DESIGN §1), so
    $\\sqrt N C^{1/2}$ applied to unit point noise has the law of `prior.sample`.
    """
    return math.sqrt(math.prod(field_grid(w, "w"))) * prior.apply_sqrt(w)


def cameron_martin_norm2(prior: AbstractPrior, v: Field) -> Float[Array, ""]:
    """$\\|\\Sigma_C^{-1/2} v\\|^2 = \\sum_k |\\hat v_k|^2 / \\lambda_k$ over the modes with $\\lambda_k > 0$.

    $\\Sigma_C$ is the covariance of the point values of a prior sample (eigenvalues $N\\lambda_k$);
    the pseudo-inverse skips modes the prior does not charge, so degenerate priors work too. A sample
    of the prior has this squared norm close to the number of charged modes at every resolution.
    """
    grid = field_grid(v, "v")
    lam = prior.eigenvalues(grid)
    k_last = rfft_frequencies(grid)[-1]
    multiplicity = jnp.where((k_last == 0) | (2 * k_last == grid[-1]), 1.0, 2.0)
    inverse = jnp.where(lam > 0, multiplicity / jnp.where(lam > 0, lam, 1.0), 0.0)
    return jnp.sum(jnp.abs(fourier(v)) ** 2 * inverse)


class ReverseNoiseTerm(diffrax.AbstractTerm):
    """The additive noise $g(t) \\sqrt N C^{1/2} dW$ of the SDE, with $W$ unit-variance point noise.

    The vector field is the scalar $g(t)$ (it does not depend on the state: additive noise, so the
    Itô and Stratonovich solutions agree and diffrax's additive-noise solvers ShARK and SRA1 apply),
    and `prod` applies $\\sqrt N C^{1/2}$ to the Brownian increment (or to its Lévy area).
    Samplers integrate in reversed time $\\tau = -t$: the vector field is $g(-\\tau)$ and the
    increments of the path over $\\tau$ are those of the reverse-time Brownian motion $\\bar W$.

    **Arguments:**

    - `sde`: the forward SDE (its `diffusion` and `prior`).
    - `path`: a diffrax Brownian path of the shape of one sample.
    """

    sde: AbstractSDE
    path: diffrax.AbstractBrownianPath

    def vf(self, t: RealScalarLike, y: Field, args) -> Float[Array, ""]:
        del y, args
        return self.sde.diffusion(-t)

    def contr(self, t0: RealScalarLike, t1: RealScalarLike, **kwargs):
        return self.path.evaluate(t0, t1, **kwargs)

    def prod(self, vf: Float[Array, ""], control: Field) -> Field:
        return vf * apply_noise_sqrt(self.sde.prior, control)
