"""Throughput of the full training step of an FNO on CPU (or a GPU), against the project's performance target.

The step: times and prior noise (Matérn, `sdeflow.priors`), the epsilon denoising loss of a
VP SDE, its gradient and an optax Adam update, for an FNO with 4 Fourier layers, 14 modes per
axis, width 32, batch 128 at 32x32, float32. One process per device count and allocator (both
must be set before JAX starts) compiles every variant and times them interleaved; medians are
reported with the machine's load, the process CPU time, and a calibration matmul measured between
rounds, since other processes may share the CPU.

Variants (all in one process per device count and allocator, timed interleaved):

- `vmap-fft`: `sdeflow.losses.dsm_loss` on the per-sample model (`vmap`; the `batched` method
  hidden), spectral convolutions through `rfftn`/`irfftn` (the straightforward port);
- `vmap-dft`: the same with truncated DFTs as matmuls (`method="dft"`);
- `vmap-dft-nonorm`: the same without GroupNorm;
- `batched`: `dsm_loss` as it is, which calls `model.batched` (spatial-major layout, canonical
  matmuls), GroupNorm in every block;
- `batched-nonorm`: the same without GroupNorm;
- `shardmap`, `shardmap-nonorm`: `batched` with the network under `jax.shard_map` over the
  devices (`train.step.DataParallel`, what the training program runs), with and without GroupNorm;
- `microbatch-nonorm`: `batched-nonorm` on four micro-batches of 32 in a `jax.lax.map`, a tried
  alternative: its activations of 4 MB stay in the 32 MB L3 cache where the full batch's 16 MB
  ones do not, but the loop runs each op on a quarter of the batch at a lower rate than the cache
  gains (865 against 527 ms per step here).

Allocators (`--allocators`, separate processes): glibc's `malloc` as it comes (`default`) and
keeping the memory XLA frees between steps (`retain`, `train.memory`; what the programs do).
Default glibc maps every step's temporaries afresh, and the page faults (counted per step in the
JSON) cost a quarter to two fifths of the step on a VM. `fastest` compares all variants, allocators and
device counts.

With `--torch` (PyTorch installed: `pip install torch==2.13.0`), the reference PyTorch step
(`bench_train_step_torch`) runs in its own process before and after the JAX processes, and the
JSON gives the ratio of its median to each variant's (`speedup_over_pytorch`).

With `--platform cuda` the same variants run on the GPU (one process per device count; the
allocator makes no difference there, so give `--allocators default`), and `--torch` times the
reference step on the GPU too. JAX's default precision runs float32 matmuls in TF32 on such a GPU,
PyTorch's in float32.

Run `python -m benchmarks.bench_train_step` (add `--quick` for a fast smoke run); JSON goes to
`benchmarks/results/train_step.json`.
"""

import argparse
import itertools
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]
ALLOCATORS = ("default", "retain")
VARIANTS = ("vmap-fft", "vmap-dft", "vmap-dft-nonorm", "batched", "batched-nonorm", "shardmap",
            "shardmap-nonorm", "microbatch-nonorm")
MICRO_BATCHES = 4
LIMIT_MS = 100.0  # ~14 GFLOP at ~135 GFLOP/s (a large float32 matmul here): the step's compute limit


