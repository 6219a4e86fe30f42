"""Discretisation consistency of a score network, per block: its fields on the training grid
against the restrictions of its fields on grids 2x and 4x finer, for the same band-limited input.

The network is a trained run's (`--run-dir RUN`, EMA weights) or an experiment's at random
initialisation (`--exp NAME [overrides]`). The inputs are held-out fields of the run's data on
the grid `--grid` (default: the model's reference grid, else the run's first training grid) noised by the run's SDE at several
times, and smooth random fields (modes |k| <= 4, unit variance) at t = 0.5. For each input, each
field of the network (`nets.discretisation_gaps`: the lifted input, every block, the output) and
each refinement, the relative L2 difference; the JSON holds the mean and the maximum over inputs.

Run `python -m benchmarks.bench_consistency --run-dir runs/multilevel_mnist` or
`python -m benchmarks.bench_consistency --exp multilevel_mnist model.oversample=2`; JSON goes to
`benchmarks/results/consistency_<NAME>.json` (`--name` sets NAME).
"""

import argparse
import json
import os
import pathlib
import sys
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMES = (0.02, 0.1, 0.3, 0.6, 1.0)


def field_names(model) -> list[str]:
    """Names of the fields `nets.discretisation_gaps` compares, in its order."""
    import nets

    if isinstance(model, nets.UNO):
        levels = model.levels
        return ["lift"] + [f"block {i} (level {levels[i]:g})" for i in range(1, len(levels))] + ["output"]
    if isinstance(model, nets.FNO):
        return ["lift"] + [f"block {i}" for i in range(1, model.depth + 1)] + ["output"]
    return ["output"]


def smooth_fields(key, count: int, channels: int, grid: int, modes: int = 4):
    """Random fields with Fourier modes |k_i| <= `modes` only, scaled to unit variance."""
    import jax.numpy as jnp
    import jax.random as jr

    import sdeflow

    coarse = 2 * modes + 1
    u = jr.normal(key, (count, channels, coarse, coarse))
    u = jnp.stack([sdeflow.prolong(x, (grid, grid)) for x in u])
    return u / jnp.std(u, axis=(1, 2, 3), keepdims=True)


def _default_grid(cfg) -> int:
    """The model's `reference_grid` (the grid its inner levels are fixed on), else the run's first
    training grid."""
    from train.config import to_schema

    reference = cfg.model.get("reference_grid")
    return int(reference) if reference else int(to_schema(cfg.train).stage_list()[0].levels[0].grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="a trained run's folder (EMA weights)")
    parser.add_argument("--exp", default=None, help="an experiment at random initialisation")
    parser.add_argument("--grid", type=int, default=None, help="the coarse grid (default: the model's reference grid, else the first training grid)")
    parser.add_argument("--count", type=int, default=8, help="inputs per time")
    parser.add_argument("--name", default=None, help="the JSON's name: consistency_<NAME>.json")
    parser.add_argument("overrides", nargs="*", help="hydra overrides of the experiment (with --exp)")
    args = parser.parse_args()
    if (args.run_dir is None) == (args.exp is None):
        parser.error("give one of --run-dir and --exp")
    sys.path.insert(0, str(ROOT))
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np

    import nets
    from benchmarks.calibration import matmul_gflops
    from train import build
    from train.evaluation import Reference

    gflops_before = matmul_gflops()
    if args.run_dir is not None:
        from train.restore import load_run

        cfg, model, sde, step = load_run(args.run_dir)
        name = args.name or pathlib.Path(args.run_dir).name
    else:
        import hydra

        with hydra.initialize_config_module("train.configs", version_base=None):
            from train.config import typed

            cfg = typed(hydra.compose("config", overrides=[f"+exp={args.exp}", *args.overrides]))
        model = build.build_model(cfg, build.split_keys(int(cfg.train.seed))[0])
        sde, step = build.build_sde(cfg), 0
        name = args.name or f"{args.exp}_init"
    grid = int(args.grid or _default_grid(cfg))
    reference = Reference(cfg, grid)
    digits = jnp.asarray(reference.fields[: args.count], jnp.float32)
    channels = digits.shape[1]
    extra = model.in_channels - channels  # self-conditioning channels: fed zeros, as at a sampler's first step

    def with_extra(u):
        return jnp.concatenate([u, jnp.zeros((extra, *u.shape[1:]), u.dtype)]) if extra else u

    gaps = eqx.filter_jit(lambda m, t, u: nets.discretisation_gaps(m, t, with_extra(u)))
    names = field_names(model)
    started = time.perf_counter()
    result = {"run_dir": args.run_dir, "exp": args.exp, "overrides": args.overrides, "step": step,
              "network": nets.summary(model).splitlines()[0], "grid": grid, "refinements": [2, 4],
              "fields": names, "count": args.count, "noised": {}}
    for i, t in enumerate(TIMES):
        keys = jr.split(jr.key(i), args.count)
        noised = jax.vmap(lambda k, x: sde.perturb(k, t, x)[0])(keys, digits)
        values = np.stack([np.asarray(gaps(model, t, u)) for u in noised])  # (count, 2, fields)
        result["noised"][str(t)] = {"mean": values.mean(0).tolist(), "max": values.max(0).tolist()}
    smooth = smooth_fields(jr.key(99), args.count, channels, grid)
    values = np.stack([np.asarray(gaps(model, 0.5, u)) for u in smooth])
    result["smooth_t0.5"] = {"mean": values.mean(0).tolist(), "max": values.max(0).tolist()}
    result["seconds"] = time.perf_counter() - started
    result["calibration_gflops"] = [gflops_before, matmul_gflops()]
    result["loadavg_1min"] = os.getloadavg()[0]
    out = ROOT / "benchmarks" / "results" / f"consistency_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    # The table: mean relative gap per field, at 2x and at 4x, per input kind.
    columns = [(f"t={t}", result["noised"][str(t)]["mean"]) for t in TIMES] + [("smooth", result["smooth_t0.5"]["mean"])]
    print(f"{name}: {result['network']}, grid {grid}, calibration {result['calibration_gflops']}")
    print("| field | " + " | ".join(c for c, _ in columns) + " |  (mean relative L2 gap, 2x / 4x)")
    for j, field in enumerate(names):
        cells = [f"{100 * v[0][j]:.1f}% / {100 * v[1][j]:.1f}%" for _, v in columns]
        print(f"| {field} | " + " | ".join(cells) + " |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
