"""The noise $g(t) C^{1/2} dW$ of the reverse SDE as a diffrax term."""

import diffrax
from jaxtyping import Array, Float

from ..custom_types import Field, RealScalarLike
from ..sde import AbstractSDE


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
        return vf * self.sde.prior.from_white_noise(control)
