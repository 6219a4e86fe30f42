"""The ELBO of held-out data in bits per dimension, split into its terms, and the plot of a learned
noise schedule: the parts of a run's report that `loss=vdm` adds (the ELBO applies to any trained
score network, whatever its loss).

Bits per dimension divide nats by $D \\ln 2$: $D$ the kept modes of the grid with the Gaussian
decoder (a density on the kept span, as the probability-flow likelihood's), the number of grid
values with the discretised one (a probability of the 8-bit values).
"""

import logging
import math
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from omegaconf import DictConfig

logger = logging.getLogger("train.elbo")


def elbo_options(run_cfg: DictConfig, exact_pixels: bool) -> tuple[dict, str | None]:
    """The `vdm_elbo` keyword arguments that evaluate a run: its `loss=vdm` settings, else the
    Gaussian decoder and stratified times with its parameterisation; the discretised decoder only
    for data that are exact 8-bit values (else the Gaussian one, with the reason)."""
    from sdeflow.losses import DiscretisedDecoder, GaussianDecoder, StratifiedTimeSampling

    from .build import build_parameterisation, vdm_options

    loss = run_cfg.loss
    if loss.get("name", "dsm") == "vdm":
        options = vdm_options(loss)
    else:
        options = dict(parameterisation=build_parameterisation(loss.parameterisation),
                       time_sampling=StratifiedTimeSampling(), decoder=GaussianDecoder())
    options["variance_reduction"] = False  # (gradients only)
    why = None
    if isinstance(options["decoder"], DiscretisedDecoder) and not exact_pixels:
        options["decoder"] = GaussianDecoder()
        why = ("the fields are not exact 8-bit values on this grid (resampled or blurred): Gaussian decoder, "
               "bits per dimension of a density")
    return options, why


def elbo_bits(model, sde, fields: np.ndarray, options: dict, key, repeats: int, batch_size: int = 64,
              first: int = 0) -> dict:
    """The negative ELBO of `fields` `(count, c, *grid)` in nats per example and bits per dimension,
    and each of its terms, averaged over `repeats` independent draws of times and noise per
    example; with the standard error of the total over examples.

    **Arguments:**

    - `model`: the network; `sde`: the forward SDE (with the run's learned schedule).
    - `fields`: the examples on one grid.
    - `options`: keyword arguments of `sdeflow.losses.vdm_terms` (`elbo_options`).
    - `key`: a JAX random key; `repeats`: draws per example.
    - `batch_size`: examples per network call.
    - `first`: also report the bits per dimension of the first `first` examples alone (those of
        the probability-flow likelihood, for the comparison on the same examples).

    **Returns:**

    A JSON-ready dict.
    """
    from sdeflow.losses import DiscretisedDecoder
    from sdeflow.likelihood import model_dimensions

    count = len(fields)
    totals = {"diffusion": np.zeros(count), "prior": np.zeros(count), "reconstruction": np.zeros(count)}
    for r, repeat_key in enumerate(jr.split(key, int(repeats))):
        for start in range(0, count, batch_size):
            x = jnp.asarray(fields[start:start + batch_size])
            out = _terms(model, sde, x, jr.fold_in(repeat_key, start), options)
            for name in totals:
                totals[name][start:start + len(x)] += np.asarray(out[name]) / int(repeats)
    shape = fields.shape[1:]
    discrete = isinstance(options["decoder"], DiscretisedDecoder)
    dims = int(np.prod(shape)) if discrete else model_dimensions(shape)
    per_example = sum(totals.values())
    scale = 1.0 / (dims * math.log(2.0))
    out = {
        "grid": list(shape[1:]),
        "num_examples": count,
        "repeats": int(repeats),
        "decoder": type(options["decoder"]).__name__,
        "dimensions": dims,
        "nats_per_example": float(per_example.mean()),
        "bits_per_dim": float(per_example.mean() * scale),
        "bits_per_dim_stderr": float(per_example.std(ddof=1) / math.sqrt(count) * scale) if count > 1 else None,
        "terms_bits_per_dim": {name: float(value.mean() * scale) for name, value in totals.items()},
    }
    if 0 < first <= count:
        out[f"bits_per_dim_first_{first}"] = float(per_example[:first].mean() * scale)
    return out


@eqx.filter_jit
def _terms(model, sde, x, key, options):
    from sdeflow.losses import vdm_terms

    return vdm_terms(model, sde, x, key, **options)


def elbo_report(model, sde, run_cfg: DictConfig, settings: DictConfig, grids: list[int], seed: int,
                index: np.ndarray | None = None, first: int = 0) -> dict:
    """`elbo_bits` of held-out examples (positions `index` in the run's held-out part; default all
    of them), the first `settings.num_examples` of them, on each grid of `grids` (the source's
    `fields_on`), by grid."""
    from .build import build_source

    source = build_source(run_cfg.data)
    holdout = source.load("holdout")
    index = (np.arange(len(holdout)) if index is None else np.asarray(index))[: int(settings.num_examples)]
    out = {}
    for n in grids:
        fields = source.fields_on("holdout", n, index)
        options, why = elbo_options(run_cfg, source.pixel_bin_width(holdout.values, n) is not None)
        result = elbo_bits(model, sde, fields, options, jr.key(seed + 3), int(settings.repeats), first=first)
        if why:
            result["why_gaussian_decoder"] = why
        out[str(n)] = result
        logger.info(f"ELBO on the {n}-grid: {result['bits_per_dim']:.4f} bits/dim ({result['decoder']}; terms "
                    + ", ".join(f"{k} {v:.4f}" for k, v in result["terms_bits_per_dim"].items()) + ")")
    return out


def plot_schedule(schedule, path: str | pathlib.Path, base=None) -> None:
    """Plot a noise schedule's $\\gamma(t) = \\log(s^2/m^2)$ and its $\\gamma'(t)$ into a PNG, beside
    `base` (e.g. the fixed schedule of the run's `sde` group) when given."""
    from .progress import plt

    t = jnp.linspace(0.0, 1.0, 201)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    curves = [("learned", schedule, "C0")] + ([("sde config's", base, "0.5")] if base is not None else [])
    for label, s, colour in curves:
        ts = t if label == "learned" else t[1:]  # (a fixed linear schedule has gamma(0) = -inf)
        left.plot(ts, np.asarray(jax.vmap(s.gamma)(ts)), color=colour, label=label)
        right.plot(ts, np.asarray(jax.vmap(s.gamma_derivative)(ts)), color=colour, label=label)
    left.set(xlabel="t", ylabel="gamma(t) = log(s^2/m^2)", title="log noise-to-signal ratio")
    right.set(xlabel="t", ylabel="gamma'(t)", yscale="log", title="its rate")
    left.legend()
    fig.tight_layout()
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
