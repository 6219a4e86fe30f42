"""Exact conversions between what a score network predicts: $\\epsilon$, $x_0$, $v$ or the score.

With $x_t = m x_0 + b + s \\epsilon$ and $\\epsilon \\sim N(0, C)$, write $y = x_t - b$:

- `Epsilon()`: the noise $\\epsilon$;
- `X0()`: the clean field $x_0 = (y - s \\epsilon) / m$;
- `V()`: $v = m \\epsilon - s x_0$ (Salimans and Ho), so $\\epsilon = (s y + m v) / (m^2 + s^2)$;
- `Score()`: the $C$-preconditioned score $C \\nabla \\log p_t(x_t) = -\\epsilon / s$ (of the
  transition from $x_0$; a network trained by denoising learns its conditional mean).

Losses, `sdeflow.samplers.PreconditionedScore` and the likelihood take one of these objects;
`PARAMETERISATIONS` maps the names a config uses to the classes.
"""

import abc

import equinox as eqx
from jaxtyping import Array, Float

from .checks import check_instance
from .custom_types import RealScalarLike


Coefficient = RealScalarLike | Float[Array, "..."]
"""$m$, $s$: scalars, or arrays broadcasting against the fields (one per sample of a batch)."""

Fields = Float[Array, "*shape"]
"""A field or a batch of fields: the network's output, $x_t$ and $\\epsilon$ share its shape."""

Offset = Float[Array, "*shape"] | RealScalarLike
"""$b$: the offset of the marginal mean, a field or a scalar."""


class AbstractParameterisation(eqx.Module):
    """What a network predicts: an exact, invertible function of the noise $\\epsilon$ given
    $x_t$ and the marginal coefficients $m$, $s$, $b$ of its time."""

    @abc.abstractmethod
    def to_epsilon(
        self,
        output: Fields,
        x_t: Fields,
        m: Coefficient,
        s: Coefficient,
        b: Offset = 0.0,
    ) -> Fields:
        """The $\\epsilon$ that a network output of this kind stands for.

        **Arguments:**

        - `output`: the network's output.
        - `x_t`: the noisy input.
        - `m`, `s`: the marginal coefficients at the time of `x_t`.
        - `b`: the offset of the marginal mean (nonzero only for the OU bridge).

        **Returns:**

        $\\epsilon$, of the shape of `x_t`.
        """

    @abc.abstractmethod
    def from_epsilon(
        self,
        eps: Fields,
        x_t: Fields,
        m: Coefficient,
        s: Coefficient,
        b: Offset = 0.0,
    ) -> Fields:
        """The network output of this kind that stands for $\\epsilon$ (inverse of `to_epsilon`).

        **Arguments:**

        - `eps`: the noise $\\epsilon$.
        - `x_t`: the noisy input.
        - `m`, `s`: the marginal coefficients at the time of `x_t`.
        - `b`: the offset of the marginal mean.

        **Returns:**

        The output of this kind, of the shape of `x_t`.
        """


class Epsilon(AbstractParameterisation):
    """The network predicts the noise $\\epsilon$."""

    def to_epsilon(
        self, output: Fields, x_t: Fields, m: Coefficient, s: Coefficient, b: Offset = 0.0
    ) -> Fields:
        return output

    def from_epsilon(
        self, eps: Fields, x_t: Fields, m: Coefficient, s: Coefficient, b: Offset = 0.0
    ) -> Fields:
        return eps


class X0(AbstractParameterisation):
    """The network predicts the clean field $x_0 = (x_t - b - s \\epsilon) / m$."""

    def to_epsilon(
        self, output: Fields, x_t: Fields, m: Coefficient, s: Coefficient, b: Offset = 0.0
    ) -> Fields:
        return (x_t - b - m * output) / s

    def from_epsilon(
        self, eps: Fields, x_t: Fields, m: Coefficient, s: Coefficient, b: Offset = 0.0
    ) -> Fields:
        return (x_t - b - s * eps) / m


class V(AbstractParameterisation):
    """The network predicts $v = m \\epsilon - s x_0$ (Salimans and Ho)."""

    def to_epsilon(
        self, output: Fields, x_t: Fields, m: Coefficient, s: Coefficient, b: Offset = 0.0
    ) -> Fields:
        return (s * (x_t - b) + m * output) / (m**2 + s**2)

    def from_epsilon(
        self, eps: Fields, x_t: Fields, m: Coefficient, s: Coefficient, b: Offset = 0.0
    ) -> Fields:
        x0 = (x_t - b - s * eps) / m
        return m * eps - s * x0


class Score(AbstractParameterisation):
    """The network predicts the preconditioned score $C \\nabla \\log p_t = -\\epsilon / s$."""

    def to_epsilon(
        self, output: Fields, x_t: Fields, m: Coefficient, s: Coefficient, b: Offset = 0.0
    ) -> Fields:
        return -s * output

    def from_epsilon(
        self, eps: Fields, x_t: Fields, m: Coefficient, s: Coefficient, b: Offset = 0.0
    ) -> Fields:
        return -eps / s


PARAMETERISATIONS: dict[str, type[AbstractParameterisation]] = {
    "epsilon": Epsilon,
    "x0": X0,
    "v": V,
    "score": Score,
}
"""The names a config gives the parameterisations, and their classes."""


def check_parameterisation(parameterisation: object) -> AbstractParameterisation:
    """`parameterisation` if it is an `AbstractParameterisation`, else a `TypeError` saying which
    object to pass (a config's name such as `"v"` is answered with `V()`).

    **Arguments:**

    - `parameterisation`: the object to check.

    **Returns:**

    `parameterisation` itself, unchanged.
    """
    return check_instance(
        parameterisation, "parameterisation", AbstractParameterisation, PARAMETERISATIONS,
        "sdeflow.parameterisation",
    )


def convert(
    output: Fields,
    source: AbstractParameterisation,
    target: AbstractParameterisation,
    x_t: Fields,
    m: Coefficient,
    s: Coefficient,
    b: Offset = 0.0,
) -> Fields:
    """Convert a network output from kind `source` to kind `target` (exact, through $\\epsilon$).

    **Arguments:**

    - `output`: the network's output, of kind `source`.
    - `source`, `target`: parameterisations, e.g. `Epsilon()` and `V()`.
    - `x_t`, `m`, `s`, `b`: as in `AbstractParameterisation.to_epsilon`.

    **Returns:**

    The output as kind `target`.
    """
    source, target = check_parameterisation(source), check_parameterisation(target)
    return target.from_epsilon(source.to_epsilon(output, x_t, m, s, b), x_t, m, s, b)
