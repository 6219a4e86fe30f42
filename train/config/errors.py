"""The error of a config field with a wrong value, the checks that raise it, and string choices."""

import enum
import math
from collections.abc import Callable
from typing import Any


class ConfigError(ValueError):
    """A config field has a wrong value; the message names the field, e.g. `train.batch_size`."""


def fail(field: str, requirement: str, value: Any) -> None:
    """Raise `ConfigError("<field> <requirement>, got <value>.")`."""
    raise ConfigError(f"{field} {requirement}, got {value!r}.")


def positive(field: str, value: int | float, low: int | float = 1) -> None:
    """`value >= low` (types are hydra's to check)."""
    if not value >= low:
        fail(field, f"must be >= {low}" if low != 1 else "must be a positive int", value)


def number(field: str, value: float | None, check: Callable[[float], bool], what: str) -> None:
    """A finite number that passes `check`, described by `what` in the message."""
    if value is None or not math.isfinite(value) or not check(value):
        fail(field, f"must be {what}", value)


def value_range(field: str, value: Any) -> None:
    """`null` or `[lo, hi]` with `lo < hi` (a clip range)."""
    if value is not None and (len(value) != 2 or not float(value[0]) < float(value[1])):
        fail(field, "must be null or [lo, hi] with lo < hi", list(value))


class Choice(str, enum.Enum):
    """A choice among names: hydra refuses any other value at composition, naming the field; the
    members are the strings themselves (`str(SamplerName.pc) == "pc"`)."""

    __str__ = str.__str__
    __format__ = str.__format__


def choices(name: str, values) -> type[Choice]:
    """A `Choice` of the names `values`: any iterable of names, such as a library's table of names
    to classes (`sdeflow.samplers.SPACINGS`...), whose keys it takes."""
    return Choice(name, {v: v for v in values})
