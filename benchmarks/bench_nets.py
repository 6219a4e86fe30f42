"""Parameters, forward and forward+backward time of the score networks on this machine.

For FNO, UNO and UNet with the defaults of their config schemas (`train.config.model`) (one input and output channel),
a batch of 64 at 32x32, 64x64 and 128x128, float32, jitted, through `model.batched` (the fast
spatial-major path for FNO, `vmap` for the others). Forward+backward is the gradient of the mean
squared output with respect to the parameters. Medians over a few calls after compilation.

Run `python -m benchmarks.bench_nets` (add `--quick` for a smoke run); JSON goes to
`benchmarks/results/nets.json`.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]


def _time(fn, *args, repeats: int) -> tuple[float, float, list[float]]:
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times), compile_s, [round(1e3 * t, 1) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 4, grid 32, one call")
    parser.add_argument("--models", nargs="*", default=["fno", "uno", "unet"])
    parser.add_argument("--grids", nargs="*", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "nets.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import equinox as eqx
    import hydra.utils
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    from omegaconf import OmegaConf

    import nets
    from train.config.model import MODELS

    batch = args.batch or (4 if args.quick else 64)
    grids = args.grids or ([32] if args.quick else [32, 64, 128])
    repeats = args.repeats or (1 if args.quick else 3)
    rows = []
    result = {
        "benchmark": "score networks: parameters, forward and forward+backward per batch",
        "conditions": {"machine": platform.platform(), "cpu_count": os.cpu_count(),
                       "jax": jax.__version__, "devices": len(jax.devices()),
                       "device_kind": jax.devices()[0].device_kind,
                       "note": "CPU shared with other processes; see loadavg per row"},
    }
    from benchmarks.calibration import matmul_gflops

    result["calibration_matmul_gflops_before"] = matmul_gflops()
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        cfg = OmegaConf.to_container(OmegaConf.structured(MODELS[name]), enum_to_str=True)
        model = hydra.utils.instantiate(cfg, in_channels=1, out_channels=1, dim=2, key=jr.key(0))
        params = nets.count_parameters(model)
        print(nets.summary(model), flush=True)
        forward = eqx.filter_jit(lambda m, t, u: m.batched(t, u))
        grad = eqx.filter_jit(eqx.filter_grad(lambda m, t, u: jnp.mean(m.batched(t, u) ** 2)))
        for n in grids:
            u = jr.normal(jr.key(1), (batch, 1, n, n))
            t = jr.uniform(jr.key(2), (batch,))
            # UNet at 128^2 is slow on 2 cores: fewer calls
            reps = 1 if (name == "unet" and n >= 128 and jax.default_backend() == "cpu") else repeats
            fwd_ms, fwd_compile, fwd_all = _time(forward, model, t, u, repeats=reps)
            bwd_ms, bwd_compile, bwd_all = _time(grad, model, t, u, repeats=reps)
            row = {"model": name, "grid": n, "batch": batch, "parameters": params,
                   "forward_ms": round(fwd_ms, 1), "forward_backward_ms": round(bwd_ms, 1),
                   "forward_all_ms": fwd_all, "forward_backward_all_ms": bwd_all,
                   "compile_s": [round(fwd_compile, 1), round(bwd_compile, 1)],
                   "loadavg_1min": os.getloadavg()[0]}
            rows.append(row)
            print(f"  {n:4d}^2  forward {fwd_ms:9.1f} ms   forward+backward {bwd_ms:9.1f} ms"
                  f"   (load {row['loadavg_1min']:.1f})", flush=True)
            # written after every row, so that a run cut short keeps what it measured
            path.write_text(json.dumps({**result, "rows": rows}, indent=2))
    result["calibration_matmul_gflops_after"] = matmul_gflops()
    path.write_text(json.dumps({**result, "rows": rows}, indent=2))
    print(f"wrote {path} (calibration {result['calibration_matmul_gflops_before']:.0f} / "
          f"{result['calibration_matmul_gflops_after']:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
