"""Argument checks shared across sdeflow's subpackages."""

import math
import numbers
from collections.abc import Callable, Mapping
from typing import TypeVar


T = TypeVar("T")


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


def check_instance(
    value: object, name: str, base: type[T], table: Mapping[str, Callable[..., T]], where: str
) -> T:
    """`value` if it is an instance of `base`, or a `TypeError` naming the argument `name` and the
    objects to pass. The names of `table` are for configs; a string among them is answered with the
    class it stands for.

    **Arguments:**

    - `value`: the argument to check.
    - `name`: the argument's name, for the message.
    - `base`: the abstract class the argument must be an instance of.
    - `table`: the concept's table of config names to classes (`sdeflow.losses.WEIGHTINGS`...).
    - `where`: the public module of the classes, e.g. `"sdeflow.parameterisation"`.

    **Returns:**

    `value`.
    """
    if isinstance(value, base):
        return value
    options = ", ".join(f"{cls.__name__}()" for cls in table.values())
    message = f"`{name}` takes an {base.__name__} object ({where}: {options}), got {value!r}"
    if isinstance(value, str) and value in table:
        message += (
            f"; pass {where}.{table[value].__name__}() instead of the string (names are for "
            "configs, which map them to the classes through the library's table)"
        )
    raise TypeError(message + ".")


def check_positive_int(value: object, name: str) -> int:
    """`value` as an int, or a `ValueError` naming the argument `name` unless it is a positive
    integer (an integral float such as `3.0` counts; a bool does not).

    **Arguments:**

    - `value`: the number to check.
    - `name`: the argument's name, for the message.

    **Returns:**

    `int(value)`.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value}.")
    return int(value)


def check_adaptive_controls(rtol: float, atol: float, max_steps: int) -> None:
    """A `ValueError` naming the argument unless the tolerances of an adaptive solve are positive
    and finite and `max_steps` is a positive integer (a negative tolerance accepts every step).

    **Arguments:**

    - `rtol`, `atol`: the PID controller's tolerances.
    - `max_steps`: the most steps the solve may take.
    """
    check_positive(rtol, "rtol")
    check_positive(atol, "atol")
    check_positive_int(max_steps, "max_steps")
