"""The report of the `reaction_diffusion` experiment (`train.report.name=reaction_diffusion`):
samples of the network at several grids against held-out simulated fields.

The data are FitzHugh–Nagumo snapshots (`train.data.reaction_diffusion_fields`) simulated on one
native grid (128²). At every grid $n$ of `train.report.grids` the network draws samples with the
run's sampler, and they are compared with the held-out fields on the same grid: restricted
spectrally when $n$ is coarser than the native grid, interpolated (zero-padded) when finer, so at
256² the comparison holds on the bands both grids resolve. Per channel:

- the radially averaged power spectrum $P(\\kappa)$, the mean of $|\\hat u_k|^2$ over the modes of
  the shell $\\mathrm{round}(|k|) = \\kappa$ (coefficients with `norm="forward"`), and its relative
  error $|P_{\\text{samples}}(\\kappa) / P_{\\text{data}}(\\kappa) - 1|$ per shell (band) up to the
  highest shell resolved on the grid and held by the data, its mean over those shells and over the
  shells the training grid resolves, and the fraction of the power beyond the latter;
- the pointwise mean and variance (over the fields, averaged over the points: the fields are
  stationary) and the correlation of the two channels at the same point.

Beside each figure, the same numbers between two disjoint halves of the held-out fields, of the
samples' count where the data allow, say how far apart two finite sets of the same law are.
Files written into the run folder: `reaction_diffusion.json`, `reaction_diffusion_spectra.png`
(spectra and relative errors per band) and `reaction_diffusion_<n>.png` (samples over held-out
fields, both channels).
"""

import json
import logging
import pathlib
import time

import numpy as np
from jaxtyping import Float
from omegaconf import DictConfig

from .config import ConfigError
from .config.report import require_generator

logger = logging.getLogger("train.report")

GENERATOR = "fitzhugh_nagumo"


def check_reaction_diffusion_report(cfg: DictConfig) -> None:
    """The run's data must be the generated reaction–diffusion fields on a square 2D grid."""
    require_generator(cfg.data, "reaction_diffusion", GENERATOR)
    native = cfg.data.native_grid
    if isinstance(native, int) or len(native) != 2 or native[0] != native[1]:
        raise ConfigError(f"data.native_grid: the reaction_diffusion report's spectra need a square 2D grid, got "
                          f"{native if isinstance(native, int) else list(native)}.")
    if cfg.data.holdout_range is None or cfg.data.holdout_range[1] - cfg.data.holdout_range[0] < 4:
        raise ConfigError(f"data.holdout_range: the reaction_diffusion report compares with at least 4 held-out "
                          f"fields, got {cfg.data.holdout_range}.")
    counts = list(cfg.train.report.grid_samples)
    if counts and len(counts) != len(cfg.train.report.grids):
        raise ConfigError(f"train.report.grid_samples: one count per grid of train.report.grids "
                          f"{list(cfg.train.report.grids)}, got {counts}.")


def shell_power(fields: Float[np.ndarray, "n c a b"]) -> Float[np.ndarray, "c K"]:
    """The radially averaged power spectrum of each channel of a set of 2D fields.

    $P_c(\\kappa)$ is the mean over the fields and over the modes $k$ of the shell
    $\\mathrm{round}(|k|) = \\kappa$ (all integer modes of the grid, $\\pm k$ both) of
    $|\\hat u_{c,k}|^2$, with $\\hat u_k = \\frac1N \\sum_j u(x_j) e^{-2\\pi i k \\cdot x_j}$.

    **Arguments:**

    - `fields`: float array `(n, c, n_1, n_2)`.

    **Returns:**

    A float64 array `(c, K)` over the shells $\\kappa = 0, \\ldots, K - 1$ that the grid reaches
    ($K = \\mathrm{round}(\\sqrt{(n_1/2)^2 + (n_2/2)^2}) + 1$).
    """
    fields = np.asarray(fields, np.float64)
    if fields.ndim != 4:
        raise ValueError(f"`fields` must have shape (n, c, n_1, n_2), got {fields.shape}.")
    grid = fields.shape[2:]
    power = np.mean(np.abs(np.fft.fft2(fields, norm="forward")) ** 2, axis=0)  # (c, n_1, n_2)
    k1, k2 = np.meshgrid(*(np.fft.fftfreq(n, 1.0 / n) for n in grid), indexing="ij")
    shell = np.rint(np.sqrt(k1**2 + k2**2)).astype(int).ravel()
    counts = np.bincount(shell)
    sums = np.stack([np.bincount(shell, weights=p.ravel(), minlength=len(counts)) for p in power])
    return sums / np.maximum(counts, 1)


