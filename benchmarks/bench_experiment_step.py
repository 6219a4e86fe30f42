"""Training-step time of an experiment (default `ddpm_mnist`), with a calibration.

Builds the run's parts, loss, optimiser and step exactly as `train.run +exp=EXP` does (on
one CPU device, or `--devices 2`), times `--steps` steps on random batches of its shape after the
compilation, and measures a float32 2048 x 2048 matmul's GFLOP/s before and after, so the time can
be scaled to another machine or load. The steps of the experiment's default are sized from it.

With `--against 'MORE OVERRIDES'` a second step with those overrides added is built in the same
process and the two are timed alternately, so that the load of a shared VM affects both alike; the
JSON gives both medians and the median ratio of the paired steps.

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
    parser.add_argument("--against", default=None,
                        help="more overrides (one quoted string) for a second step built in the same "
                             "process and timed alternately with the first, e.g. --against "
                             "'train.stages.1.loss.consistency_examples=4' with --stage 1")
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

    def build_step(overrides: list[str]):
        """The stage's jitted step, its state after the first (compiling) step, the compile time,
        the batch shape and two random batches, for the experiment with `overrides`."""
        with hydra.initialize_config_module("train.configs", version_base=None):
            cfg = hydra.compose("config", overrides=[f"+exp={args.exp}", *overrides])
        run = validate(cfg)
        sde = build.build_sde(cfg)
        parts = build.build_parts(cfg, jr.key(0))
        stage = Stage(cfg, run, args.stage, sde, mesh)
        state = stage.start(parts, jr.key(1), mesh)
        channels, dim = build.dimensions(cfg)
        grid = run.train.stage_list()[args.stage].levels[0].grid
        shape = (cfg.train.batch_size, channels) + (grid,) * dim
        rng = np.random.default_rng(0)
        batches = [rng.uniform(-1, 1, shape).astype(np.float32) for _ in range(2)]
        t0 = time.perf_counter()
        state, loss = stage.step(state, shard_batch(batches[0], mesh))
        loss.block_until_ready()
        return {"step": stage.step, "state": state, "compile_s": time.perf_counter() - t0,
                "shape": shape, "batches": batches, "times": []}

    mesh = make_mesh(jax.devices()[: args.devices])
    variants = {"run": build_step(args.overrides)}
    if args.against is not None:
        variants["against"] = build_step(args.overrides + args.against.split())
    before = matmul_gflops()
    for i in range(3 if args.quick else args.steps):
        for variant in variants.values():  # alternated, so that a changing load affects all alike
            t0 = time.perf_counter()
            batch = shard_batch(variant["batches"][i % 2], mesh)
            variant["state"], loss = variant["step"](variant["state"], batch)
            loss.block_until_ready()
            variant["times"].append(1000 * (time.perf_counter() - t0))
    after = matmul_gflops()
    run_times = variants["run"]["times"]
    result = {
        "experiment": args.exp,
        "stage": args.stage,
        "overrides": args.overrides,
        "devices": args.devices,
        "allocator": args.allocator,
        "batch": variants["run"]["shape"],
        "compile_and_first_step_s": variants["run"]["compile_s"],
        "step_ms_median": statistics.median(run_times),
        "step_ms": run_times,
        "calibration_matmul_gflops_before": before,
        "calibration_matmul_gflops_after": after,
        "loadavg_1min": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if args.against is not None:
        against = variants["against"]["times"]
        result["against"] = {
            "overrides": args.against.split(),
            "compile_and_first_step_s": variants["against"]["compile_s"],
            "step_ms_median": statistics.median(against),
            "step_ms": against,
            "median_ratio_of_pairs": statistics.median(b / a for a, b in zip(run_times, against)),
        }
    out = ROOT / "benchmarks" / "results" / (f"{args.exp}.json" if args.stage == 0 else f"{args.exp}_stage{args.stage}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "step_ms"}, indent=2, default=str))


if __name__ == "__main__":
    main()
