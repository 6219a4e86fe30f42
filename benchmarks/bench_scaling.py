"""Device scaling of the training program's step: weak and strong scaling over 1, 2, 4, 8 devices.

The step is the one `train.run` compiles (`train.step.make_train_step`: the network under
`jax.shard_map` over a `data` mesh, the gradient averaged over devices, AdamW, EMA), built from an
experiment's config (default `multilevel_mnist`: its U-NO at 32²) on random fields of the data's
shape. For each device count it reports steps/s and samples/s

- at a fixed batch per device (weak scaling: the global batch grows with the devices; linear
  scaling keeps steps/s constant), and
- at a fixed global batch (strong scaling: linear scaling multiplies steps/s by the devices),

the fraction of linear scaling against 1 device, the memory per device of the compiled step
(XLA's memory analysis: arguments, outputs and temporaries), and on accelerators the model FLOP
utilisation (XLA's FLOP count per step over the device's peak, `--peak-tflops`).

On CPU the devices are virtual (`jax_num_cpu_devices`): every count shares the same cores, so the
figures say what the sharding costs rather than what more hardware gives. One process per device
count (the count must be set before JAX starts); a calibration matmul is timed beside every row.

Run `python -m benchmarks.bench_scaling` (`--quick` for a smoke run); JSON goes to
`benchmarks/results/scaling.json`.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]


def worker(devices: int, exp: str, grid: int, per_device: int, global_batch: int, steps: int) -> list[dict]:
    """Time the step on `devices` devices, weak (per-device batch) and strong (global batch)."""
    sys.path.insert(0, str(ROOT))
    import jax

    if os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
        jax.config.update("jax_num_cpu_devices", devices)
    import hydra
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np

    from train import build
    from train.step import init_state, make_mesh, make_train_step, shard_batch

    with hydra.initialize_config_module("train.configs", version_base=None):
        cfg = hydra.compose("config", overrides=[f"+exp={exp}"])
    if len(jax.devices()) < devices:
        return []
    mesh = make_mesh(jax.devices()[:devices])
    channels, dim = build.dimensions(cfg)
    parts = build.build_parts(cfg, jr.key(0))
    sde = build.build_sde(cfg)
    loss_fn = build.build_loss(cfg, sde)
    optimiser = build.build_optimiser(cfg, 0)
    decay = {name: build.part_optim(cfg, name).ema_decay for name in parts}
    step = make_train_step(loss_fn, optimiser, decay, mesh, True)
    a = jr.normal(jr.key(3), (2048, 2048))
    matmul = jax.jit(lambda a: a @ a)
    matmul(a).block_until_ready()
    rows = []
    for mode, batch in (("weak", per_device * devices), ("strong", global_batch)):
        if batch % devices:
            continue
        state = init_state(parts, optimiser, jr.key(1), mesh)
        x = shard_batch(np.asarray(jr.normal(jr.key(2), (batch, channels) + (grid,) * dim)), mesh)
        t0 = time.perf_counter()
        compiled = step.lower(state, x).compile() if hasattr(step, "lower") else None
        compiled = getattr(compiled, "compiled", compiled)  # equinox's wrapper holds jax's
        state, loss = step(state, x)
        loss.block_until_ready()
        compile_s = time.perf_counter() - t0
        times, calib = [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            state, loss = step(state, x)
            loss.block_until_ready()
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            matmul(a).block_until_ready()
            calib.append(2 * 2048**3 / (time.perf_counter() - t0) / 1e9)
        seconds = statistics.median(times)
        row = {"mode": mode, "devices": devices, "global_batch": batch, "per_device_batch": batch // devices,
               "median_ms": round(1e3 * seconds, 2), "steps_per_s": round(1 / seconds, 3),
               "samples_per_s": round(batch / seconds, 1), "compile_s": round(compile_s, 1),
               "loss": float(loss), "calibration_matmul_gflops_median": round(statistics.median(calib), 1),
               "loadavg_1min": os.getloadavg()[0], "platform": jax.devices()[0].platform,
               "device_kind": jax.devices()[0].device_kind}
        if compiled is not None:
            memory = compiled.memory_analysis()
            if memory is not None:
                row["memory_per_device_mb"] = round((memory.argument_size_in_bytes + memory.output_size_in_bytes
                                                     + memory.temp_size_in_bytes) / 2**20, 1)
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            if cost and "flops" in cost:
                row["xla_flops_per_step_per_device"] = float(cost["flops"])
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            row["peak_bytes_in_use_mb"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
        rows.append(row)
        del state, x
        jnp.zeros(()).block_until_ready()
    return rows


def summarise(rows: list[dict], peak_tflops: float | None) -> list[dict]:
    """Add the fraction of linear scaling (and the FLOP utilisation where a peak is given)."""
    for mode in ("weak", "strong"):
        base = next((r for r in rows if r["mode"] == mode and r["devices"] == 1), None)
        for r in (r for r in rows if r["mode"] == mode):
            if base is not None:
                ideal = base["steps_per_s"] * (1 if mode == "weak" else r["devices"])
                r["fraction_of_linear"] = round(r["steps_per_s"] / ideal, 3)
            if peak_tflops and "xla_flops_per_step_per_device" in r:
                achieved = r["xla_flops_per_step_per_device"] * r["steps_per_s"] / 1e12
                r["model_flop_utilisation"] = round(achieved / peak_tflops, 4)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", default="multilevel_mnist", help="the experiment whose model and loss are timed")
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--per-device-batch", type=int, default=8, help="weak scaling's batch per device")
    parser.add_argument("--global-batch", type=int, default=64, help="strong scaling's global batch")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row (after one compiling step)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak (for the FLOP utilisation)")
    parser.add_argument("--quick", action="store_true", help="smoke run: the smoke experiment, 3 steps")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling.json"))
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.exp, args.grid, args.steps = "smoke", 16, 3
    if args.worker is not None:
        rows = worker(args.worker, args.exp, args.grid, args.per_device_batch, args.global_batch, args.steps)
        print("ROWS " + json.dumps(rows))
        return
    rows = []
    for n in args.devices:
        command = [sys.executable, "-m", "benchmarks.bench_scaling", "--worker", str(n), "--exp", args.exp,
                   "--grid", str(args.grid), "--per-device-batch", str(args.per_device_batch),
                   "--global-batch", str(args.global_batch), "--steps", str(args.steps)]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        got = json.loads(next(line for line in out.splitlines() if line.startswith("ROWS "))[5:])
        for r in got:
            print(f"{r['mode']:6s} {r['devices']} devices, batch {r['global_batch']:3d}: {r['median_ms']:8.1f} ms/step, "
                  f"{r['samples_per_s']:7.1f} samples/s ({r['calibration_matmul_gflops_median']:.0f} GFLOP/s matmul)")
        rows += got
    result = {"benchmark": "scaling", "experiment": args.exp, "grid": args.grid, "date": time.strftime("%Y-%m-%d"),
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor()},
              "rows": summarise(rows, args.peak_tflops)}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
