"""Riesz MMD against held-out digits versus network evaluations, for every sampler of a trained model.

    python benchmarks/bench_samplers.py runs/multilevel_mnist [--grid 32] [--num-samples 1000]
        [--output benchmarks/results/bench_samplers.json]
    python benchmarks/bench_samplers.py oracle [--grid 32]   # no trained model: the Gaussian oracle

For each sampler configuration it draws `--num-samples` samples on the grid, computes the energy
distance (`sdeflow.metrics.riesz_mmd`, fields in $L^2(\\mathbb{T}^2)$) to the reference half of
the run's `data.holdout_range` (the half the evaluation classifier did not train on), and records
the mean number of network evaluations and the wall time. The target it checks: the adaptive
probability-flow ODE reaches the MMD of 200-step Euler–Maruyama with at most a fifth of its
evaluations; `target` in the JSON says which adaptive configuration does, if any, next to
`mmd_noise`, the spread of the MMD of 200-step Euler–Maruyama over `--repeats` seeds.

With `oracle` in place of a run folder, the model is the exact score of Gaussian data (a Matérn
field with mean, diffused by a VP SDE with a Matérn prior: `sdeflow.samplers.GaussianOracle`) and
the reference is exact draws of that data: the same table for a perfect network, which separates
the samplers' discretisation error from the network's. Each row also has the power-spectrum
error (mean absolute log ratio of the radial spectra), which resolves small-scale errors that the
MMD of a few thousand samples does not.
"""

import argparse
import json
import os
import pathlib
import sys
import time


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

from sdeflow.samplers import SPACINGS  # noqa: E402


CONFIGS = [
    {"name": "euler_maruyama", "steps": 50},
    {"name": "euler_maruyama", "steps": 100},
    {"name": "euler_maruyama", "steps": 200},
    {"name": "shark", "steps": 25},
    {"name": "shark", "steps": 50},
    {"name": "pc", "steps": 50, "corrector_steps": 1},
    {"name": "ddim", "steps": 10},
    {"name": "ddim", "steps": 20},
    {"name": "ddim", "steps": 50},
    {"name": "ode", "solver": "euler", "steps": 50},
    {"name": "ode", "solver": "heun", "steps": 10},
    {"name": "ode", "solver": "heun", "steps": 20},
    {"name": "ode", "solver": "tsit5", "steps": None, "rtol": 1e-1, "atol": 1e-1},
    {"name": "ode", "solver": "tsit5", "steps": None, "rtol": 3e-2, "atol": 3e-2},
    {"name": "ode", "solver": "tsit5", "steps": None, "rtol": 1e-2, "atol": 1e-2},
    {"name": "ode", "solver": "tsit5", "steps": None, "rtol": 1e-3, "atol": 1e-3},
    {"name": "ode", "solver": "tsit5", "steps": None, "rtol": 6e-2, "atol": 6e-2},
    # The same ODE stopped at t = 0.01 (sigma = s/m ~ 0.045) before Tweedie's denoising step:
    {"name": "ode", "solver": "tsit5", "steps": None, "rtol": 1e-1, "atol": 1e-1, "t_end": 1e-2},
    {"name": "ode", "solver": "tsit5", "steps": None, "rtol": 6e-2, "atol": 6e-2, "t_end": 1e-2},
    {"name": "ode", "solver": "tsit5", "steps": None, "rtol": 3e-2, "atol": 3e-2, "t_end": 1e-2},
    # In the noise-level variables y = (x - b)/m against sigma or log sigma (DDIM's variables):
    {"name": "ode", "solver": "tsit5", "steps": None, "rtol": 3e-2, "atol": 3e-2, "variables": "sigma"},
    {"name": "ode", "solver": "tsit5", "steps": None, "rtol": 3e-2, "atol": 3e-2, "variables": "log_sigma"},
]


