"""Training-step time of an experiment (default `ddpm_mnist`), with a calibration.

Builds the run's parts, loss, optimiser and step exactly as `train.run +exp=EXP` does (on
one CPU device, or `--devices 2`), times `--steps` steps on random batches of its shape after the
compilation, and measures a float32 2048 x 2048 matmul's GFLOP/s before and after, so the time can
be scaled to another machine or load. The steps of the experiment's default are sized from it.

Run `python -m benchmarks.bench_experiment_step --exp NAME [overrides]` (`--quick`: 3 steps); JSON
goes to `benchmarks/results/<NAME>.json`.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 timed steps")
    parser.add_argument("--exp", default="ddpm_mnist", help="the experiment (train/configs/exp/NAME.yaml)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps")
    parser.add_argument("--devices", type=int, default=1, help="CPU devices of the data mesh")
    parser.add_argument("--stage", type=int, default=0, help="the stage whose step is timed (0: the first)")
    parser.add_argument("--allocator", choices=("default", "retain"), default="retain",
                        help="retain: keep freed memory as the programs do (train.memory); default: glibc's malloc as it comes")
    parser.add_argument("overrides", nargs="*", help="hydra overrides of the run, e.g. train.batch_size=32")
    args = parser.parse_args()
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.devices}")
    sys.path.insert(0, str(ROOT))
    if args.allocator == "retain":  # before any import starts a thread, as in the programs
        from train.memory import retain_freed_memory
        retain_freed_memory()
    from benchmarks.calibration import matmul_gflops
    import hydra
    import jax
    import jax.random as jr
    import numpy as np

    from train import build
    from train.config import validate
    from train.step import make_mesh, shard_batch
    from train.training import Stage

    with hydra.initialize_config_module("train.configs", version_base=None):
        cfg = hydra.compose("config", overrides=[f"+exp={args.exp}", *args.overrides])
    run = validate(cfg)
    sde = build.build_sde(cfg)
    parts = build.build_parts(cfg, jr.key(0))
    mesh = make_mesh(jax.devices()[: args.devices])
    stage = Stage(cfg, run, args.stage, sde, mesh)
    step = stage.step
    state = stage.start(parts, jr.key(1), mesh)
    channels, dim = build.dimensions(cfg)
    grid = run.train.stage_list()[args.stage].levels[0].grid
    shape = (cfg.train.batch_size, channels) + (grid,) * dim
    rng = np.random.default_rng(0)
    batches = [shard_batch(rng.uniform(-1, 1, shape).astype(np.float32), mesh) for _ in range(2)]
    before = matmul_gflops()
    t0 = time.perf_counter()
    state, loss = step(state, batches[0])
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(3 if args.quick else args.steps):
        t0 = time.perf_counter()
        state, loss = step(state, shard_batch(np.asarray(batches[i % 2]), mesh))
        loss.block_until_ready()
        times.append(1000 * (time.perf_counter() - t0))
    after = matmul_gflops()
    result = {
        "experiment": args.exp,
        "stage": args.stage,
        "overrides": args.overrides,
        "devices": args.devices,
        "allocator": args.allocator,
        "batch": shape,
        "compile_and_first_step_s": compile_s,
        "step_ms_median": statistics.median(times),
        "step_ms": times,
        "calibration_matmul_gflops_before": before,
        "calibration_matmul_gflops_after": after,
        "loadavg_1min": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = ROOT / "benchmarks" / "results" / (f"{args.exp}.json" if args.stage == 0 else f"{args.exp}_stage{args.stage}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "step_ms"}, indent=2))


if __name__ == "__main__":
    main()
