"""The preconditioned score $C \\nabla \\log p_t$ from a network output of any parameterisation."""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..custom_types import Field, RealScalarLike
from ..parameterisation import AbstractParameterisation, check_parameterisation, Epsilon
from ..sde import AbstractSDE


class PreconditionedScore(eqx.Module):
    """A score model seen through the forward SDE: $S(t, x) = C \\nabla \\log p_t(x) = -\\epsilon / s(t)$.

    `model(t, x)` acts on one sample and returns its output of kind `parameterisation`
    (`Epsilon()`, `X0()`, `V()` or `Score()` of `sdeflow.parameterisation`); every evaluation of
    this object is one network evaluation.

    **Arguments:**

    - `model`: a callable `(t, x) -> output`, `t` a scalar array, `x` of shape `(c, *grid)`.
    - `sde`: the forward SDE the model was trained with.
    - `parameterisation`: the kind of the model's output, an `AbstractParameterisation`.
    """

    model: Callable[[Float[Array, ""], Field], Field]
    sde: AbstractSDE
    parameterisation: AbstractParameterisation = Epsilon()

    def __check_init__(self):
        check_parameterisation(self.parameterisation)

    def _coefficients(self, t: Float[Array, ""], x: Field) -> tuple[Array, Array, Field]:
        m, s = self.sde.marginal(t)
        b = self.sde.mean(t, jnp.zeros_like(x))
        return m, s, b

    def epsilon(self, t: RealScalarLike, x: Field) -> Field:
        """The predicted noise $\\hat\\epsilon(t, x)$ (one network evaluation)."""
        t = jnp.asarray(t, jnp.float32)
        m, s, b = self._coefficients(t, x)
        return self.parameterisation.to_epsilon(self.model(t, x), x, m, s, b)

    def __call__(self, t: RealScalarLike, x: Field) -> Field:
        """$C \\nabla \\log p_t(x) = -\\hat\\epsilon / s$ (one network evaluation)."""
        t = jnp.asarray(t, jnp.float32)
        _, s = self.sde.marginal(t)
        return -self.epsilon(t, x) / s

    def denoise(self, t: RealScalarLike, x: Field) -> Field:
        """Tweedie's estimate $E[X_0 | X_t = x] = (x - b - s \\hat\\epsilon) / m$ (one evaluation)."""
        t = jnp.asarray(t, jnp.float32)
        m, s, b = self._coefficients(t, x)
        return (x - b - s * self.epsilon(t, x)) / m
