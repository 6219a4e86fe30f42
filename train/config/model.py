"""Schemas of the `model` group: the score network, built by `hydra.utils.instantiate`.

The program passes `in_channels`, `out_channels` and `dim` (from the data) and the key itself; every
other argument of the network's constructor is a field here. The constructor checks the values.
"""

import dataclasses
from typing import Optional

from .errors import Choice


class Norm(Choice):
    """Normalisation in the blocks (never BatchNorm: a score network carries no batch statistics)."""

    group = "group"


class Coordinates(Choice):
    """Coordinate channels appended to the input."""

    periodic = "periodic"  # cos, sin 2 pi x_i: band-limited, the same function on every grid
    linear = "linear"  # x_i


class Method(Choice):
    """The spectral convolution's implementation."""

    auto = "auto"
    dft = "dft"  # truncated-DFT matmuls
    fft = "fft"  # rfftn


@dataclasses.dataclass
class FNOConfig:
    """Fourier neural operator (`nets.FNO`): the same weights act on every grid of at least
    `2 * modes + 1` points per axis."""

    _target_: str = "nets.FNO"  # the class hydra.utils.instantiate builds
    width: int = 32  # hidden channels of every Fourier block
    modes: int = 12  # Fourier modes kept per axis: |k_i| <= modes (needs grid >= 2 * modes + 1)
    depth: int = 4  # number of Fourier blocks (spectral conv + pointwise linear + time, norm, GELU)
    projection: int = 128  # hidden channels of the pointwise two-layer projection to the output
    time_features: int = 32  # number of sinusoidal features of t (even)
    time_dim: int = 64  # size of the time-embedding MLP, injected in every block
    time_scale: float = 1000.0  # t is multiplied by this before the sinusoids (t lies in [t0, 1])
    norm: Optional[Norm] = Norm.group  # normalisation in the blocks: group (GroupNorm) or null (none)
    groups: int = 8  # GroupNorm groups (must divide width)
    coordinates: Optional[Coordinates] = Coordinates.periodic  # coordinate channels: periodic | linear | null
    method: Method = Method.auto  # spectral conv implementation: auto | dft | fft
    local: bool = False  # add a learned finite-difference stencil to every block (a differential operator on every grid)
    fourier_features: list[int] = dataclasses.field(default_factory=list)  # exponents k of sin/cos(2^k pi u) channels of the input's values (variational diffusion); empty: none
    oversample: float = 1.0  # GroupNorm and GELU evaluated on a grid this many times finer, then band-limited back (>= 1; 1: on the grid; 2 removes the aliasing that makes outputs depend on the grid)
    clip_modes: bool = False  # on grids too coarse for the modes, keep the modes they hold; false: such grids are refused


@dataclasses.dataclass
class UNOConfig:
    """U-shaped neural operator (`nets.UNO`): levels are fractions of the input grid, resolution
    changes spectrally."""

    _target_: str = "nets.UNO"  # the class hydra.utils.instantiate builds
    width: int = 32  # base channel count (times the level's multiplier)
    levels: list[float] = dataclasses.field(default_factory=lambda: [1.0, 0.5, 0.25, 0.5, 1.0])  # grid fraction of each level; first and last 1
    multipliers: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 4, 2, 1])  # channel multiplier of each level (as many as levels)
    modes: int = 12  # modes at fraction 1; block i keeps floor(modes * min(f_(i-1), f_i)) per axis
    projection: int = 128  # hidden channels of the pointwise two-layer projection to the output
    time_features: int = 32  # number of sinusoidal features of t (even)
    time_dim: int = 64  # size of the time-embedding MLP, injected in every block
    time_scale: float = 1000.0  # t is multiplied by this before the sinusoids
    norm: Optional[Norm] = Norm.group  # normalisation in the blocks: group (GroupNorm) or null (none)
    groups: int = 8  # GroupNorm groups (must divide every level's channel count)
    coordinates: Optional[Coordinates] = Coordinates.periodic  # coordinate channels: periodic | linear | null
    method: Method = Method.auto  # spectral conv implementation: auto | dft | fft
    local: bool = False  # add a learned finite-difference stencil to every block (a differential operator on every grid)
    fourier_features: list[int] = dataclasses.field(default_factory=list)  # exponents k of sin/cos(2^k pi u) channels of the input's values (variational diffusion); empty: none
    oversample: float = 1.0  # GroupNorm and GELU evaluated on a grid this many times finer, then band-limited back (>= 1; 1: on the grid; 2 removes the aliasing that makes outputs depend on the grid)
    reference_grid: Optional[int] = None  # inner levels (fraction < 1) take their fraction of this grid size on every input grid (the same frequencies at every resolution); null: of the input grid
    clip_modes: bool = False  # on grids too coarse for a block's modes, keep the modes they hold (a first level at 16 for modes 12); false: such grids are refused


@dataclasses.dataclass
class UNetConfig:
    """DDPM-style UNet (`nets.UNet`), the fixed-resolution baseline: grid sizes divisible by
    `2^(len(multipliers) - 1)`."""

    _target_: str = "nets.UNet"  # the class hydra.utils.instantiate builds
    channels: int = 32  # base channel count (times the level's multiplier)
    multipliers: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 2])  # channel multiplier per level; each level after the first halves the grid
    blocks: int = 1  # residual blocks per level (the decoder has one more)
    attention_levels: list[int] = dataclasses.field(default_factory=lambda: [2])  # level indices with self-attention (cost ~ n^(2d))
    heads: int = 1  # attention heads (must divide the channels of those levels)
    groups: int = 8  # GroupNorm groups (must divide every level's channel count)
    time_features: int = 32  # number of sinusoidal features of t (even)
    time_dim: int = 128  # size of the time-embedding MLP, injected in every residual block
    time_scale: float = 1000.0  # t is multiplied by this before the sinusoids
    coordinates: Optional[Coordinates] = None  # coordinate channels: null (shift-equivariant) | periodic | linear


MODELS = {"fno": FNOConfig, "uno": UNOConfig, "unet": UNetConfig}
"""The options of the `model` group."""
