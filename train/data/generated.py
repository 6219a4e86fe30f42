"""Data the project generates itself (random fields), cached on disk, as a data source.

A generator is a function `generator(count, grid, channels, seed, **params)` returning float32
fields `(count, channels, *grid)`, deterministic in its arguments; `GENERATORS` maps names to
generators (`register_generator` adds one). `GeneratedSource` generates `count` fields once and
keeps them in the cache folder as `<name>-<generator>-<key>.npy`, beside it a `.sha256` file (the
checksum of the `.npy`, in the format of `sha256sum`) and a `.json` file (the parameters). The key
is a hash of the generator's name and version and of every argument, so a changed parameter never
reads a stale cache; a cache whose checksum does not match is reported in one line and generated
again.

The cache folder is, in this order: the `cache_dir` argument, the environment variable
`SDEFLOW_DATA_CACHE`, or `~/.cache/sdeflow/generated`.
"""

import dataclasses
import hashlib
import json
import logging
import math
import os
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, final

import numpy as np

from . import files
from .source import (
    AbstractSource,
    DataError,
    Examples,
    FieldResampler,
    as_grid,
    index_ranges,
    part_range,
)

logger = logging.getLogger("train.data")

CACHE_ENV = "SDEFLOW_DATA_CACHE"
DEFAULT_CACHE = pathlib.Path("~/.cache/sdeflow/generated")

GENERATORS: dict[str, Callable[..., np.ndarray]] = {}
"""Generator name -> generator; other experiments add theirs with `register_generator`."""

_CHUNK = 256  # fields generated at once (bounds the memory of the float64 FFTs)


class GeneratedDataError(DataError):
    """A generator returned bad fields (shape, dtype, non-finite or out-of-range values)."""


def register_generator(
    name: str, version: int = 1, point_values: Callable[[tuple[int, ...], Mapping[str, Any]], bool] | None = None
) -> Callable[[Callable], Callable]:
    """A decorator adding a generator to `GENERATORS` under `name`.

    **Arguments:**

    - `name`: the registry name (part of the cache key).
    - `version`: part of the cache key as well: raise it when a change of the generator changes
        its output, so that the old caches are not read.
    - `point_values`: for a generator whose fields on a grid are the point values of the same
        functions (fields with kinks, such as signed distances, whose spectral resampling would be
        another, band-limited function): `point_values(grid, params)` says whether it computes
        them on `grid` with those parameters, and `GeneratedSource.fields_on` then generates a part
        there instead of resampling it. Such a generator takes a `start` keyword as well, field `i`
        being that of item `start + i` whatever the count, so that a part is generated alone.

    **Returns:**

    The decorator.
    """

    def register(function: Callable) -> Callable:
        function.version = int(version)
        function.point_values = point_values
        GENERATORS[name] = function
        return function

    return register


def matern_spectrum(
    grid: Sequence[int], tau: float | int, s: float | int, variance: float | int | None = None
) -> np.ndarray:
    """The eigenvalues $\\lambda_k = (\\tau^2 + 4\\pi^2 |k|^2)^{-s}$ on the frequencies of a grid.

    **Arguments:**

    - `grid`: the grid `(n_1, ..., n_d)`; its frequencies are the integer vectors $k$ with
        $-n_i/2 \\le k_i < n_i/2$ (numpy's FFT order).
    - `tau`: the inverse length scale $\\tau > 0$.
    - `s`: the exponent $s > 0$ (smoothness: the field is continuous in the limit when $s > d/2$).
    - `variance`: if given, $\\lambda$ is scaled so that $\\sum_k \\lambda_k$, the pointwise
        variance of the field on this grid, equals it; `None`: unscaled.

    **Returns:**

    A float64 array of shape `grid`, in FFT order.
    """
    if not tau > 0 or not s > 0:
        raise ValueError(f"`tau` and `s` must be > 0, got tau={tau}, s={s}.")
    axes = np.meshgrid(*(np.fft.fftfreq(n, d=1.0 / n) for n in grid), indexing="ij")
    squared = sum(k**2 for k in axes)
    spectrum = (tau**2 + 4.0 * np.pi**2 * squared) ** (-float(s))
    if variance is not None:
        if not variance > 0:
            raise ValueError(f"`variance` must be > 0, got {variance}.")
        spectrum = spectrum * (variance / spectrum.sum())
    return spectrum


