"""Argument checks shared across sdeflow's subpackages."""

import math


def check_positive(value: float, name: str) -> float:
    """`value` as a float, or a `ValueError` naming the argument `name` unless it is positive and
    finite.

    **Arguments:**

    - `value`: the number to check.
    - `name`: the argument's name, for the message.

    **Returns:**

    `float(value)`.
    """
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"`{name}` must be a positive finite number, got {value}.")
    return value
