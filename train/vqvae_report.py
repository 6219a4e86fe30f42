"""The report of a diffusion prior over a VQ-VAE's latent maps (`train.report.name=vqvae_bridge`).

At the end of a run whose score network models the latent maps of its `autoencoder`, this writes
into the run folder:

- `reconstructions.png`: held-out examples (top row of each pair) over their reconstructions
  through the codebook;
- `samples.png`: unconditional samples: latent maps drawn with the run's sampler, snapped to their
  nearest codes and decoded;
- `inpainting.png`: per row, a held-out example, the same with its centre masked (grey) and
  inpaintings of the centre: the latent map outside the central patch is kept by replacement
  (`sdeflow.samplers.Inpainting`), the patch is sampled, snapped and decoded;
- `chain.png`: per row, one sample's latent map decoded at decreasing diffusion times (without
  snapping), then the final snapped and decoded sample;
- `vqvae_bridge.json`: the reconstruction error and the codebook's usage and perplexity on
  held-out data, the cross-entropy of the true codes inside the masked patch (below), and the
  evaluation metrics of the decoded samples against the held-out data (`train.evaluation`).

The patch cross-entropy: for each held-out example, `report.inpaint_samples` inpaintings give,
at each position of the patch, the frequencies of the snapped codes; the predictive probability of
a code is that of a Dirichlet prior centred on the codebook's marginal frequencies (weight one
example) updated with them, $p(k) = (n_k + q_k) / (S + 1)$, where $q$ are the marginal
frequencies of the codes over the training examples. The report gives the mean of
$-\\log_2 p(\\text{true code})$ over the patch's positions and examples, beside the same mean for
$q$ alone (a prior that ignores the context); the lower the better.
"""

import json
import logging
import pathlib
import time

import numpy as np
from omegaconf import DictConfig

from .config import ConfigError

logger = logging.getLogger("train.report")


def check_vqvae_report(cfg: DictConfig) -> None:
    """The run must model an autoencoder's latent maps, on one report grid, with a fixed-step
    sampler (inpainting by replacement needs one)."""
    from . import build

    if cfg.get("autoencoder") is None:
        raise ConfigError("train.report.name=vqvae_bridge needs a run with an autoencoder (autoencoder: {...}).")
    if len(cfg.train.report.grids) != 1:
        raise ConfigError(f"train.report.grids: the vqvae_bridge report compares decoded samples with the "
                          f"held-out digits on one grid, got {list(cfg.train.report.grids)}.")
    sampler = build.build_sampler(cfg)
    if getattr(sampler, "num_steps", None) is None:
        raise ConfigError(f"train.report.name=vqvae_bridge inpaints by replacement, which needs a fixed-step "
                          f"sampler: sampler={cfg.sampler.name} with sampler.steps set.")


def patch_cross_entropy(sampled: np.ndarray, true: np.ndarray, marginal: np.ndarray, inside: np.ndarray) -> tuple[float, float]:
    """The mean cross-entropy in bits of the true codes inside the patch, under the predictive of
    the sampled codes and under the marginal frequencies alone.

    **Arguments:**

    - `sampled`: the snapped codes of the inpaintings, `(examples, S, *grid)`.
    - `true`: the examples' own codes, `(examples, *grid)`.
    - `marginal`: the codes' marginal frequencies $q$ `(K,)` (positive, summing to one).
    - `inside`: the patch, a boolean `grid`.

    **Returns:**

    `(bits with the context, bits of the marginal alone)`.
    """
    count = sampled.shape[1]
    hits = (sampled == true[:, None]).sum(1)  # n_k of the true code k at every position
    q_true = marginal[true]
    predictive = (hits + q_true) / (count + 1.0)
    return float(-np.log2(predictive[:, inside]).mean()), float(-np.log2(q_true[:, inside]).mean())


def code_frequencies(indices: np.ndarray, num_codes: int) -> np.ndarray:
    """The frequencies of the codes in `indices`, each at least $10^{-6}$, normalised."""
    frequencies = np.bincount(indices.ravel(), minlength=num_codes).astype(np.float64)
    frequencies = np.maximum(frequencies / frequencies.sum(), 1e-6)
    return frequencies / frequencies.sum()


