"""Exact conversions between what a score network predicts: $\\epsilon$, $x_0$, $v$ or the score.

With $x_t = m x_0 + b + s \\epsilon$ and $\\epsilon \\sim N(0, C)$ (DESIGN §3), write $y = x_t - b$:

- `"epsilon"`: the noise $\\epsilon$;
- `"x0"`: the clean field $x_0 = (y - s \\epsilon) / m$;
- `"v"`: $v = m \\epsilon - s x_0$ (Salimans and Ho), so $\\epsilon = (s y + m v) / (m^2 + s^2)$;
- `"score"`: the $C$-preconditioned score $C \\nabla \\log p_t(x_t) = -\\epsilon / s$ (of the
  transition from $x_0$; a network trained by denoising learns its conditional mean).
"""

from typing import Literal

from jaxtyping import Array, Float

from .custom_types import RealScalarLike


Coefficient = RealScalarLike | Float[Array, "..."]
"""$m$, $s$: scalars, or arrays broadcasting against the fields (one per sample of a batch)."""


Parameterisation = Literal["epsilon", "x0", "v", "score"]
PARAMETERISATIONS: tuple[str, ...] = ("epsilon", "x0", "v", "score")


def check_parameterisation(kind: str) -> str:
    if kind not in PARAMETERISATIONS:
        raise ValueError(f"`parameterisation` must be one of {PARAMETERISATIONS}, got {kind!r}.")
    return kind


def to_epsilon(
    kind: str,
    output: Float[Array, "*shape"],
    x_t: Float[Array, "*shape"],
    m: Coefficient,
    s: Coefficient,
    b: Float[Array, "*shape"] | RealScalarLike = 0.0,
) -> Float[Array, "*shape"]:
    """The $\\epsilon$ that a network output of the given kind stands for.

    **Arguments:**

    - `kind`: one of `"epsilon"`, `"x0"`, `"v"`, `"score"`.
    - `output`: the network's output.
    - `x_t`: the noisy input.
    - `m`, `s`: the marginal coefficients at the time of `x_t`.
    - `b`: the offset of the marginal mean (nonzero only for the OU bridge).

    **Returns:**

    $\\epsilon$, of the shape of `x_t`.
    """
    y = x_t - b
    if check_parameterisation(kind) == "epsilon":
        return output
    if kind == "x0":
        return (y - m * output) / s
    if kind == "v":
        return (s * y + m * output) / (m**2 + s**2)
    return -s * output


def from_epsilon(
    kind: str,
    eps: Float[Array, "*shape"],
    x_t: Float[Array, "*shape"],
    m: Coefficient,
    s: Coefficient,
    b: Float[Array, "*shape"] | RealScalarLike = 0.0,
) -> Float[Array, "*shape"]:
    """The network output of the given kind that stands for $\\epsilon$ (inverse of `to_epsilon`).

    **Arguments:**

    - `kind`: one of `"epsilon"`, `"x0"`, `"v"`, `"score"`.
    - `eps`: the noise $\\epsilon$.
    - `x_t`: the noisy input.
    - `m`, `s`: the marginal coefficients at the time of `x_t`.
    - `b`: the offset of the marginal mean.

    **Returns:**

    The output of kind `kind`.
    """
    y = x_t - b
    if check_parameterisation(kind) == "epsilon":
        return eps
    x0 = (y - s * eps) / m
    if kind == "x0":
        return x0
    if kind == "v":
        return m * eps - s * x0
    return -eps / s


def convert(
    output: Float[Array, "*shape"],
    source: str,
    target: str,
    x_t: Float[Array, "*shape"],
    m: Coefficient,
    s: Coefficient,
    b: Float[Array, "*shape"] | RealScalarLike = 0.0,
) -> Float[Array, "*shape"]:
    """Convert a network output from kind `source` to kind `target` (exact, through $\\epsilon$).

    **Arguments:**

    - `output`: the network's output, of kind `source`.
    - `source`, `target`: kinds among `"epsilon"`, `"x0"`, `"v"`, `"score"`.
    - `x_t`, `m`, `s`, `b`: as in `to_epsilon`.

    **Returns:**

    The output as kind `target`.
    """
    return from_epsilon(target, to_epsilon(source, output, x_t, m, s, b), x_t, m, s, b)
