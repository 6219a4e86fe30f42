"""Evaluating a trained model against held-out data (`python -m train.evaluate` runs it).

Draws `num_samples` samples on the grid of `grid` points per axis and compares them with the run's
held-out examples (`data.holdout_range`, never seen by the generative model) on the same grid. For
MNIST the held-out examples are split in two at random (`train.mnist_classifier.holdout_split`):
a small classifier, whose features the Fréchet distance uses, trains on one half; the other is the
reference. Other data have no classifier: the metrics that need it are left out of the JSON, with
the reason under `skipped`, and all held-out examples are the reference. The reference is itself
split in two random halves a and b: the samples are compared with half b, and the real-vs-real
baselines (`_real`) compare as many examples of half a as there are samples (all of it if it has
fewer, `num_baseline`) with the same half b. So a baseline and its metric are estimated from equal
counts (the Fréchet distance's bias, and a power spectrum's noise, fall with the count), and
neither side trained the classifier. The JSON holds:

- `riesz_mmd`: energy distance in $L^2(\\mathbb{T}^d)$ (`sdeflow.metrics.riesz_mmd`);
- `sliced_wasserstein`: sliced $W_2$ of the fields;
- `power_spectrum_error` and both radially averaged spectra;
- MNIST only: `frechet_distance` of the classifier's penultimate features, with
  `frechet_distance_se`, its bootstrap standard error over the draw of the samples
  (`sdeflow.metrics.frechet_standard_error`: what another draw of as many samples would move it
  by; two models closer than about twice that are not told apart); `vendi_samples`,
  `vendi_reference`: Vendi scores (cosine kernel) of those features, of the samples and of the
  baseline's real examples (as many); `class_histogram` and
  `classifier_confidence` (mean top softmax probability) of the samples and
  `classifier_confident_fraction`: the fraction whose top probability exceeds 0.9, a proxy for
  "recognisable digits" among digit-like samples (a classifier may be confident on fields that are
  no digits at all, which the Fréchet distance shows), with its binomial standard error
  `classifier_confident_fraction_se`;
- `likelihood`: nats and bits per dimension of `likelihood.num_digits` reference examples at this
  grid (Hutchinson, probability-flow ODE), with the 8-bit dequantised bound when the data are the
  exact pixels (8-bit images on their native grid, no blur);
- `elbo`: by grid (`grid` and `elbo.grids`), bits per dimension of `elbo.num_examples` held-out
  examples as the ELBO of variational diffusion and its prior, diffusion and reconstruction terms
  (`train.elbo`), for a network trained with any loss;
- the sampler, its mean number of network evaluations and the time taken.
"""

import json
import logging
import math
import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from omegaconf import DictConfig, OmegaConf

import sdeflow

logger = logging.getLogger("train.evaluation")
CONFIDENT = 0.9  # top softmax probability above which a sample counts as a confidently classified digit


class Reference:
    """The held-out examples of a run on one grid, split as `holdout_split` says.

    **Fields:**

    - `source`: the run's data source; `holdout`: its held-out examples (raw).
    - `split`: the `HoldoutSplit` of them.
    - `fields`: the reference examples as functions on the grid (`fields_on` of the source: the
        point values of generated signed distances on that grid, not a resampling of the native
        grid's); `labels` theirs (or `None`).
    - `half_b`: half b of `fields`, which samples are compared with, and so are the examples of
        half a that `baseline` draws.
    """

    def __init__(self, run_cfg: DictConfig, grid: int):
        from .build import build_source
        from .data import as_grid
        from .mnist_classifier import holdout_split

        self.source = build_source(run_cfg.data)
        self.holdout = self.source.load("holdout")
        self.split = holdout_split(len(self.holdout), has_classifier(self.source))
        self.fields = self.source.fields_on("holdout", as_grid(grid, self.source.dim), self.split.reference)
        self.labels = None if self.holdout.labels is None else self.holdout.labels[self.split.reference]
        self.half_b = self.fields[self.split.in_reference(self.split.reference_b)]

    def baseline(self, count: int) -> np.ndarray:
        """The real side of the real-vs-real baselines beside `count` samples.

        **Arguments:**

        - `count`: the number of samples they stand beside.

        **Returns:**

        `count` examples of half a (all of it if it has fewer) drawn at random
        (`HoldoutSplit.baseline`), as functions on the grid.
        """
        return self.fields[self.split.in_reference(self.split.baseline(count))]


