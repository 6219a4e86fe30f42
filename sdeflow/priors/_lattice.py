"""Sums of a spectrum over the integer lattice $\\mathbb{Z}^d$: traces and normalising constants."""

import math
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._base import check_dim


# Half-widths of the box summed exactly; beyond it a radial integral estimates the tail.
_BOX = {1: 4096, 2: 256, 3: 40}


def _sphere_area(dim: int, r: np.ndarray) -> np.ndarray:
    return {1: 2.0 * np.ones_like(r), 2: 2.0 * math.pi * r, 3: 4.0 * math.pi * r**2}[dim]


def _ball_radius(dim: int, volume: float) -> float:
    return {1: volume / 2.0, 2: math.sqrt(volume / math.pi), 3: (3.0 * volume / (4.0 * math.pi)) ** (1 / 3)}[
        dim
    ]


def _radial_tail(profile: Callable[[np.ndarray], np.ndarray], dim: int, radius: float, decay: float) -> float:
    """$\\int_{|k| > R} f(|k|^2) dk$ for a profile decaying like $|k|^{-decay}$, decay > dim."""
    r_max = radius * 1e6
    u = np.linspace(0.0, math.log(r_max / radius), 20001)
    r = radius * np.exp(u)
    integrand = profile(r**2) * _sphere_area(dim, r) * r  # dr = r du
    body = float(np.sum((integrand[1:] + integrand[:-1]) * np.diff(u)) / 2)
    # Beyond r_max the profile is a pure power: integrate it in closed form.
    far = float(profile(np.array([r_max**2]))[0] * _sphere_area(dim, np.array([r_max]))[0] * r_max) / (
        decay - dim
    )
    return body + far


def radial_lattice_sum(
    profile: Callable[[np.ndarray], np.ndarray], dim: int, decay: float, *, exclude_zero: bool = False
) -> float:
    """$\\sum_{k \\in \\mathbb{Z}^d} f(|k|^2)$ in float64 for a radial profile $f$ (NumPy in, NumPy out).

    The box $|k_i| \\le K$ is summed exactly and the remainder estimated by the integral over the
    outside of the ball of equal volume; relative error below $10^{-6}$ for the families here.

    **Arguments:**

    - `profile`: $f$ as a NumPy function of $|k|^2$.
    - `dim`: the dimension $d$.
    - `decay`: the exponent $p$ of the power law $f(|k|^2) \\sim |k|^{-p}$ at infinity ($p > d$).
    - `exclude_zero`: leave $k = 0$ out of the sum.

    **Returns:**

    The sum, as a Python float.
    """
    dim = check_dim(dim)
    if not decay > dim:
        raise ValueError(f"`decay` must exceed `dim` = {dim} for the sum to converge, got {decay}.")
    box = _BOX[dim]
    k = np.arange(-box, box + 1, dtype=np.float64)
    k2 = sum(np.meshgrid(*([k**2] * dim), indexing="ij", sparse=True))
    values = profile(np.where(k2 == 0, 1.0, k2) if exclude_zero else k2)
    if exclude_zero:
        values = np.where(k2 == 0, 0.0, values)
    total = float(np.sum(values))
    return total + _radial_tail(profile, dim, _ball_radius(dim, float((2 * box + 1) ** dim)), decay)


def lattice_trace(sqrt_spectrum: Callable[..., Array], dim: int) -> Float[Array, ""]:
    """$\\sum_{k \\in \\mathbb{Z}^d} \\lambda_k$ for any spectrum given by $\\sqrt{\\lambda_k}$ (in JAX).

    Used where no closed normalisation exists (combined priors). The box is summed exactly; the tail
    is integrated along the first axis, which is exact for spectra that are radial outside the box.

    **Arguments:**

    - `sqrt_spectrum`: maps a tuple of broadcastable integer frequency arrays to $\\sqrt{\\lambda_k}$.
    - `dim`: the dimension $d$.

    **Returns:**

    The trace, as a 0-d array (differentiable in the spectrum's parameters). The power-law decay of
    the far tail is read off the spectrum itself.
    """
    dim = check_dim(dim)
    box = {1: 4096, 2: 128, 3: 24}[dim]
    k = jnp.arange(-box, box + 1)
    ks = tuple(k.reshape([-1 if i == j else 1 for j in range(dim)]) for i in range(dim))
    total = jnp.sum(sqrt_spectrum(ks) ** 2 * jnp.ones((2 * box + 1,) * dim))
    radius = _ball_radius(dim, float((2 * box + 1) ** dim))
    r_max = radius * 1e6
    u = np.linspace(0.0, math.log(r_max / radius), 4001)
    r = radius * np.exp(u)
    ks_r = tuple(jnp.asarray(r if i == 0 else np.zeros_like(r)) for i in range(dim))
    lam = sqrt_spectrum(ks_r) ** 2
    integrand = lam * jnp.asarray(_sphere_area(dim, r) * r)
    body = jnp.sum((integrand[1:] + integrand[:-1]) * jnp.asarray(np.diff(u))) / 2
    # lambda ~ r^(-p) far out: p from the last two radii; the integrand then decays like r^(d-p).
    decay = jnp.log(lam[-2] / lam[-1]) / (u[-1] - u[-2])
    far = integrand[-1] / (decay - dim)
    return total + body + far
