"""The report of the MNIST signed-distance data (`train.report.name=mnist_sdf`): samples at every
grid of `train.report.grids` against the held-out digits' signed-distance functions on that grid.

The data (`train.data.mnist_sdf`) are `scale` times the signed distance $\\phi$ to the outline of a
digit, negative inside. For every grid $n$ the report draws `num_samples` samples with the run's
sampler, computes the held-out digits' SDFs on the $n$-grid directly (`train.data.digit_sdf`: point
values of the same functions, never resampled), and writes into the run folder:

- `sdf_report.json`: per grid, for the samples and for the held-out data:
  - the classifier's metrics (`train.evaluation.classifier_metrics`: Fréchet distance, confident
    fraction, Vendi scores, class histograms) of the digit images recovered from the SDFs
    (`digit_images`: a smooth step of $-\\phi$, ink $+1$ and background $-1$ like the MNIST
    source's digits), which the classifier sees on its 32-grid (spectral restriction); the
    classifier is the project's MNIST classifier (`train.mnist_classifier`, settings
    `train.evaluation.classifier`), trained on the MNIST images of half of the held-out digits, and
    the data's numbers come from the other half, the reference, itself in two random halves a and
    b: the samples are compared with half b, and so are as many digits of half a, drawn at random,
    for the `_real` baselines (the Fréchet distance's bias depends on the number of samples, so both
    sides have the same sizes); with the classifier's accuracy on the reference's recovered images;
  - `one_shape`: the fraction of fields whose interior $\\{\\phi < 0\\}$ is one connected set on the
    torus (8-neighbour connectivity, `inside_components`), and `empty`: the fraction with no point
    inside;
  - `eikonal_residual`: the mean over the grid points and the fields of $|\\,|\\nabla \\phi| - 1|$,
    with central differences on the torus (`eikonal_residual`), where an SDF has $|\\nabla\\phi| = 1$
    away from its kinks;
- `sdf_level_sets_<n>.png`: the zero level sets (the digits' outlines, the inside filled) of held-out
  digits and of samples, side by side.
"""

import json
import logging
import pathlib
import time

import numpy as np
from jaxtyping import Float, Int
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError
from .config.report import require_generator

logger = logging.getLogger("train.report")

GENERATOR = "mnist_sdf"
EDGE = 1.0 / 64
"""The width of the smooth step $\\tanh(-\\phi / \\epsilon)$ that turns an SDF into a digit image: half a
pixel of the 32-grid."""
PLOTTED = 36
"""Fields drawn in each half of a level-set figure."""


def digit_images(values: Float[np.ndarray, "batch 1 *grid"], scale: float, edge: float = EDGE) -> Float[np.ndarray, "batch 1 *grid"]:
    """Digit images $\\tanh(-\\phi / \\epsilon)$ of fields `scale` $\\cdot\\, \\phi$: $+1$ (ink) inside,
    $-1$ (background) outside, 0 on the zero level set.

    **Arguments:**

    - `values`: the fields, `scale` times a signed distance.
    - `scale`: the data's scale.
    - `edge`: $\\epsilon$, the width of the step in units of the unit square.
    """
    return np.tanh(-np.asarray(values, np.float64) / (scale * edge)).astype(np.float32)