def has_classifier(source) -> bool:
    """Whether the metrics of the MNIST classifier apply to the data of `source`."""
    return source.name == "mnist"


def likelihoods(model, sde, parameterisation, fields: np.ndarray, cfg: DictConfig, bin_width: float | None,
                self_conditioning: bool = False) -> dict:
    """Bits per dimension of held-out fields under the probability-flow ODE (Hutchinson), for a
    model predicting `parameterisation` (an `sdeflow.parameterisation` object). A self-conditioned
    model is given zeros as its estimate of $x_0$ (an adaptive ODE solve cannot feed one back).
    Fields of quantised values with bins of `bin_width` (`AbstractSource.pixel_bin_width`) are
    uniformly dequantised first, and the bound on their discrete bits per dimension is reported
    beside the density's (`bits_per_dim_8bit_dequantised`). Both are per modelled dimension, the
    kept modes ($31^2 = 961$ on the 32-grid: the Nyquist components are not modelled), so neither is
    a figure per pixel value (1024), as the literature's and the discretised ELBO's are."""
    import equinox as eqx

    from sdeflow import likelihood, samplers

    count = min(int(cfg.likelihood.num_digits), len(fields))
    if count == 0:
        return {"skipped": "likelihood.num_digits is 0"}
    score = samplers.PreconditionedScore(model, sde, parameterisation, self_conditioning=bool(self_conditioning))
    @eqx.filter_jit
    def one(score, x, key):
        key_deq, key_probe = jr.split(key)
        if bin_width is not None:
            x = likelihood.uniform_dequantise(key_deq, x, levels=256, high=-1.0 + 255 * bin_width)  # bins of bin_width
        result = likelihood.log_likelihood(
            score, x, key_probe, num_probes=int(cfg.likelihood.num_probes),
            rtol=float(cfg.likelihood.rtol), atol=float(cfg.likelihood.atol),
        )
        return result.log_likelihood, result.stderr, result.num_steps

    values, errors, steps = [], [], []
    for i, key in enumerate(jr.split(jr.key(cfg.seed + 1), count)):
        ll, se, n = one(score, jnp.asarray(fields[i]), key)
        values.append(float(ll))
        errors.append(float(se))
        steps.append(int(n))
    shape = fields.shape[1:]
    dims = likelihood.model_dimensions(shape)
    ll = np.asarray(values)
    out = {
        "num_digits": count,
        "grid": list(shape[1:]),
        "dimensions": dims,
        "nats_per_dim": float(-ll.mean() / dims),
        "nats_per_dim_stderr": float(ll.std(ddof=1) / math.sqrt(count) / dims) if count > 1 else None,
        "bits_per_dim": float(likelihood.bits_per_dim(jnp.asarray(ll.mean()), dims)),
        "hutchinson_stderr_per_digit_nats": float(np.mean(errors)),
        "mean_ode_steps": float(np.mean(steps)),
    }
    if bin_width is not None:
        out["bits_per_dim_8bit_dequantised"] = float(likelihood.bits_per_dim(jnp.asarray(ll.mean()), dims,
                                                                             bin_width=bin_width))
    else:
        out["bits_per_dim_8bit_dequantised"] = None
        out["why_no_8bit_value"] = ("the fields are not the exact 8-bit pixels (not 8-bit images, another grid "
                                    "than theirs, or data.smoothing > 0), so no quantisation bin exists; "
                                    "bits_per_dim is that of the continuous density")
    return out


