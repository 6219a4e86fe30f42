"""The variance of the ELBO's diffusion-term estimate under three schedules, after equal training.

Variational diffusion (`sdeflow.losses.vdm_elbo`) estimates the diffusion term of each example
from one time $t \\sim U[0, 1]$; its expectation depends on the schedule's end points only, its
variance on the shape in between. Three runs train the same small FNO on MNIST t10k digits at a
small grid for the same number of steps, from the same initial weights and batches:

- `fixed`: the schedule stays the initial `LearnedSchedule`, whose $\\gamma$ is close to linear in
  $t$ between the end points (the JSON records its largest distance from the straight line);
- `learned`: the schedule's shape is trained on the ELBO itself (whose gradient has expectation
  zero for the shape: only noise moves it);
- `learned_vr`: trained with the variance-reducing gradient (its shape descends the batch mean of
  $L_{diff}^2$; Kingma et al. 2021, appendix I.2).

The end points are fixed (-10, 6) in all three, so the expectations agree and only the variances
differ. After training, each run's diffusion term is estimated on held-out digits, one time per
digit with the same keys, and the JSON holds its mean, standard error and variance (nats per digit),
with the time per training step and a calibration float32 2048 x 2048 matmul's GFLOP/s measured
beside them.

Run `python -m benchmarks.bench_vdm_variance` (`--quick` for a smoke run); JSON goes to
`benchmarks/results/vdm_variance.json`. Needs MNIST's t10k files (`SDEFLOW_MNIST_ROOT`).
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.calibration import matmul_gflops  # noqa: E402  (run as a module or as a script)
ENDPOINTS = (-10.0, 6.0)


def digits(grid: int, train_count: int, holdout_count: int) -> tuple[np.ndarray, np.ndarray]:
    from train.data import make_source

    source = make_source("mnist", root=os.environ.get("SDEFLOW_MNIST_ROOT"), split="t10k", train_range=[0, 8000],
                         holdout_range=[8000, 10000], smoothing=0.0)
    convert = source.converter((grid, grid))
    return convert(source.load("train").values[:train_count]), convert(source.load("holdout").values[:holdout_count])


def main() -> None:
    import nets
    from sdeflow.losses import vdm_terms
    from sdeflow.priors import Matern
    from sdeflow.sde import LearnedSchedule, VPSDE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 steps, 64 held-out digits")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--holdout", type=int, default=1024)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vdm_variance.json"))
    args = parser.parse_args()
    steps, holdout_count = (20, 64) if args.quick else (args.steps, args.holdout)

    train, holdout = digits(args.grid, 4096, holdout_count)
    prior = Matern(2, s=2.0, tau=8 * np.pi)
    net = nets.FNO(1, 1, width=16, modes=5, depth=2, projection=32, time_features=16, time_dim=32, groups=4,
                   key=jr.key(0))
    schedule = LearnedSchedule(*ENDPOINTS, learn_endpoints=False, hidden=16, key=jr.key(1))
    ts = jnp.linspace(0.0, 1.0, 101)
    line = ENDPOINTS[0] + (ENDPOINTS[1] - ENDPOINTS[0]) * ts
    calibration = [matmul_gflops()]

    def run(name: str, train_schedule: bool, variance_reduction: bool) -> dict:
        parts = (net, schedule)
        optimiser = optax.multi_transform(
            {"network": optax.adam(2e-3), "schedule": optax.adam(1e-2 if train_schedule else 0.0)},
            ("network", "schedule"))
        params, static = eqx.partition(parts, eqx.is_inexact_array)
        state = optimiser.init(params)

        @jax.jit
        def step(params, state, x0, key):
            def loss(params):
                model, sched = eqx.combine(params, static)
                terms = vdm_terms(model, VPSDE(prior, sched, t0=0.0), x0, key, variance_reduction=variance_reduction)
                return jnp.mean(terms["diffusion"])

            value, grads = jax.value_and_grad(loss)(params)
            updates, state = optimiser.update(grads, state, params)
            return optax.apply_updates(params, updates), state, value

        rng = np.random.default_rng(0)
        times = []
        for i in range(steps):
            batch = jnp.asarray(train[rng.integers(0, len(train), args.batch)])
            start = time.perf_counter()
            params, state, value = step(params, state, batch, jr.key(i))
            value.block_until_ready()
            times.append(time.perf_counter() - start)
        model, sched = eqx.combine(params, static)
        sde = VPSDE(prior, sched, t0=0.0)
        per_digit = np.concatenate([
            np.asarray(jax.jit(lambda m, x, k: vdm_terms(m, sde, x, k)["diffusion"])(
                model, jnp.asarray(holdout[i:i + 256]), jr.key(10_000 + i)))
            for i in range(0, len(holdout), 256)])
        calibration.append(matmul_gflops())
        gamma = np.asarray(jax.vmap(sched.gamma)(ts))
        result = {
            "variant": name,
            "diffusion_mean_nats": float(per_digit.mean()),
            "diffusion_stderr_nats": float(per_digit.std(ddof=1) / np.sqrt(len(per_digit))),
            "diffusion_variance": float(per_digit.var(ddof=1)),
            "gamma_at_quarters": [float(g) for g in gamma[[0, 25, 50, 75, 100]]],
            "gamma_max_distance_from_line": float(np.max(np.abs(gamma - np.asarray(line)))),
            "ms_per_step_median": 1e3 * statistics.median(times[1:]),
            "compile_and_first_step_s": times[0],
        }
        print(json.dumps(result))
        return result

    results = [run("fixed", False, False), run("learned", True, False), run("learned_vr", True, True)]
    base = results[0]["diffusion_variance"]
    for r in results:
        r["variance_relative_to_fixed"] = r["diffusion_variance"] / base
    out = {
        "benchmark": "bench_vdm_variance",
        "steps": steps, "batch": args.batch, "grid": args.grid, "held_out_digits": len(holdout),
        "endpoints": list(ENDPOINTS),
        "network": "FNO width 16, modes 5, depth 2 (epsilon), Matern prior s=2, tau=8 pi, VP SDE, t0=0",
        "calibration_matmul_gflops": [round(c, 1) for c in calibration],
        "load_average": os.getloadavg()[0],
        "results": results,
    }
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