def worker(variants: list[str], devices: int, batch: int, grid: int, steps: int,
           allocator: str, platform_name: str = "cpu") -> list[dict]:
    """Compile every variant, then time them interleaved (A B C D A B C D ...), so that a load
    that changes over time affects all variants alike."""
    sys.path.insert(0, str(ROOT))
    if allocator == "retain":
        from train.memory import retain_freed_memory

        if not retain_freed_memory():
            raise RuntimeError("--allocators retain needs glibc's malloc (train.memory).")
    import jax

    if platform_name == "cpu":
        jax.config.update("jax_num_cpu_devices", devices)
    jax.config.update("jax_platforms", platform_name)
    if len(jax.devices()) < devices:
        raise RuntimeError(f"--devices {devices}: {platform_name} has {len(jax.devices())}.")
    import equinox as eqx
    import jax.numpy as jnp
    import jax.random as jr
    import optax
    from jax.sharding import NamedSharding, PartitionSpec

    import nets
    import sdeflow
    from sdeflow.losses import dsm_loss
    from train.step import DataParallel

    sde = sdeflow.sde.VPSDE(sdeflow.priors.Matern(dim=2, s=2.0))
    optimiser = optax.adam(1e-4)
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.devices()[:devices])
    data_sharding = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    x0 = sdeflow.priors.Matern(dim=2, s=1.5).sample(jr.key(1), (1, grid, grid))
    x0 = jax.device_put(jnp.broadcast_to(x0, (batch, 1, grid, grid)) * 0.5, data_sharding)

    class PerSample(eqx.Module):
        """The network without its `batched` method, so that `dsm_loss` falls back to vmap."""

        net: eqx.Module

        def __call__(self, t, x):
            return self.net(t, x)

    def batched_loss(model, x0, key):  # dsm_loss calls model.batched when it exists
        return dsm_loss(model, sde, x0, key)

    def vmap_loss(model, x0, key):
        return dsm_loss(PerSample(model), sde, x0, key)

    class MicroBatched(eqx.Module):
        """`net.batched` on `MICRO_BATCHES` equal parts of the batch, one after another."""

        net: eqx.Module

        def __call__(self, t, x):
            return self.net(t, x)

        def batched(self, t, x):
            k = MICRO_BATCHES
            t = jnp.broadcast_to(t, x.shape[:1]).reshape(k, -1)
            y = jax.lax.map(lambda a: self.net.batched(*a), (t, x.reshape(k, -1, *x.shape[1:])))
            return y.reshape(x.shape[0], *y.shape[2:])

    def microbatch_loss(model, x0, key):
        return dsm_loss(MicroBatched(model), sde, x0, key)

    def shardmap_loss(model, x0, key):
        return dsm_loss(DataParallel(model, mesh), sde, x0, key)

    def make(variant):
        norm = None if variant.endswith("nonorm") else "group"
        method = "fft" if variant == "vmap-fft" else "dft"
        model = nets.FNO(1, 1, width=32, modes=14, depth=4, norm=norm, method=method, dim=2,
                         key=jr.key(0))
        loss_fn = {"batched": batched_loss, "vmap": vmap_loss, "shardmap": shardmap_loss,
                   "microbatch": microbatch_loss}[variant.split("-")[0]]

        def step(model, opt_state, x0, key):
            loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x0, key)
            updates, opt_state = optimiser.update(grads, opt_state, model)
            return eqx.apply_updates(model, updates), opt_state, loss

        model = eqx.filter_shard(model, replicated)
        opt_state = eqx.filter_shard(optimiser.init(eqx.filter(model, eqx.is_array)), replicated)
        flops = None
        try:
            cost = jax.jit(step).lower(model, opt_state, x0, jr.key(2)).compile().cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            # XLA reports the program of one device; with the batch split over `devices` the
            # step does `devices` times that.
            flops = float(cost.get("flops", 0.0)) * devices or None
        except Exception:  # cost analysis is best effort
            pass
        step = eqx.filter_jit(step, donate="all-except-first")
        t0 = time.perf_counter()
        model, opt_state, loss = step(model, opt_state, x0, jr.key(4))
        loss.block_until_ready()
        return {"step": step, "state": [model, opt_state], "flops": flops,
                "compile_s": time.perf_counter() - t0, "wall": [], "cpu": [], "faults": [],
                "loss": None}

    runs = {v: make(v) for v in variants}
    a = jr.normal(jr.key(3), (2048, 2048))
    matmul = jax.jit(lambda a: a @ a)
    matmul(a).block_until_ready()
    calib, loads = [], []
    key = jr.key(5)
    for i in range(steps):
        for variant, run in runs.items():
            key = jr.fold_in(key, i)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            w0, c0 = time.perf_counter(), time.process_time()
            model, opt_state, loss = run["step"](*run["state"], x0, key)
            loss.block_until_ready()
            run["wall"].append(time.perf_counter() - w0)
            run["cpu"].append(time.process_time() - c0)
            run["faults"].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            run["state"] = [model, opt_state]
            run["loss"] = float(loss)
        t0 = time.perf_counter()
        matmul(a).block_until_ready()
        calib.append(2 * 2048**3 / (time.perf_counter() - t0) / 1e9)
        loads.append(os.getloadavg()[0])
    return [
        {
            "variant": variant,
            "devices": devices,
            "allocator": allocator,
            "median_ms": 1e3 * statistics.median(run["wall"]),
            "min_ms": 1e3 * min(run["wall"]),
            "times_ms": [round(1e3 * x, 1) for x in run["wall"]],
            "cpu_median_ms": 1e3 * statistics.median(run["cpu"]),
            "page_faults_median": statistics.median(run["faults"]),
            "compile_s": round(run["compile_s"], 2),
            "loss": run["loss"],
            "xla_flops_per_step": run["flops"],
            "calibration_matmul_gflops_median": statistics.median(calib),
            "loadavg_1min_median": statistics.median(loads),
            "device_kind": jax.devices()[0].device_kind,
        }
        for variant, run in runs.items()
    ]


