"""The report of the `gaussian_mixture` data (`train.report.name=gaussian_mixture`): how far the
learned score is from the exact one, and which mixture weights the samples recover.

For data from `train.data.GaussianMixtureFields` the score of the noised law is known in closed
form at every time and on every grid (`sdeflow.samplers.GaussianMixtureOracle`). At the end of a
run this writes into the run folder:

- `mixture_report.json`: for every grid of `train.report.grids`, the relative $L^2$ error
  $\\big(\\sum \\|s_\\theta(t, x) - s(t, x)\\|^2 / \\sum \\|s(t, x)\\|^2\\big)^{1/2}$ of the
  network's preconditioned score $s_\\theta \\approx C \\nabla \\log p_t$ against the exact one
  $s$ over `score_samples` exact draws $x \\sim p_t$ at each of `times` diffusion times (it is
  also the relative error of the predicted noise); and the fraction of `num_samples` samples
  (drawn with the run's sampler) whose nearer mean is each component's, beside the true weights
  and the fractions of the held-out data;
- `mixture_score_error.png`: that error against $t$, one line per grid.
"""

import json
import logging
import pathlib
import time

import numpy as np
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError
from .config.report import require_generator

logger = logging.getLogger("train.report")

GENERATOR = "gaussian_mixture_fields"


def check_mixture_report(cfg: DictConfig) -> None:
    """The run's data must be the generated mixture (its law is what the report compares with)."""
    require_generator(cfg.data, "gaussian_mixture", GENERATOR, "the law whose exact score it compares with")
    mixture_law(cfg)


def mixture_law(cfg: DictConfig):
    """The `GaussianMixtureFields` of the run's data parameters."""
    from .data import GaussianMixtureFields

    params = OmegaConf.to_container(cfg.data.params, resolve=True)
    try:
        return GaussianMixtureFields(**{k: tuple(v) if k == "weights" else v for k, v in params.items()})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"data.params: {error}") from None


def score_errors(model, sde, parameterisation, oracle, grid, times, count: int, key) -> list[float]:
    """The relative $L^2$ error of the network's preconditioned score against `oracle.score`
    at each time of `times`, over `count` exact draws of $X_t$ on `grid` (one compiled program)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    from sdeflow import samplers

    score = samplers.PreconditionedScore(samplers.VmapAsBatched(model), sde, parameterisation)

    @eqx.filter_jit
    def error(score, oracle, t, key):
        x, _ = jax.vmap(lambda k: oracle.sample(k, t, grid))(jr.split(key, count))
        exact = jax.vmap(lambda y: oracle.score(t, y))(x)
        learned = jax.vmap(lambda y: score(t, y))(x)
        return jnp.sqrt(jnp.sum((learned - exact) ** 2) / jnp.sum(exact**2))

    return [float(error(score, oracle, jnp.asarray(t, jnp.float32), jr.fold_in(key, i))) for i, t in enumerate(times)]


def write_mixture_report(state, sde, cfg: DictConfig, run_dir: pathlib.Path, step: int) -> list[pathlib.Path]:
    """Write `mixture_report.json` and `mixture_score_error.png` for the EMA network of `state`."""
    import jax.random as jr

    from . import build
    from .distributed import local_copy
    from .progress import plt
    from .sampling import draw, field_shape, smallest_report_time

    started = time.perf_counter()
    r = cfg.train.report
    law = mixture_law(cfg)
    model = local_copy(state.ema["network"])
    parameterisation = build.build_parameterisation(cfg.loss.parameterisation)
    sampler = build.build_sampler(cfg)
    source = build.build_source(cfg.data)
    channels, dim = source.channels, source.dim
    times = np.geomspace(smallest_report_time(sde), float(sde.t1), int(r.times))
    key = jr.key(cfg.train.seed + 1)
    result = {"step": step, "times": times.tolist(), "weights": list(law.weights), "grids": {}}
    holdout = source.load("holdout").values
    data_classes = law.nearer_mean(holdout)
    result["data_fractions"] = (np.bincount(data_classes, minlength=law.dim) / len(holdout)).tolist()
    for n in r.grids:
        grid = (int(n),) * dim
        oracle = law.oracle(sde, grid)
        errors = score_errors(model, sde, parameterisation, oracle, grid, times, int(r.score_samples), jr.fold_in(key, n))
        samples, evaluations = draw(model, sde, parameterisation, sampler, jr.fold_in(key, 10_000 + n),
                                    field_shape(channels, dim, n), int(r.num_samples), min(int(r.batch_size), int(r.num_samples)),
                                    t_end=cfg.sampler.t_end)
        classes = law.nearer_mean(samples)
        fractions = (np.bincount(classes, minlength=law.dim) / len(samples)).tolist()
        result["grids"][str(n)] = {
            "relative_score_error": errors,
            "sample_fractions": fractions,
            "num_samples": int(len(samples)),
            "network_evaluations": float(np.mean(evaluations)),
        }
        logger.info(f"mixture report, grid {n}: relative score error {min(errors):.3g}..{max(errors):.3g}, "
                    f"sample fractions {np.round(fractions, 3).tolist()} (true {list(law.weights)})")
    result["seconds"] = time.perf_counter() - started
    path = run_dir / "mixture_report.json"
    path.write_text(json.dumps(result, indent=1))
    figure, axis = plt.subplots(figsize=(6, 4))
    for n in r.grids:
        axis.plot(times, result["grids"][str(n)]["relative_score_error"], marker="o", ms=3, label=f"{n}²")
    axis.set(xscale="log", yscale="log", xlabel="diffusion time t", ylabel="relative L2 error of C∇log p_t",
             title=f"learned vs exact score, step {step}")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(title="grid")
    figure.tight_layout()
    png = run_dir / "mixture_score_error.png"
    figure.savefig(png, dpi=120)
    plt.close(figure)
    logger.info(f"mixture report: {path}, {png} ({result['seconds']:.1f} s)")
    return [path, png]