def evaluate(model, sde, run_cfg: DictConfig, cfg: DictConfig, step: int | None = None,
             on_samples: Callable[[np.ndarray], None] | None = None) -> dict:
    """All metrics of a model against its run's held-out data, as a JSON-ready dict;
    `on_samples(samples)`, if given, receives the drawn samples (on the grid they were drawn on)."""
    from sdeflow import metrics

    from . import build
    from . import mnist_classifier as clf
    from .sampling import draw, field_shape, sampler_tag

    grid = int(cfg.grid)
    started = time.perf_counter()
    # The data and the classifier first: missing or corrupt files stop the program before it samples.
    reference = Reference(run_cfg, grid)
    source = reference.source
    sampler = build.make_sampler(cfg.sampler, source.dim)
    classifier = None
    skipped = {}
    if has_classifier(source):
        classifier, info = clf.load_or_train(source, reference.holdout, reference.split, cfg.classifier)
    else:
        skipped["classifier_metrics"] = (f"no classifier for the {source.name!r} data (the Fréchet distance, "
                                         "Vendi scores and class statistics use the MNIST classifier)")
        logger.info(f"skipped: {skipped['classifier_metrics']}")
    parameterisation = build.build_parameterisation(run_cfg.loss.parameterisation)
    sampling_started = time.perf_counter()
    sample_grid = grid if cfg.get("sample_grid") is None else int(cfg.sample_grid)
    samples, evaluations = draw(model, sde, parameterisation, sampler, jr.key(cfg.seed),
                                field_shape(source.channels, source.dim, sample_grid), int(cfg.num_samples),
                                min(int(cfg.batch_size), int(cfg.num_samples)), t_end=cfg.sampler.t_end,
                                self_conditioning=build.self_conditioned(run_cfg.loss))
    sampling_seconds = time.perf_counter() - sampling_started
    if on_samples is not None:
        on_samples(samples)
    drawn_on = {}
    if sample_grid != grid:  # drawn on a finer grid: compared at `grid` through restriction (the L2 projection)
        fine = jnp.asarray(samples)
        fine_reference = jnp.asarray(Reference(run_cfg, sample_grid).half_b)
        # the spectra on the finer grid: the error over the shells the comparison grid resolves, and
        # the share of the power beyond them (the fine-scale content the comparison cannot see)
        shells, fine_power = metrics.radial_power_spectrum(fine)
        _, reference_power = metrics.radial_power_spectrum(fine_reference)
        beyond = np.asarray(shells) > metrics.resolved_shells((grid,) * source.dim)
        drawn_on = {"power_spectrum_error": float(metrics.power_spectrum_error(
                        fine, jnp.asarray(reference.half_b))),
                    "power_beyond_grid": float(np.sum(np.asarray(fine_power)[beyond]) / np.sum(fine_power)),
                    "power_beyond_grid_real": float(np.sum(np.asarray(reference_power)[beyond]) / np.sum(reference_power)),
                    "sample_value_range": [float(samples.min()), float(samples.max())]}
        samples = np.asarray(jax.vmap(lambda x: sdeflow.restrict(x, (grid,) * source.dim))(fine))
    block = int(cfg.metrics_block_size)
    real, a = reference.half_b, reference.baseline(len(samples))  # the samples and as many real examples, against half b
    if len(a) < len(samples):
        logger.info(f"the real-vs-real baselines compare {len(a)} examples (all of half a) with half b, beside "
                    f"{len(samples)} samples: read them as the baselines of {len(a)} samples")
    k, spectrum_samples = metrics.radial_power_spectrum(jnp.asarray(samples))
    _, spectrum_reference = metrics.radial_power_spectrum(jnp.asarray(real))
    key = jr.key(cfg.seed + 2)
    result = {
        "run_dir": str(cfg.run_dir),
        "step": step,
        "grid": grid,
        "sample_grid": sample_grid,
        "at_sample_grid": drawn_on,
        "data": source.name,
        "num_samples": int(cfg.num_samples),
        "num_reference": int(len(real)),
        "num_baseline": int(len(a)),
        "sampler": OmegaConf.to_container(cfg.sampler, enum_to_str=True),
        "sampler_tag": sampler_tag(cfg.sampler),
        "weights": str(cfg.weights),
        "mean_network_evaluations": float(np.mean(evaluations)),
        "sampling_seconds": sampling_seconds,
        "sample_value_range": [float(samples.min()), float(samples.max())],
        "riesz_mmd": float(metrics.riesz_mmd(samples, real, block_size=block)),
        "riesz_mmd_real": float(metrics.riesz_mmd(a, real, block_size=block)),
        "sliced_wasserstein": float(metrics.sliced_wasserstein(key, samples, real,
                                                              num_projections=int(cfg.sliced_projections))),
        "sliced_wasserstein_real": float(metrics.sliced_wasserstein(key, a, real, num_projections=int(cfg.sliced_projections))),
        "power_spectrum_error": float(metrics.power_spectrum_error(jnp.asarray(samples), jnp.asarray(real))),
        "power_spectrum_error_real": float(metrics.power_spectrum_error(jnp.asarray(a), jnp.asarray(real))),
        "power_spectrum": {
            "wavenumbers": np.asarray(k).tolist(),
            "samples": np.asarray(spectrum_samples).tolist(),
            "reference": np.asarray(spectrum_reference).tolist(),
        },
    }
    if classifier is not None:
        result.update(classifier_metrics(classifier, samples, real, a, block))
        result["classifier"] = {"dir": str(clf.classifier_folder(source, cfg.classifier)),
                                "reference_accuracy": info["reference_accuracy"]}
    bin_width = source.pixel_bin_width(reference.holdout.values, grid)
    self_conditioning = build.self_conditioned(run_cfg.loss)
    result["likelihood"] = likelihoods(model, sde, parameterisation, reference.fields, cfg, bin_width,
                                       self_conditioning)  # (the ELBO's examples: all of the reference)
    from sdeflow.losses import elbo_undefined

    from .elbo import elbo_report

    if self_conditioning:
        result["elbo"] = {"skipped": "the ELBO of a self-conditioned network is not computed"}
    elif int(cfg.elbo.num_examples) > 0 and elbo_undefined(sde):
        result["elbo"] = {"skipped": elbo_undefined(sde)}
    elif int(cfg.elbo.num_examples) > 0:

        grids = list(dict.fromkeys([grid, *cfg.elbo.grids]))
        result["elbo"] = elbo_report(model, sde, run_cfg, cfg.elbo, grids, int(cfg.seed),
                                     reference.split.reference,
                                     first=int(cfg.likelihood.num_digits))
    else:
        result["elbo"] = {"skipped": "elbo.num_examples is 0"}
    result["skipped"] = skipped
    result["seconds"] = time.perf_counter() - started
    return result