@register_generator("gaussian_fields")
def gaussian_fields(
    count: int,
    grid: int | Sequence[int],
    channels: int = 1,
    seed: int = 0,
    *,
    dim: int | None = None,
    tau: float | int = 3.0,
    s: float | int = 2.0,
    variance: float | int | None = 1.0,
) -> np.ndarray:
    """Independent draws of a periodic Gaussian random field with a Matérn-like spectrum.

    Each field (and channel) is $u(x) = \\sum_k \\sqrt{\\lambda_k}\\, \\zeta_k e^{2\\pi i k \\cdot x}$
    on the grid's frequencies $k$ (`matern_spectrum`), with $\\zeta$ the unitary DFT of white noise
    on the grid (standard complex Gaussians with $\\zeta_{-k} = \\bar\\zeta_k$). The field is real,
    stationary, with mean 0 and pointwise variance $\\sum_k \\lambda_k$ (`variance` if given), and
    covariance $E\\, u(x) u(y) = \\sum_k \\lambda_k \\cos(2\\pi k \\cdot (x - y))$. The draws are
    deterministic in `seed` (numpy's PCG64).

    **Arguments:**

    - `count`: the number of fields.
    - `grid`: the grid, one size per axis, or an int with `dim`.
    - `channels`: independent channels per field.
    - `seed`: the random seed.
    - `dim`: the spatial dimension when `grid` is an int (else it must match `grid`).
    - `tau`, `s`, `variance`: the spectrum (see `matern_spectrum`).

    **Returns:**

    A float32 array `(count, channels, *grid)`.
    """
    if isinstance(grid, (int, np.integer)):
        if dim is None:
            raise ValueError("`dim` is needed when `grid` is an int.")
        grid = as_grid(grid, dim)
    else:
        grid = as_grid(grid, len(grid) if dim is None else dim)
    if count < 1 or channels < 1:
        raise ValueError(f"`count` and `channels` must be >= 1, got {count}, {channels}.")
    amplitude = np.sqrt(matern_spectrum(grid, tau, s, variance))
    axes = tuple(range(2, 2 + len(grid)))
    rng = np.random.default_rng(int(seed))
    out = np.empty((count, channels, *grid), dtype=np.float32)
    for start in range(0, count, _CHUNK):
        noise = rng.standard_normal((min(_CHUNK, count - start), channels, *grid))
        coefficients = amplitude * np.fft.fftn(noise, axes=axes, norm="ortho")
        out[start : start + len(noise)] = np.fft.ifftn(coefficients, axes=axes, norm="forward").real
    return out