def field_statistics(fields: Float[np.ndarray, "n c *grid"]) -> dict:
    """The pointwise mean and variance of each channel, averaged over the points, and the
    correlation of the first two channels at the same point.

    The variance is the unbiased one over the fields at each point, $\\frac{1}{n-1}\\sum (u - \\bar u)^2$;
    the correlation is $\\overline{\\mathrm{cov}}(u_0, u_1) / \\sqrt{\\overline{\\mathrm{var}}\\,u_0\\, \\overline{\\mathrm{var}}\\,u_1}$
    with the covariance and variances at each point averaged over the points.

    **Arguments:**

    - `fields`: float array `(n, c, *grid)`, $n \\ge 2$, $c \\ge 2$.

    **Returns:**

    `{"mean": [c floats], "variance": [c floats], "correlation": float}`.
    """
    fields = np.asarray(fields, np.float64)
    if fields.ndim < 3 or fields.shape[0] < 2 or fields.shape[1] < 2:
        raise ValueError(f"`fields` must have shape (n, c, *grid) with n >= 2 and c >= 2, got {fields.shape}.")
    mean = fields.mean(axis=0)
    centred = fields - mean
    covariance = np.einsum("ia...,ib...->ab...", centred, centred) / (len(fields) - 1)
    covariance = covariance.reshape(covariance.shape[0], covariance.shape[1], -1).mean(axis=-1)
    variance = np.diag(covariance)
    return {
        "mean": mean.reshape(mean.shape[0], -1).mean(axis=-1).tolist(),
        "variance": variance.tolist(),
        "correlation": float(covariance[0, 1] / np.sqrt(variance[0] * variance[1])),
    }


def compare(samples: np.ndarray, reference: np.ndarray, top: int, band: int | None = None) -> dict:
    """The spectra of `samples` and `reference` per channel on the shells 1..`top`, their relative
    error per shell (and its mean over all of them and over the shells 1..`band`), the fraction of
    each set's power beyond `band`, and both sets' `field_statistics` with their differences."""
    if top < 1:
        raise ValueError(f"no shell to compare: top={top}.")
    band = top if band is None else min(int(band), top)
    full_s, full_r = shell_power(samples), shell_power(reference)
    ps, pr = full_s[:, 1 : top + 1], full_r[:, 1 : top + 1]
    error = np.abs(ps / pr - 1)
    s, r = field_statistics(samples), field_statistics(reference)

    def beyond(power, grid):  # power (summed over the shells' modes) beyond `band`, as a fraction
        k1, k2 = np.meshgrid(*(np.fft.fftfreq(n, 1.0 / n) for n in grid), indexing="ij")
        modes = np.bincount(np.rint(np.sqrt(k1**2 + k2**2)).astype(int).ravel())
        total = power * modes[: power.shape[1]]
        return (total[:, band + 1 :].sum(axis=1) / total[:, 1:].sum(axis=1)).tolist()

    return {
        "shells": list(range(1, top + 1)),
        "power": ps.tolist(),
        "reference_power": pr.tolist(),
        "relative_error": error.tolist(),
        "mean_relative_error": error.mean(axis=1).tolist(),
        "band": band,
        "mean_relative_error_in_band": error[:, :band].mean(axis=1).tolist(),
        "power_fraction_beyond_band": beyond(full_s, samples.shape[2:]),
        "reference_power_fraction_beyond_band": beyond(full_r, reference.shape[2:]),
        "statistics": s,
        "reference_statistics": r,
        "mean_difference": (np.subtract(s["mean"], r["mean"])).tolist(),
        "variance_relative_error": (np.divide(s["variance"], r["variance"]) - 1).tolist(),
        "correlation_difference": s["correlation"] - r["correlation"],
    }


def data_band(native_grid) -> int:
    """The highest shell the generated fields hold: the 2/3 rule keeps $|k_i| < n_i/3$, so every
    shell $\\kappa \\le \\lfloor (\\min_i n_i - 1) / 3 \\rfloor$ is complete."""
    return (min(int(n) for n in native_grid) - 1) // 3