def classifier_metrics(classifier, samples: np.ndarray, real: np.ndarray, baseline: np.ndarray | None,
                       block: int) -> dict:
    """The metrics of the classifier's features and probabilities: of the samples against the
    reference `real`, and of `baseline`, as many real examples as samples and none of them in
    `real`, against it: the Fréchet distance's `_real` baseline and the reference's Vendi score
    (both depend on the count). `baseline=None` leaves the baseline out and gives `real`'s Vendi
    score. The class statistics `_real` are those of `real`."""
    from sdeflow import metrics

    from . import mnist_classifier as clf

    f_samples, f_real = clf.features(classifier, samples), clf.features(classifier, real)
    p_samples, p_real = clf.probabilities(classifier, samples), clf.probabilities(classifier, real)
    confident = float(np.mean(p_samples.max(1) > CONFIDENT))
    f_baseline = f_real if baseline is None else clf.features(classifier, baseline)
    out = {} if baseline is None else {
        "frechet_distance_real": float(metrics.frechet_distance(f_baseline, f_real, block_size=block))}
    return out | {
        "frechet_distance": float(metrics.frechet_distance(f_samples, f_real, block_size=block)),
        "frechet_distance_se": metrics.frechet_standard_error(f_samples, f_real, block_size=block),
        "vendi_samples": float(metrics.vendi_score(f_samples, block_size=block)),
        "vendi_reference": float(metrics.vendi_score(f_baseline, block_size=block)),
        "class_histogram": np.bincount(p_samples.argmax(1), minlength=10).tolist(),
        "class_histogram_real": np.bincount(p_real.argmax(1), minlength=10).tolist(),
        "classifier_confidence": float(p_samples.max(1).mean()),
        "classifier_confidence_real": float(p_real.max(1).mean()),
        "classifier_confident_fraction": confident,
        "classifier_confident_fraction_se": math.sqrt(confident * (1 - confident) / len(p_samples)),
        "classifier_confident_fraction_real": float(np.mean(p_real.max(1) > CONFIDENT)),
    }