def torch_reference(batch: int, steps: int, device: str) -> float:
    """The median step time in ms of `bench_train_step_torch` (the reference PyTorch step), run in a
    process of its own on `device` (`cpu` or `cuda`)."""
    out_json = ROOT / "benchmarks" / "results" / "train_step_torch.json"
    cmd = [sys.executable, "-m", "benchmarks.bench_train_step_torch", "--batch", str(batch),
           "--steps", str(steps), "--device", device, "--out", str(out_json)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(out.stderr or out.stdout)[-3000:]}")
    median = json.loads(out_json.read_text())["median_ms"]
    print(f"PyTorch reference step: median {median:.0f} ms", flush=True)
    return round(median, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch, few steps, 1 device")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--devices", nargs="*", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="processes per configuration")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per process")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_step.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--allocators", nargs="+", default=list(ALLOCATORS), choices=ALLOCATORS,
                        help="glibc malloc as it comes (default) or keeping freed memory "
                             "(retain: train.memory.retain_freed_memory, what the program runs)")
    parser.add_argument("--torch", action="store_true",
                        help="time the reference PyTorch step before and after, for the ratio")
    parser.add_argument("--platform", default="cpu", choices=("cpu", "cuda"),
                        help="JAX's platform (cuda: one process per device count on the GPUs, "
                             "and the PyTorch reference on the GPU)")
    args = parser.parse_args()
    batch = args.batch or (16 if args.quick else 128)
    steps = args.steps or (2 if args.quick else 10)
    if args.worker:
        devices = (args.devices or [1])[0]
        res = worker(args.variants, devices, batch, 32, steps, args.allocators[0], args.platform)
        print("RESULT " + json.dumps(res), flush=True)
        return
    devices = args.devices or ([1] if args.quick else [1, 2])
    repeats = args.repeats or (1 if args.quick else 2)
    torch_device = "cuda" if args.platform == "cuda" else "cpu"
    torch_ms = [torch_reference(batch, steps, torch_device)] if args.torch else []
    runs = []
    for r, allocator, n in itertools.product(range(repeats), args.allocators, devices):
        cmd = [sys.executable, "-m", "benchmarks.bench_train_step", "--worker",
               "--variants", *args.variants, "--devices", str(n), "--batch", str(batch),
               "--steps", str(steps), "--allocators", allocator, "--platform", args.platform]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        line = [s for s in out.stdout.splitlines() if s.startswith("RESULT ")]
        if out.returncode or not line:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        for res in json.loads(line[0][len("RESULT "):]):
            res["repeat"] = r
            runs.append(res)
            print(f"{res['variant']:15s} {allocator:7s} devices={n} "
                  f"median {res['median_ms']:7.0f} ms "
                  f"(min {res['min_ms']:.0f}, cpu {res['cpu_median_ms']:.0f}, page faults "
                  f"{res['page_faults_median']:.0f}; matmul "
                  f"{res['calibration_matmul_gflops_median']:.0f} GFLOP/s; "
                  f"load {res['loadavg_1min_median']:.1f})", flush=True)
    if args.torch:
        torch_ms.append(torch_reference(batch, steps, torch_device))
    summary = {}
    for variant, allocator, n in itertools.product(args.variants, args.allocators, devices):
        sel = [r for r in runs
               if r["variant"] == variant and r["devices"] == n and r["allocator"] == allocator]
        med = statistics.median(x for r in sel for x in r["times_ms"])
        gf = statistics.median(r["calibration_matmul_gflops_median"] for r in sel)
        cpu = statistics.median(r["cpu_median_ms"] for r in sel)
        flops = sel[0]["xla_flops_per_step"]
        name = variant if allocator == "default" else f"{variant}+{allocator}"
        summary[f"{name}/{n}dev"] = {
            "page_faults_per_step": statistics.median(r["page_faults_median"] for r in sel),
            "median_ms": round(med, 1),
            "process_cpu_median_ms": round(cpu, 1),
            "fraction_of_100ms_limit": round(LIMIT_MS / med, 3),
            "calibration_matmul_gflops": round(gf, 1),
            # the time the step's FLOPs would take at the matmul rate measured alongside:
            "fraction_of_calibrated_limit": (
                round(flops / (gf * 1e9) * 1e3 / med, 3) if flops else None),
        }
        if torch_ms:
            summary[f"{name}/{n}dev"]["speedup_over_pytorch"] = round(statistics.median(torch_ms) / med, 2)
    best = min(summary, key=lambda k: summary[k]["median_ms"])
    by_devices = {}
    for n in devices:
        keys = [k for k in summary if k.endswith(f"/{n}dev")]
        by_devices[n] = min(summary[k]["median_ms"] for k in keys)
    result = {
        "benchmark": "FNO training step (prior noise, epsilon DSM loss, gradient, Adam update)",
        "config": {"depth": 4, "modes": 14, "width": 32, "projection": 128, "batch": batch,
                   "grid": [32, 32], "dtype": "float32", "quick": args.quick,
                   "platform": args.platform,
                   "allocators": args.allocators,
                   "steps_per_process": steps, "processes_per_config": repeats},
        "conditions": {
            "machine": platform.platform(), "cpu_count": os.cpu_count(),
            "note": "CPU shared with other processes. The variants run interleaved in one process "
                    "per device count and allocator, so a changing load affects them alike; the "
                    "calibration matmul rate (2048^3, ~135 GFLOP/s when idle) measured between rounds shows "
                    "how much of the machine the benchmark had.",
        },
        "targets_ms": {"reference_pytorch_median": 850, "straightforward_equinox_port": "1200-1450",
                       "target": 425, "limit_at_135_gflops": LIMIT_MS},
        "pytorch_reference_ms": torch_ms or None,
        "summary": summary,
        "fastest": best,
        "fastest_device_count": min(by_devices, key=by_devices.get),
        "runs": runs,
    }
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"fastest: {best}; wrote {path}")


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(ROOT))
    main()