def inside_components(values: Float[np.ndarray, "batch 1 n m"]) -> Int[np.ndarray, " batch"]:
    """The number of connected sets of grid points with negative values, per field, on the torus.

    Points are neighbours when they differ by at most one step along each axis (8 neighbours),
    counted across the edges of the periodic grid.
    """
    from scipy import ndimage

    values = np.asarray(values)
    counts = np.empty(len(values), dtype=np.int64)
    for i, field in enumerate(values[:, 0]):
        inside = field < 0
        labels, count = ndimage.label(inside, structure=np.ones((3, 3), dtype=bool))
        parent = list(range(count + 1))

        def root(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        n, m = inside.shape
        for shift in (-1, 0, 1):  # the first row and column against the last, one step apart at most
            pairs = (
                (labels[0, :], np.roll(labels[n - 1, :], shift)),
                (labels[:, 0], np.roll(labels[:, m - 1], shift)),
            )
            for a, b in pairs:
                for x, y in zip(a[(a > 0) & (b > 0)], b[(a > 0) & (b > 0)], strict=True):
                    parent[root(int(x))] = root(int(y))
        counts[i] = len({root(label) for label in range(1, count + 1)})
    return counts


def eikonal_residual(values: Float[np.ndarray, "batch 1 n n"], scale: float) -> Float[np.ndarray, " batch"]:
    """The mean over the grid points of $|\\,|\\nabla\\phi| - 1|$ for fields `scale` $\\cdot\\,\\phi$, per
    field; the gradient by central differences on the torus ($\\phi(x + h e_i) - \\phi(x - h e_i)) / 2h$)."""
    phi = np.asarray(values, np.float64)[:, 0] / scale
    n = phi.shape[-1]
    gradient = [(np.roll(phi, -1, axis) - np.roll(phi, 1, axis)) * (n / 2.0) for axis in (1, 2)]
    norm = np.sqrt(gradient[0] ** 2 + gradient[1] ** 2)
    return np.mean(np.abs(norm - 1.0), axis=(1, 2))


def shape_metrics(values: np.ndarray, scale: float) -> dict:
    """`one_shape`, `empty`, `mean_components` and `eikonal_residual` of a set of fields (see the module)."""
    components = inside_components(values)
    return {
        "one_shape": float(np.mean(components == 1)),
        "empty": float(np.mean(components == 0)),
        "mean_components": float(np.mean(components)),
        "eikonal_residual": float(np.mean(eikonal_residual(values, scale))),
    }


def draw_level_sets(axis, fields: np.ndarray, title: str, columns: int = 6) -> None:
    """Draw the zero level sets of fields `(B, 1, n, n)` in one axes, `columns` per row: the inside
    filled grey, the outline black; $x_1$ down, $x_2$ across, as the sample images."""
    from matplotlib.patches import Rectangle

    n = fields.shape[-1]
    coordinates = np.arange(n + 1) / n  # one period and its first point again: outlines close across the edge
    for i, field in enumerate(fields[:, 0]):
        row, column = divmod(i, columns)
        closed = np.pad(field, ((0, 1), (0, 1)), mode="wrap")
        x2, x1 = np.meshgrid(coordinates + 1.1 * column, coordinates + 1.1 * row)
        if closed.min() < 0 < closed.max():
            axis.contourf(x2, x1, closed, levels=[closed.min(), 0.0], colors=["0.75"])
            axis.contour(x2, x1, closed, levels=[0.0], colors="k", linewidths=0.7)
        axis.add_patch(Rectangle((1.1 * column, 1.1 * row), 1, 1, fill=False, lw=0.3, ec="0.6"))
    rows = -(-len(fields) // columns)
    axis.set(xlim=(-0.05, 1.1 * columns), ylim=(1.1 * rows, -0.05), aspect="equal", title=title)
    axis.axis("off")


def check_sdf_report(cfg: DictConfig) -> None:
    """The run's data must be the generated MNIST SDFs, with a held-out part and report grids that
    divide their fine grid."""
    from .data import sdf

    require_generator(cfg.data, "mnist_sdf", GENERATOR)
    if cfg.data.holdout_range is None:
        raise ConfigError("data.holdout_range: the mnist_sdf report compares samples with held-out digits; set it.")
    fine = sdf.PIXEL_GRID * int(sdf_params(cfg)["upsample"])
    bad = [int(n) for n in cfg.train.report.grids if fine % int(n)]
    if bad:
        raise ConfigError(f"train.report.grids: {bad} must divide the fine grid {fine} of the SDFs "
                          "(32 * data.params.upsample), got " + str(list(cfg.train.report.grids)))


def sdf_params(cfg: DictConfig) -> dict:
    """The `mnist_sdf` generator's parameters of the run, with its defaults where unset."""
    import inspect

    from .data import sdf

    defaults = {name: p.default for name, p in inspect.signature(sdf.mnist_sdf).parameters.items()
                if p.kind == p.KEYWORD_ONLY}
    params = OmegaConf.to_container(cfg.data.params, resolve=True)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ConfigError(f"data.params: the mnist_sdf generator has no parameter(s) {unknown}; "
                          f"its parameters are {sorted(defaults)}.")
    return {**defaults, **params}


def write_sdf_report(state, sde, cfg: DictConfig, run_dir: pathlib.Path, step: int) -> list[pathlib.Path]:
    """Write `sdf_report.json` and the `sdf_level_sets_<n>.png` for the EMA network of `state`."""
    import jax.random as jr

    from . import build
    from . import mnist_classifier as clf
    from .data import MnistSource, sdf
    from .evaluation import classifier_metrics
    from .progress import plt
    from .distributed import local_copy
    from .sampling import draw, field_shape

    started = time.perf_counter()
    r = cfg.train.report
    params = sdf_params(cfg)
    scale = float(params["scale"])
    model = local_copy(state.ema["network"])
    parameterisation = build.build_parameterisation(cfg.loss.parameterisation)
    sampler = build.build_sampler(cfg)
    # The held-out digits: MNIST images for the classifier, their SDFs on the fine grid for the references.
    start = int(params["start"])
    train = None if cfg.data.train_range is None else [start + int(v) for v in cfg.data.train_range]
    mnist = MnistSource(split=params["split"], train_range=train,
                        holdout_range=[start + int(v) for v in cfg.data.holdout_range], smoothing=0.6,
                        root=params["root"])
    holdout = mnist.load("holdout")
    split = clf.holdout_split(len(holdout), True)
    classifier, info = clf.load_or_train(mnist, holdout, split, cfg.train.evaluation.classifier)
    fine_grid = sdf.PIXEL_GRID * int(params["upsample"])
    reference = sdf.digit_sdf(holdout.values[split.reference], fine_grid, int(params["upsample"]), scale)
    labels = holdout.labels[split.reference]
    half_b = split.in_reference(split.reference_b)
    result = {"step": step, "scale": scale, "edge": EDGE, "sampler": OmegaConf.to_container(cfg.sampler, enum_to_str=True),
              "classifier": {"dir": str(clf.classifier_folder(mnist, cfg.train.evaluation.classifier)),
                             "accuracy_on_mnist_images": info["reference_accuracy"]},
              "num_reference": int(len(reference)), "grids": {}}
    paths = []
    key = jr.key(cfg.train.seed + 2)
    for n in (int(g) for g in r.grids):
        grid_started = time.perf_counter()
        data = reference[:, :, :: fine_grid // n, :: fine_grid // n]
        samples, evaluations = draw(model, sde, parameterisation, sampler, jr.fold_in(key, n),
                                    field_shape(1, 2, n), int(r.num_samples), min(int(r.batch_size), int(r.num_samples)),
                                    t_end=cfg.sampler.t_end, self_conditioning=build.self_conditioned(cfg.loss))
        sampling_seconds = time.perf_counter() - grid_started
        images = digit_images(data, scale)
        # the samples and as many real digits (of half a, drawn at random) against half b
        baseline = split.in_reference(split.baseline(len(samples)))
        metrics = classifier_metrics(classifier, digit_images(samples, scale), images[half_b], images[baseline],
                                     int(cfg.train.evaluation.metrics_block_size))
        accuracy = float(np.mean(clf.probabilities(classifier, images).argmax(1) == labels))
        entry = {
            "num_samples": int(len(samples)),
            "network_evaluations": float(np.mean(evaluations)),
            "sampling_seconds": sampling_seconds,
            "sample_value_range": [float(samples.min()), float(samples.max())],
            "samples": shape_metrics(samples, scale),
            "data": shape_metrics(data, scale),
            "classifier_accuracy_real": accuracy,
            **metrics,
        }
        figure, axes = plt.subplots(1, 2, figsize=(12, 6.4))
        draw_level_sets(axes[0], data[:PLOTTED], f"held-out digits, SDF on the {n}² grid")
        draw_level_sets(axes[1], samples[:PLOTTED], f"samples on the {n}² grid, step {step}")
        figure.suptitle("zero level sets (inside grey)")
        figure.tight_layout()
        png = run_dir / f"sdf_level_sets_{n}.png"
        figure.savefig(png, dpi=110)
        plt.close(figure)
        paths.append(png)
        entry["seconds"] = time.perf_counter() - grid_started
        result["grids"][str(n)] = entry
        logger.info(
            f"mnist_sdf report, grid {n}: confident {entry['classifier_confident_fraction']:.3f} "
            f"(data {entry['classifier_confident_fraction_real']:.3f}), Frechet {entry['frechet_distance']:.4g} "
            f"(data halves {entry['frechet_distance_real']:.4g}), one shape {entry['samples']['one_shape']:.3f} "
            f"(data {entry['data']['one_shape']:.3f}), eikonal residual {entry['samples']['eikonal_residual']:.3f} "
            f"(data {entry['data']['eikonal_residual']:.3f}), {entry['seconds']:.0f} s"
        )
    result["seconds"] = time.perf_counter() - started
    path = run_dir / "sdf_report.json"
    path.write_text(json.dumps(result, indent=1))
    logger.info(f"mnist_sdf report: {path} ({result['seconds']:.1f} s)")
    return [path, *paths]
