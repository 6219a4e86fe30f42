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

    A self-conditioned model (`self_conditioning=True`, trained with `dsm_loss(...,
    self_conditioning=p)`) takes `2 c` input channels: those of $x$, then an earlier estimate of
    $x_0$ (`cond`; zeros when `None`). The samplers pass the previous step's estimate
    (`sdeflow.samplers.SelfConditioningSolver`). Without self-conditioning `cond` is ignored.

    **Arguments:**

    - `model`: a callable `(t, x) -> output`, `t` a scalar array, `x` of shape `(c, *grid)`.
    - `sde`: the forward SDE the model was trained with.
    - `parameterisation`: the kind of the model's output, an `AbstractParameterisation`.
    """

    model: Callable[[Float[Array, ""], Field], Field]
    sde: AbstractSDE
    parameterisation: AbstractParameterisation = Epsilon()
    self_conditioning: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        check_parameterisation(self.parameterisation)

    def _coefficients(self, t: Float[Array, ""], x: Field) -> tuple[Array, Array, Field]:
        m, s = self.sde.marginal(t)
        b = self.sde.mean(t, jnp.zeros_like(x))
        return m, s, b

    def _input(self, x: Field, cond: Field | None) -> Float[Array, "k *grid"]:
        if not self.self_conditioning:
            return x
        return jnp.concatenate([x, jnp.zeros_like(x) if cond is None else cond.astype(x.dtype)], axis=0)

    def epsilon(self, t: RealScalarLike, x: Field, cond: Field | None = None) -> Field:
        """The predicted noise $\\hat\\epsilon(t, x)$ (one network evaluation); `cond`: the estimate
        of $x_0$ a self-conditioned model is given."""
        t = jnp.asarray(t, jnp.float32)
        m, s, b = self._coefficients(t, x)
        return self.parameterisation.to_epsilon(self.model(t, self._input(x, cond)), x, m, s, b)

    def __call__(self, t: RealScalarLike, x: Field, cond: Field | None = None) -> Field:
        """$C \\nabla \\log p_t(x) = -\\hat\\epsilon / s$ (one network evaluation)."""
        t = jnp.asarray(t, jnp.float32)
        _, s = self.sde.marginal(t)
        return -self.epsilon(t, x, cond) / s

    def denoise(self, t: RealScalarLike, x: Field, cond: Field | None = None) -> Field:
        """Tweedie's estimate $E[X_0 | X_t = x] = (x - b - s \\hat\\epsilon) / m$ (one evaluation)."""
        t = jnp.asarray(t, jnp.float32)
        m, s, b = self._coefficients(t, x)
        return (x - b - s * self.epsilon(t, x, cond)) / m