def oracle_problem(grid: int, count: int):
    """The exact score of Gaussian data on a `grid` x `grid` grid, and two sets of exact data draws."""
    import math

    import sdeflow
    from sdeflow import samplers
    from sdeflow.priors import Matern
    from sdeflow.sde import VPSDE

    sde = VPSDE(Matern(2, 2.0, 2 * math.pi))
    xy = sdeflow.coordinates((grid, grid))
    mean = 0.5 * jnp.sin(2 * jnp.pi * xy[:1]) * jnp.cos(4 * jnp.pi * xy[1:])
    oracle = samplers.GaussianOracle(sde, mean, Matern(2, 2.5, 10.0, variance=0.3))
    draw_data = jax.jit(jax.vmap(lambda k: oracle.sample(k, sde.t0)))
    reference = np.asarray(draw_data(jr.split(jr.key(101), count)))
    other = np.asarray(draw_data(jr.split(jr.key(102), count)))
    return oracle, sde, reference, other


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the training run folder (config.yaml, checkpoints/), or `oracle`")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    parser.add_argument("--grid", type=int, default=32, help="grid size n of the samples (n x n)")
    parser.add_argument("--num-samples", type=int, default=1000, help="samples per sampler")
    parser.add_argument("--batch-size", type=int, default=500, help="samples drawn at once")
    parser.add_argument("--repeats", type=int, default=3, help="seeds of 200-step Euler-Maruyama (MMD noise)")
    parser.add_argument("--denoise", choices=("yes", "no"), default="yes", help="Tweedie step at t0")
    parser.add_argument("--spacing", choices=sorted(SPACINGS), default="uniform", help="fixed-step grid")
    parser.add_argument("--only", default=None, help="comma-separated sampler names to run (default: all)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="skip fixed-step configurations with more steps (bounds the CPU time)")
    parser.add_argument("--output", default="benchmarks/results/bench_samplers.json", help="the JSON file")
    args = parser.parse_args(argv)

    from sdeflow import metrics
    from sdeflow.parameterisation import Epsilon
    from train.build import build_parameterisation, make_sampler
    from train.evaluation import Reference
    from train.restore import load_run
    from train.sampling import draw, field_shape, sampler_tag

    if args.run_dir == "oracle":
        model, sde, reference, other = oracle_problem(args.grid, args.num_samples)
        parameterisation, step = Epsilon(), None
    else:
        run_cfg, model, sde, step = load_run(args.run_dir, args.step)
        model = jax.device_put(model, jax.devices()[0])
        held = Reference(run_cfg, args.grid)  # samples against half b, the baseline as many of half a
        reference, other = held.half_b, held.baseline(args.num_samples)
        parameterisation = build_parameterisation(run_cfg.loss.parameterisation)
    reference_j = jnp.asarray(reference)
    only = None if args.only is None else set(args.only.split(","))
    rows = []
    from benchmarks.calibration import matmul_gflops

    calibration, load = [matmul_gflops()], [os.getloadavg()[0]]

    def measure(spec, seed):
        sampler = make_sampler(spec)
        started = time.perf_counter()
        samples, evaluations = draw(model, sde, parameterisation, sampler, jr.key(seed), field_shape(1, 2, args.grid),
                                    args.num_samples, min(args.batch_size, args.num_samples),
                                    t_end=spec.get("t_end"))
        seconds = time.perf_counter() - started
        mmd = float(metrics.riesz_mmd(jnp.asarray(samples), reference_j))
        spectrum = float(metrics.power_spectrum_error(jnp.asarray(samples), reference_j))
        return {"sampler": sampler_tag(spec), "fields": spec, "seed": seed, "riesz_mmd": mmd,
                "power_spectrum_error": spectrum,
                "mean_evaluations": float(np.mean(evaluations)), "max_evaluations": int(np.max(evaluations)),
                "seconds": seconds}

    for spec in CONFIGS:
        if only is not None and spec["name"] not in only:
            continue
        if args.max_steps is not None and (spec.get("steps") or 0) > args.max_steps:
            continue
        spec = dict(spec, denoise=args.denoise == "yes", spacing=args.spacing)
        seeds = range(args.repeats) if (spec["name"] == "euler_maruyama" and spec["steps"] == 200) else [0]
        for seed in seeds:
            row = measure(spec, seed)
            rows.append(row)
            print(f"{row['sampler']:>34s}  seed {seed}  MMD {row['riesz_mmd']:.5f}  "
                  f"spectrum error {row['power_spectrum_error']:.4f}  "
                  f"evaluations {row['mean_evaluations']:7.1f}  {row['seconds']:6.1f} s", flush=True)

    baseline = [r for r in rows if r["fields"]["name"] == "euler_maruyama" and r["fields"]["steps"] == 200]
    target = None
    if baseline:
        em_mmd = float(np.mean([r["riesz_mmd"] for r in baseline]))
        em_noise = float(np.std([r["riesz_mmd"] for r in baseline], ddof=1)) if len(baseline) > 1 else None
        em_evals = baseline[0]["mean_evaluations"]
        adaptive = [r for r in rows if r["fields"]["name"] == "ode" and r["fields"].get("steps") is None]
        reaching = [r for r in adaptive if r["riesz_mmd"] <= em_mmd + (em_noise or 0.0)]
        best = min(reaching, key=lambda r: r["mean_evaluations"]) if reaching else None
        target = {
            "euler_maruyama_200_mmd": em_mmd,
            "mmd_noise": em_noise,
            "euler_maruyama_200_evaluations": em_evals,
            "best_adaptive_ode_reaching_it": best,
            "evaluation_ratio": None if best is None else best["mean_evaluations"] / em_evals,
            "met": bool(best is not None and best["mean_evaluations"] <= em_evals / 5),
        }
    result = {
        "run_dir": str(args.run_dir),
        "step": step,
        "grid": args.grid,
        "num_samples": args.num_samples,
        "num_reference": int(len(reference)),
        "num_baseline": int(len(other)),
        "max_steps": args.max_steps,
        "riesz_mmd_real": float(metrics.riesz_mmd(jnp.asarray(other), reference_j)),
        "power_spectrum_error_real": float(metrics.power_spectrum_error(jnp.asarray(other), reference_j)),
        "device": str(jax.devices()[0]),
        "calibration_matmul_gflops": calibration + [matmul_gflops()],
        "loadavg_1min": load + [os.getloadavg()[0]],
        "rows": rows,
        "target": target,
    }
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}; target: {json.dumps(target)}")
    return result


if __name__ == "__main__":
    main()