def _plain(value: Any, where: str) -> Any:
    """A parameter as plain JSON data (dicts, lists, str, int, float, bool, None)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"generator parameter {where} = {value!r} is not plain data (numbers, strings, lists, dicts).")


@final
@dataclasses.dataclass(frozen=True)
class GeneratedSource(AbstractSource):
    """Fields made by a registered generator, cached on disk, as functions on $[0, 1)^d$.

    The `count` fields are generated once on `native_grid` and cached (see the module's
    docstring); `to_functions` resamples them spectrally to any grid (trigonometric interpolation
    on finer grids, $L^2$ projection on coarser ones), so one field is the same band-limited
    function on every grid.

    **Fields:**

    - `name`: a short name of the data set (the cache file's first word).
    - `generator`: the name of a generator in `GENERATORS` (default `"gaussian_fields"`).
    - `params`: its keyword parameters (plain data; all part of the cache key).
    - `count`: the number of fields generated.
    - `native_grid`: the grid they are generated on, one size per axis, or an int with `dim`.
    - `dim`: the spatial dimension (`None`: the length of `native_grid`).
    - `channels`: the number of channels.
    - `seed`: the generator's seed.
    - `train_range`: `[start, stop)` of the fields the model trains on (`None`: all of them).
    - `holdout_range`: `[start, stop)` held out for the evaluation (`None`: no holdout part);
        disjoint from `train_range`.
    - `value_range`: `(low, high)`: generated values outside it are refused (default: unbounded,
        finite values).
    - `cache_dir`: the cache folder (`None`: `$SDEFLOW_DATA_CACHE`, else
        `~/.cache/sdeflow/generated`).
    """

    name: str = "generated"
    generator: str = "gaussian_fields"
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    count: int = 1000
    native_grid: int | Sequence[int] = (64, 64)
    dim: int | None = None
    channels: int = 1
    seed: int = 0
    train_range: Sequence[int] | None = None
    holdout_range: Sequence[int] | None = None
    value_range: Sequence[float | int] = (-math.inf, math.inf)
    cache_dir: str | os.PathLike | None = None

    num_classes: ClassVar[int | None] = None

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise ValueError(f"`name` must be letters, digits, '_', '.' or '-' (a file name), got {self.name!r}.")
        if self.generator not in GENERATORS:
            raise ValueError(f"unknown generator {self.generator!r}; registered: {sorted(GENERATORS)}.")
        if isinstance(self.native_grid, (int, np.integer)):
            if self.dim is None:
                raise ValueError("`dim` is needed when `native_grid` is an int.")
            grid = as_grid(self.native_grid, self.dim)
        else:
            grid = as_grid(self.native_grid, len(self.native_grid) if self.dim is None else self.dim)
        if self.count < 1 or self.channels < 1:
            raise ValueError(f"`count` and `channels` must be >= 1, got {self.count}, {self.channels}.")
        low, high = (float(v) for v in self.value_range)
        if not low < high:
            raise ValueError(f"`value_range` must be (low, high) with low < high, got {list(self.value_range)}.")
        train, holdout = index_ranges(self.train_range, self.holdout_range)
        for part, chosen in (("train", train), ("holdout", holdout)):
            if chosen is not None:
                part_range(part, train, holdout, self.count, f"the {self.count} generated fields")
        object.__setattr__(self, "params", _plain(dict(self.params), "params"))
        object.__setattr__(self, "native_grid", grid)
        object.__setattr__(self, "dim", len(grid))
        object.__setattr__(self, "value_range", (low, high))
        object.__setattr__(self, "train_range", train)
        object.__setattr__(self, "holdout_range", holdout)

    def cache_key(self) -> dict:
        """Everything the generated fields depend on (hashed into the cache file's name)."""
        function = GENERATORS[self.generator]
        return {
            "generator": self.generator,
            "version": getattr(function, "version", 1),
            "count": int(self.count),
            "grid": list(self.native_grid),
            "channels": int(self.channels),
            "seed": int(self.seed),
            "params": self.params,
        }

    def cache_path(self) -> pathlib.Path:
        """The `.npy` file of the cache (its checksum is beside it, `.sha256`)."""
        text = json.dumps(self.cache_key(), sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        folder = files.resolve_root(self.cache_dir, CACHE_ENV, DEFAULT_CACHE)
        return folder / f"{self.name}-{self.generator}-{digest}.npy"

    def fields(self) -> np.ndarray:
        """All `count` fields `(count, channels, *native_grid)`: read from the cache, else generated and cached."""
        path = self.cache_path()
        if path.exists():
            problem = _cache_problem(path)
            if problem is None:
                fields = np.load(path, allow_pickle=False)
                problem = self._shape_problem(fields)
                if problem is None:
                    self._check_values(fields, str(path))
                    return fields
            logger.warning(f"generated-data cache {path} is corrupt ({problem}); generating it again.")
        fields = GENERATORS[self.generator](
            int(self.count), self.native_grid, int(self.channels), int(self.seed), **self.params
        )
        problem = self._shape_problem(fields)
        if problem is not None:
            raise GeneratedDataError(f"generator {self.generator!r} returned bad fields: {problem}.")
        self._check_values(fields, f"generator {self.generator!r}")
        _write_cache(path, fields, self.cache_key())
        return fields

    def load(self, part: str) -> Examples:
        """The float32 fields `(N, channels, *native_grid)` of `"train"` or `"holdout"` (no labels)."""
        start, stop = part_range(
            part, self.train_range, self.holdout_range, self.count, f"the {self.count} generated fields"
        )
        return Examples(values=np.array(self.fields()[start:stop]), labels=None)

    def fields_on(self, part: str, grid: int | Sequence[int], index: np.ndarray | None = None) -> np.ndarray:
        """The fields of one part on a grid.

        **Arguments:**

        - `part`: `"train"` or `"holdout"`.
        - `grid`: the grid, one size per axis, or an int for the same size on every axis.
        - `index`: positions in the part of the fields wanted (default: all of them, in order).

        **Returns:**

        float32 `(N, channels, *grid)`: generated on `grid` (and cached) when the generator gives
        point values there (`register_generator`'s `point_values`), else resampled spectrally from
        the native grid as `converter` does.
        """
        grid = as_grid(grid, self.dim)
        computes = getattr(GENERATORS[self.generator], "point_values", None)
        if grid == self.native_grid or computes is None or not computes(grid, self.params):
            return super().fields_on(part, grid, index)
        start, stop = part_range(part, self.train_range, self.holdout_range, self.count,
                                 f"the {self.count} generated fields")
        params = dict(self.params, start=int(self.params.get("start", 0)) + start)
        fields = dataclasses.replace(self, native_grid=grid, count=stop - start, params=params,
                                     train_range=None, holdout_range=None).fields()
        return fields if index is None else fields[index]

    def converter(self, grid: int | Sequence[int]) -> FieldResampler:
        """Fields `(B, c, *native_grid)` resampled spectrally to `(B, c, *grid)` (`FieldResampler`)."""
        return FieldResampler(native_grid=self.native_grid, grid=as_grid(grid, self.dim))

    def _shape_problem(self, fields: Any) -> str | None:
        expected = (self.count, self.channels, *self.native_grid)
        if not isinstance(fields, np.ndarray) or fields.dtype != np.float32 or fields.shape != expected:
            found = (fields.dtype, fields.shape) if isinstance(fields, np.ndarray) else type(fields).__name__
            return f"expected float32 of shape {expected}, found {found}"
        return None

    def _check_values(self, fields: np.ndarray, where: str) -> None:
        low, high = self.value_range
        if not np.all(np.isfinite(fields)):
            raise GeneratedDataError(f"{where}: the fields hold non-finite values.")
        if fields.min() < low or fields.max() > high:
            raise GeneratedDataError(
                f"{where}: values from {fields.min()} to {fields.max()} lie outside the value_range "
                f"[{low}, {high}] of {self.name!r}."
            )


def _cache_problem(path: pathlib.Path) -> str | None:
    """Why the cache at `path` cannot be trusted, or `None` when its checksum matches."""
    checksum = path.with_suffix(".sha256")
    try:
        expected = checksum.read_text().split()[0]
    except (OSError, IndexError):
        return f"no readable checksum file {checksum.name}"
    digest = files.file_digest(path, "sha256")
    if digest != expected:
        return f"SHA-256 {digest}, the checksum file says {expected}"
    return None


def _write_cache(path: pathlib.Path, fields: np.ndarray, key: dict) -> None:
    """Write the `.npy`, then its `.sha256` and `.json`, each through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)

    write = files.write_atomically
    write(path, lambda out: np.save(out, fields, allow_pickle=False))
    digest = files.file_digest(path, "sha256")
    write(path.with_suffix(".sha256"), lambda out: out.write(f"{digest}  {path.name}\n".encode()))
    text = json.dumps(key, sort_keys=True, indent=1) + "\n"
    write(path.with_suffix(".json"), lambda out: out.write(text.encode()))