def inpaint_patch(network, sde, parameterisation, sampler, key, observed, inside: np.ndarray, count: int):
    """`count` inpaintings of the latent map `observed` `(D, *latent)`: the positions where `inside`
    `(*latent)` is true are drawn, the others kept (replacement, `sdeflow.samplers.Inpainting`).

    **Returns:**

    The inpainted maps, `(count, D, *latent)`, equal to `observed` outside the patch.
    """
    import jax.numpy as jnp

    from sdeflow import samplers

    from .sampling import draw

    mask = jnp.asarray(np.broadcast_to(~np.asarray(inside), observed.shape))  # observed: outside the patch
    return draw(network, sde, parameterisation, sampler, key, tuple(observed.shape), count, count,
                observation=samplers.Inpainting(mask, observed))[0]


def write_vqvae_report(state, sde, cfg: DictConfig, run_dir: pathlib.Path, step: int) -> list[pathlib.Path]:
    """Write the figures and `vqvae_bridge.json` described in the module's docstring.

    The score network is the EMA one; the autoencoder is the one the network was trained on: its
    raw weights, whose codebook statistics the EMA shares.
    """
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    from sdeflow import metrics, samplers

    from . import build
    from .data import as_grid
    from .evaluation import classifier_metrics, has_classifier, Reference
    from .latent import decode
    from .mnist_classifier import load_or_train
    from .progress import save_grid
    from .resolution_tasks import centre_square
    from .distributed import local_copy
    from .sampling import draw, smallest_report_time

    started = time.perf_counter()
    r = cfg.train.report
    network = local_copy(state.ema["network"])
    autoencoder = local_copy(state.parts["autoencoder"])
    parameterisation = build.build_parameterisation(cfg.loss.parameterisation)
    sampler = build.build_sampler(cfg)
    grid = int(r.grids[0])
    reference = Reference(cfg, grid)
    source = reference.source
    real = reference.fields
    latent_shape = build.field_shape_of_network(cfg, grid)
    num_codes = int(autoencoder.quantiser.counts.shape[0])
    key = jr.key(cfg.train.seed + 3)
    batch = int(r.batch_size)

    encode = jax.jit(jax.vmap(autoencoder.encode))
    snap_decode = jax.jit(lambda z: decode(autoencoder, z))

    def in_batches(fn, x):
        outs = [fn(jnp.asarray(x[i : i + batch])) for i in range(0, len(x), batch)]
        return jax.tree.map(lambda *a: np.concatenate([np.asarray(v) for v in a]), *outs)

    # Reconstructions and the codebook on held-out examples.
    latents = in_batches(encode, real)
    reconstructions, codes = in_batches(snap_decode, latents)
    codebook = {k: float(v) for k, v in autoencoder.quantiser.statistics(jnp.asarray(codes)).items()}
    result = {"step": step, "grid": grid, "latent_shape": list(latent_shape), "num_codes": num_codes,
              "reconstruction_mse": float(np.mean((reconstructions - real) ** 2)),
              "codebook_usage": codebook["usage"], "codebook_perplexity": codebook["perplexity"],
              "num_reference": int(len(real))}
    paths = [run_dir / "reconstructions.png"]
    show = min(8, len(real))
    save_grid(np.concatenate([real[:show], reconstructions[:show]]), paths[-1], nrow=show)

    # Unconditional samples, snapped and decoded, and their evaluation.
    count = int(r.num_samples)
    z, evaluations = draw(network, sde, parameterisation, sampler, jr.fold_in(key, 1), latent_shape, count,
                          min(batch, count), t_end=cfg.sampler.t_end)
    samples, _ = in_batches(snap_decode, z)
    paths.append(run_dir / "samples.png")
    save_grid(samples[:36], paths[-1])
    block = int(cfg.train.evaluation.metrics_block_size)
    # the samples and as many real examples of half a against half b (`train.evaluation`)
    compared, baseline = reference.half_b, reference.baseline(count)
    evaluation = {
        "num_samples": count, "network_evaluations": float(np.mean(evaluations)),
        "sample_value_range": [float(samples.min()), float(samples.max())],
        "power_spectrum_error": float(metrics.power_spectrum_error(jnp.asarray(samples), jnp.asarray(compared))),
        "power_spectrum_error_real": float(metrics.power_spectrum_error(jnp.asarray(baseline),
                                                                        jnp.asarray(compared))),
        "power_spectrum_error_reconstructions": float(metrics.power_spectrum_error(jnp.asarray(reconstructions),
                                                                                   jnp.asarray(real))),
    }
    if has_classifier(source):
        classifier, _ = load_or_train(source, reference.holdout, reference.split, cfg.train.evaluation.classifier)
        evaluation.update(classifier_metrics(classifier, samples, compared, baseline, block))
        reconstructed = classifier_metrics(classifier, reconstructions, real, None, block)
        evaluation["frechet_distance_reconstructions"] = reconstructed["frechet_distance"]
        evaluation["classifier_confident_fraction_reconstructions"] = reconstructed["classifier_confident_fraction"]
    result["samples"] = evaluation

    # Inpainting of the central patch, and the cross-entropy of the true codes there.
    inside = centre_square(latent_shape[1:], 0.5)  # the central patch: half of each axis
    score = samplers.PreconditionedScore(samplers.VmapAsBatched(network), sde, parameterisation)
    examples, per_example = int(r.inpaint_examples), int(r.inpaint_samples)
    if examples > len(latents):
        logger.warning(f"train.report.inpaint_examples = {examples} is more than the {len(latents)} reference "
                       f"examples: inpainting {len(latents)}")
        examples = len(latents)

    def inpaint(observed, example: int):
        """`per_example` inpaintings of the latent map `observed`, the keys
        `jr.split(jr.fold_in(key, 100 + example), per_example)`."""
        return inpaint_patch(network, sde, parameterisation, sampler, jr.fold_in(key, 100 + example), observed,
                             inside, per_example)

    train_codes = in_batches(lambda x: snap_decode(encode(x))[1],
                             source.converter(as_grid(grid, source.dim))(source.load("train").values[:2000]))
    marginal = code_frequencies(train_codes, num_codes)
    sampled, shown = [], []
    for i in range(examples):
        z_i = inpaint(jnp.asarray(latents[i]), i)
        decoded, snapped = snap_decode(z_i)
        sampled.append(np.asarray(snapped))
        if i < 8:
            masked = np.where(np.kron(inside, np.ones((grid // latent_shape[1],) * source.dim, bool)), 0.0, real[i])
            shown += [real[i], masked, *np.asarray(decoded)[:6]]
    bits, bits_marginal = patch_cross_entropy(np.stack(sampled), codes[:examples], marginal, inside)
    result["inpainting"] = {"examples": examples, "samples_per_example": per_example,
                            "patch": f"the central {int(inside.sum())} of {inside.size} latent positions",
                            "patch_cross_entropy_bits": bits, "patch_cross_entropy_bits_marginal": bits_marginal}
    paths.append(run_dir / "inpainting.png")
    save_grid(np.stack(shown), paths[-1], nrow=8)

    # A chain: the latent map decoded (without snapping) at decreasing times, then the final sample.
    times = jnp.asarray(np.geomspace(float(sde.t1) * 0.9, smallest_report_time(sde) * 10, 6), jnp.float32)

    @jax.jit
    def chain(keys):
        return jax.vmap(lambda k: sampler.sample(score, k, latent_shape, save_ts=times))(keys)

    chains = chain(jr.split(jr.fold_in(key, 2), 6))
    states = np.asarray(jax.vmap(jax.vmap(autoencoder.decode))(chains.chain))  # (6, times, c, *grid)
    finals, _ = snap_decode(chains.samples)
    rows = np.concatenate([states, np.asarray(finals)[:, None]], axis=1)
    paths.append(run_dir / "chain.png")
    save_grid(rows.reshape((-1,) + rows.shape[2:]), paths[-1], nrow=rows.shape[1])
    result["chain_times"] = np.asarray(times).tolist()

    result["seconds"] = time.perf_counter() - started
    path = run_dir / "vqvae_bridge.json"
    path.write_text(json.dumps(result, indent=1))
    logger.info(f"vqvae report: reconstruction MSE {result['reconstruction_mse']:.4f}, codebook usage "
                f"{codebook['usage']:.2f}, perplexity {codebook['perplexity']:.1f}; patch cross-entropy {bits:.2f} "
                f"bits (marginal {bits_marginal:.2f}); {path} ({result['seconds']:.1f} s)")
    return [path, *paths]