def evaluation_config(cfg: DictConfig, run_dir: pathlib.Path) -> DictConfig:
    """The end of a run's evaluation: its `train.evaluation` (the schema of `train.evaluate`,
    composed with the run's config) for the run folder `run_dir`."""
    from .config import EvaluateConfig

    fields = OmegaConf.to_container(cfg.train.evaluation, resolve=True)
    return OmegaConf.merge(OmegaConf.structured(EvaluateConfig), fields, {"run_dir": str(run_dir)})


def shared_sample_grid(cfg: DictConfig, run_dir: pathlib.Path) -> int | None:
    """The grid of the end-of-run sample PNGs whose samples the end-of-run evaluation draws anyway
    (the same EMA weights and sampler, on a grid of `train.sample_grids`, at least as many
    samples), so that its PNG shows the evaluation's first ones (drawn with
    `train.evaluation.seed`) instead of compiling and running the sampler again; `None` if there
    is none, or if the run also draws PNGs during training (`train.sample_every`), whose series
    keeps its own keys to the end."""
    t = cfg.train
    if not t.evaluate or t.sample_every:
        return None
    eval_cfg = evaluation_config(cfg, run_dir)
    grid = int(eval_cfg.grid)
    same = (
        eval_cfg.weights == "ema"
        and eval_cfg.get("sample_grid") in (None, grid)
        and grid in [int(n) for n in t.sample_grids]
        and int(eval_cfg.num_samples) >= int(t.num_samples)
        and OmegaConf.to_container(eval_cfg.sampler, resolve=True) == OmegaConf.to_container(cfg.sampler, resolve=True)
    )
    return grid if same else None


def write_evaluation(state, sde, cfg: DictConfig, run_dir: pathlib.Path, step: int,
                     on_samples: Callable[[np.ndarray], None] | None = None) -> pathlib.Path:
    """Every metric of `train.evaluate` for the final model (the EMA one unless
    `train.evaluation.weights` is `raw`), into `<run_dir>/evaluation.json`; `on_samples` receives
    the samples it draws (see `evaluate`)."""
    from .restore import select_weights

    from .build import with_parts

    eval_cfg = evaluation_config(cfg, run_dir)
    weights = state.ema if eval_cfg.weights == "ema" else state.parts
    result = evaluate(select_weights(state, eval_cfg.weights), with_parts(sde, weights), cfg, eval_cfg, step,
                      on_samples=on_samples)
    path = run_dir / "evaluation.json"
    path.write_text(json.dumps(result, indent=1))
    logger.info(f"evaluation: {path} ({summary(result)})")
    return path


def summary(result: dict) -> str:
    """One line of an evaluation's main numbers, each beside its real-vs-real baseline."""
    parts = [f"grid {result['grid']}, {result['num_samples']} samples"]
    for key, name in (("riesz_mmd", "Riesz MMD"), ("frechet_distance", "Frechet"),
                      ("classifier_confident_fraction", "confidently classified")):
        if key in result:
            error = f" ± {result[key + '_se']:.2g}" if key + "_se" in result else ""
            parts.append(f"{name} {result[key]:.4g}{error} vs real {result[key + '_real']:.4g}")
    return ", ".join(parts)
