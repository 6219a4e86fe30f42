"""Evaluating a trained model against held-out data (`python -m train.evaluate` runs it).

Draws `num_samples` samples on the `grid` x `grid` grid with the sampler of `configs/evaluate.yaml`
and compares them with held-out real digits on the same grid. The run's `data.holdout_range` (never
seen by the generative model) is split in two halves (`train.classifier.classifier_split`): the
Fréchet classifier trains on the first, the metrics compare with the second ("reference"). The JSON
holds:

- `riesz_mmd`: energy distance in $L^2(\\mathbb{T}^2)$ (`sdeflow.metrics.riesz_mmd`), and
  `riesz_mmd_real`: the same between the two real halves (the noise floor of the statistic);
- `sliced_wasserstein`: sliced $W_2$ of the fields;
- `frechet_distance`: of the classifier's penultimate features, and `frechet_distance_real`
  between the two real halves (how far a perfect model would be, with these sample sizes);
- `vendi_samples`, `vendi_reference`: Vendi scores (cosine kernel) of the classifier features;
- `power_spectrum_error` and both radially averaged spectra;
- `class_histogram` and `classifier_confidence` (mean top softmax probability) of the samples
  (`class_histogram_real`: the classes the classifier gives the reference digits), and
  `classifier_confident_fraction`: the fraction whose top probability exceeds 0.9, a proxy for
  "recognisable digits" among digit-like samples (`_real`: the same on the reference digits); a
  classifier may be confident on fields that are no digits at all, which the Fréchet distance shows;
- `likelihood`: nats and bits per dimension of `likelihood.num_digits` reference digits at this
  grid (Hutchinson, probability-flow ODE), with the 8-bit dequantised bound when the data are the
  exact pixels (grid 32, no smoothing);
- the sampler, its mean number of network evaluations and the time taken.
"""

import json
import logging
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from omegaconf import DictConfig, OmegaConf


logger = logging.getLogger("train.evaluation")
CONFIDENT = 0.9  # top softmax probability above which a sample counts as a confidently classified digit


