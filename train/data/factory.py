"""Data sources by name, built from plain config values."""

import dataclasses
from typing import Any

from .cifar10 import Cifar10Source
from .fashion_mnist import FashionMnistSource
from .generated import GeneratedSource
from .mnist import MnistSource
from .source import AbstractSource

SOURCES: dict[str, type[AbstractSource]] = {
    "mnist": MnistSource,
    "fashion_mnist": FashionMnistSource,
    "cifar10": Cifar10Source,
    "generated": GeneratedSource,
}
"""Source kind -> source class."""


def make_source(kind: str, **fields: Any) -> AbstractSource:
    """The source of kind `kind` with the given fields, e.g. `make_source("mnist", split="t10k", ...)`.

    **Arguments:**

    - `kind`: one of `SOURCES`.
    - `fields`: the source's fields (see its class); an unknown field is an error naming the
        known ones.

    **Returns:**

    The source.
    """
    if kind not in SOURCES:
        raise ValueError(f"unknown data source {kind!r}; known: {sorted(SOURCES)}.")
    cls = SOURCES[kind]
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ValueError(f"data source {kind!r} has no field(s) {unknown}; its fields are {known}.")
    return cls(**fields)