def write_reaction_diffusion_report(state, sde, cfg: DictConfig, run_dir: pathlib.Path, step: int) -> list[pathlib.Path]:
    """Write `reaction_diffusion.json` and its PNGs for the EMA network of `state`."""
    import jax.random as jr

    from sdeflow.metrics.power_spectrum import resolved_shells

    from . import build
    from .distributed import local_copy
    from .sampling import draw, field_shape

    started = time.perf_counter()
    r = cfg.train.report
    model = local_copy(state.ema["network"])
    parameterisation = build.build_parameterisation(cfg.loss.parameterisation)
    sampler = build.build_sampler(cfg)
    source = build.build_source(cfg.data)
    channels, dim = source.channels, source.dim
    holdout = source.load("holdout").values
    half = len(holdout) // 2
    band = data_band(source.native_grid)
    trained = resolved_shells((int(cfg.train.levels[0].grid if cfg.train.levels else r.grids[0]),) * dim)
    counts = list(r.grid_samples) or [int(r.num_samples)] * len(r.grids)
    key = jr.key(cfg.train.seed + 1)
    result = {"step": step, "channels": ["u", "v"][:channels], "heldout_fields": len(holdout),
              "native_grid": list(source.native_grid), "data_band": band, "grids": {}}
    figures = {}
    for n, count in zip(r.grids, counts):
        t0 = time.perf_counter()
        samples, evaluations = draw(model, sde, parameterisation, sampler, jr.fold_in(key, n),
                                    field_shape(channels, dim, n), int(count), min(int(r.batch_size), int(count)),
                                    t_end=cfg.sampler.t_end, self_conditioning=build.self_conditioned(cfg.loss))
        reference = source.converter(n)(holdout)
        top = min(resolved_shells((int(n),) * dim), band)
        entry = compare(samples, reference, top, trained)
        m = min(int(count), half)
        baseline = compare(reference[:m], reference[half:], top, trained)
        entry["baseline"] = {k: baseline[k] for k in ("mean_relative_error", "mean_relative_error_in_band", "relative_error",
                                                      "mean_difference", "variance_relative_error", "correlation_difference")}
        entry["baseline"]["counts"] = [m, len(holdout) - half]
        entry.update(num_samples=int(count), network_evaluations=float(np.mean(evaluations)),
                     seconds=time.perf_counter() - t0)
        result["grids"][str(n)] = entry
        figures[n] = (samples, reference)
        logger.info(f"reaction_diffusion report, grid {n}: spectrum error per shell, mean over shells 1..{trained} "
                    f"{np.round(entry['mean_relative_error_in_band'], 3).tolist()} (held-out halves "
                    f"{np.round(baseline['mean_relative_error_in_band'], 3).tolist()}), over 1..{top} "
                    f"{np.round(entry['mean_relative_error'], 3).tolist()}, variance error "
                    f"{np.round(entry['variance_relative_error'], 3).tolist()}, correlation "
                    f"{entry['statistics']['correlation']:.3f} vs {entry['reference_statistics']['correlation']:.3f} "
                    f"({count} samples, {entry['seconds']:.1f} s)")
    result["seconds"] = time.perf_counter() - started
    path = run_dir / "reaction_diffusion.json"
    path.write_text(json.dumps(result, indent=1))
    paths = [path, _plot_spectra(result, run_dir / "reaction_diffusion_spectra.png", step)]
    for n, (samples, reference) in figures.items():
        paths.append(_plot_fields(samples, reference, run_dir / f"reaction_diffusion_{n}.png", n))
    logger.info(f"reaction_diffusion report: {path} and {len(paths) - 1} PNGs ({result['seconds']:.1f} s)")
    return paths


def _plot_spectra(result: dict, path: pathlib.Path, step: int) -> pathlib.Path:
    from .progress import plt

    names = result["channels"]
    figure, axes = plt.subplots(2, len(names), figsize=(5.5 * len(names), 7.5), squeeze=False)
    grids = list(result["grids"])
    finest = max(grids, key=lambda n: len(result["grids"][n]["shells"]))
    reference = result["grids"][finest]
    for c, name in enumerate(names):
        top, bottom = axes[0, c], axes[1, c]
        top.plot(reference["shells"], reference["reference_power"][c], color="k", lw=2.5, alpha=0.5,
                 label=f"held-out ({result['native_grid'][0]}²)")
        for n in grids:
            g = result["grids"][n]
            top.plot(g["shells"], g["power"][c], lw=1.2, label=f"samples {n}² ({g['num_samples']})")
            bottom.plot(g["shells"], g["relative_error"][c], lw=1.2, label=f"{n}²")
            bottom.plot(g["shells"], g["baseline"]["relative_error"][c], lw=0.8, ls=":", color=bottom.lines[-1].get_color())
        top.set(xscale="log", yscale="log", xlabel="shell |k|", ylabel="mean |û_k|² in the shell",
                title=f"{name}: radially averaged power spectrum")
        bottom.set(xscale="log", yscale="log", xlabel="shell |k|", ylabel="|P_samples / P_data - 1|",
                   title=f"{name}: relative error per band (dotted: held-out halves)")
        for axis in (top, bottom):
            axis.grid(True, which="both", alpha=0.3)
            axis.legend(fontsize=7)
    figure.suptitle(f"reaction_diffusion, step {step}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _plot_fields(samples: np.ndarray, reference: np.ndarray, path: pathlib.Path, n: int, count: int = 6) -> pathlib.Path:
    from .progress import plt

    count = min(count, len(samples), len(reference))
    rows = [("u sample", samples, 0), ("u held-out", reference, 0), ("v sample", samples, 1), ("v held-out", reference, 1)]
    figure, axes = plt.subplots(len(rows), count, figsize=(1.9 * count, 1.9 * len(rows)), squeeze=False)
    for i, (label, fields, c) in enumerate(rows):
        low, high = np.percentile(reference[:, c], [0.5, 99.5])
        for j in range(count):
            axes[i, j].imshow(fields[j, c], cmap="RdBu_r", vmin=low, vmax=high, interpolation="nearest")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[i, 0].set_ylabel(label, fontsize=9)
    figure.suptitle(f"{n}²: samples and held-out fields (same colour scale per channel)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