def reference_fields(run_cfg: DictConfig, grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The held-out digits of a run as fields on `grid`: `(reference, labels, other_half, other_labels)`,
    the reference half and the classifier's half of `data.holdout_range`."""
    from .mnist_classifier import classifier_split
    from .data import images_to_functions, load_mnist

    d = run_cfg.data
    classifier_range, reference_range = classifier_split(d.holdout_range)
    kwargs = dict(root=d.root, download_missing=d.download)
    reference = load_mnist(d.split, reference_range, **kwargs)
    other = load_mnist(d.split, classifier_range, **kwargs)
    to_fields = lambda images: images_to_functions(images, grid, float(d.smoothing))  # noqa: E731
    return to_fields(reference.images), reference.labels, to_fields(other.images), other.labels


def classifier_for(run_cfg: DictConfig, cfg: DictConfig):
    """The run's Fréchet classifier: loaded from `classifier.dir` (default folder per holdout and
    blur), trained and saved there first if missing."""
    from . import mnist_classifier as clf

    folder = pathlib.Path(cfg.classifier.dir) if cfg.classifier.dir else clf.default_folder(run_cfg.data)
    try:
        model, info = clf.load(folder)
    except FileNotFoundError:
        logger.info(f"training the evaluation classifier into {folder}")
        model, info = clf.train_and_save(run_cfg.data, folder, steps=int(cfg.classifier.steps),
                                         seed=int(cfg.classifier.seed))
    expected = clf.classifier_split(run_cfg.data.holdout_range)[0]
    if list(info["train_range"]) != list(expected) or info["split"] != run_cfg.data.split:
        raise ValueError(
            f"the classifier in {folder} trained on {info['split']}{info['train_range']}, not on the first "
            f"half {run_cfg.data.split}{list(expected)} of this run's holdout; use another classifier.dir."
        )
    return model, info


def likelihoods(model, sde, parameterisation: str, fields: np.ndarray, cfg: DictConfig, exact_pixels: bool) -> dict:
    """Bits per dimension of held-out fields under the probability-flow ODE (Hutchinson)."""
    import equinox as eqx

    from sdeflow import likelihood, samplers

    count = min(int(cfg.likelihood.num_digits), len(fields))
    if count == 0:
        return {"skipped": "likelihood.num_digits is 0"}
    score = samplers.PreconditionedScore(model, sde, parameterisation)
    bin_width = 1 / 127.5 if exact_pixels else None

    @eqx.filter_jit
    def one(score, x, key):
        key_deq, key_probe = jr.split(key)
        if bin_width is not None:
            x = likelihood.uniform_dequantise(key_deq, x)
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
        out["why_no_8bit_value"] = ("the fields are not the exact 8-bit pixels (grid != 32 or data.smoothing > 0), "
                                    "so no quantisation bin exists; bits_per_dim is that of the continuous density")
    return out


def evaluate(model, sde, run_cfg: DictConfig, cfg: DictConfig, step: int | None = None) -> dict:
    """All metrics of a model against its run's held-out digits, as a JSON-ready dict."""
    from sdeflow import metrics

    from . import mnist_classifier as clf
    from .build import make_sampler
    from .sampling import draw, sampler_tag

    grid = int(cfg.grid)
    started = time.perf_counter()
    sampler = make_sampler(cfg.sampler)
    # The data and the classifier first: missing or corrupt files stop the program before it samples.
    reference, _, other, _ = reference_fields(run_cfg, grid)
    classifier, info = classifier_for(run_cfg, cfg)
    parameterisation = run_cfg.loss.parameterisation
    sampling_started = time.perf_counter()
    samples, evaluations = draw(model, sde, parameterisation, sampler, jr.key(cfg.seed), grid,
                                int(cfg.num_samples), min(int(cfg.batch_size), int(cfg.num_samples)),
                                t_end=cfg.sampler.get("t_end"))
    sampling_seconds = time.perf_counter() - sampling_started
    block = int(cfg.metrics_block_size)
    f_samples = clf.features(classifier, samples)
    f_reference = clf.features(classifier, reference)
    f_other = clf.features(classifier, other)
    probabilities = clf.probabilities(classifier, samples)
    probabilities_real = clf.probabilities(classifier, reference)
    k, spectrum_samples = metrics.radial_power_spectrum(jnp.asarray(samples))
    _, spectrum_reference = metrics.radial_power_spectrum(jnp.asarray(reference))
    key = jr.key(cfg.seed + 2)
    result = {
        "run_dir": str(cfg.run_dir),
        "step": step,
        "grid": grid,
        "num_samples": int(cfg.num_samples),
        "num_reference": int(len(reference)),
        "reference": f"{run_cfg.data.split}{list(clf.classifier_split(run_cfg.data.holdout_range)[1])}",
        "sampler": OmegaConf.to_container(cfg.sampler),
        "sampler_tag": sampler_tag(cfg.sampler),
        "weights": str(cfg.weights),
        "mean_network_evaluations": float(np.mean(evaluations)),
        "sampling_seconds": sampling_seconds,
        "sample_value_range": [float(samples.min()), float(samples.max())],
        "riesz_mmd": float(metrics.riesz_mmd(samples, reference, block_size=block)),
        "riesz_mmd_real": float(metrics.riesz_mmd(other, reference, block_size=block)),
        "sliced_wasserstein": float(metrics.sliced_wasserstein(key, samples, reference,
                                                              num_projections=int(cfg.sliced_projections))),
        "frechet_distance": float(metrics.frechet_distance(f_samples, f_reference, block_size=block)),
        "frechet_distance_real": float(metrics.frechet_distance(f_other, f_reference, block_size=block)),
        "vendi_samples": float(metrics.vendi_score(f_samples, block_size=block)),
        "vendi_reference": float(metrics.vendi_score(f_reference, block_size=block)),
        "power_spectrum_error": float(metrics.power_spectrum_error(jnp.asarray(samples), jnp.asarray(reference))),
        "power_spectrum": {
            "wavenumbers": np.asarray(k).tolist(),
            "samples": np.asarray(spectrum_samples).tolist(),
            "reference": np.asarray(spectrum_reference).tolist(),
        },
        "class_histogram": np.bincount(probabilities.argmax(1), minlength=10).tolist(),
        "class_histogram_real": np.bincount(probabilities_real.argmax(1), minlength=10).tolist(),
        "classifier_confidence": float(probabilities.max(1).mean()),
        "classifier_confidence_real": float(probabilities_real.max(1).mean()),
        "classifier_confident_fraction": float(np.mean(probabilities.max(1) > CONFIDENT)),
        "classifier_confident_fraction_real": float(np.mean(probabilities_real.max(1) > CONFIDENT)),
        "classifier": {"dir": str(cfg.classifier.dir or clf.default_folder(run_cfg.data)),
                       "reference_accuracy": info["reference_accuracy"]},
    }
    exact_pixels = grid == 32 and float(run_cfg.data.smoothing) == 0.0
    result["likelihood"] = likelihoods(model, sde, parameterisation, reference, cfg, exact_pixels)
    result["seconds"] = time.perf_counter() - started
    return result


def evaluation_config(cfg: DictConfig, run_dir: pathlib.Path) -> DictConfig:
    """The end of a run's evaluation: its `train.evaluation` (the schema of `train.evaluate`,
    composed with the run's config) for the run folder `run_dir`."""
    from .config import EvaluateConfig

    return OmegaConf.merge(OmegaConf.structured(EvaluateConfig), cfg.train.evaluation, {"run_dir": str(run_dir)})


def write_evaluation(state, sde, cfg: DictConfig, run_dir: pathlib.Path, step: int) -> pathlib.Path:
    """Every metric of `train.evaluate` for the final model (the EMA one unless
    `train.evaluation.weights` is `raw`), into `<run_dir>/evaluation.json`."""
    from .restore import select_weights

    eval_cfg = evaluation_config(cfg, run_dir)
    result = evaluate(select_weights(state, eval_cfg.weights), sde, cfg, eval_cfg, step)
    path = run_dir / "evaluation.json"
    path.write_text(json.dumps(result, indent=1))
    logger.info(
        f"evaluation: {path} (grid {result['grid']}, {result['num_samples']} samples, Riesz MMD "
        f"{result['riesz_mmd']:.4g} vs real {result['riesz_mmd_real']:.4g}, Frechet "
        f"{result['frechet_distance']:.4g} vs real {result['frechet_distance_real']:.4g}, confidently "
        f"classified {result['classifier_confident_fraction']:.0%} vs real "
        f"{result['classifier_confident_fraction_real']:.0%})"
    )
    return path
