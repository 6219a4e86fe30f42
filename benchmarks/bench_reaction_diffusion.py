"""Generation speed of the reaction_diffusion experiment's data: FitzHugh–Nagumo fields at 128².

Times `train.data.reaction_diffusion_fields` with the experiment's parameters
(`train/configs/exp/reaction_diffusion.yaml`) on `--count` fields (after one compiling chunk), and a
calibration float32 2048x2048 matmul before and after, with the load average: the generation of
the experiment's `data.count` fields takes about count x seconds_per_field. Also the accuracy of
the default step: the largest and the RMS difference, relative to the fields' RMS, from a run with
Tsit5 at a fifth of the step on the first `--accuracy` fields.

    python benchmarks/bench_reaction_diffusion.py [--count 128] [--out benchmarks/results/reaction_diffusion.json]
"""

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.calibration import matmul_gflops  # noqa: E402  (run as a module or as a script)


def main() -> None:
    from train.data import reaction_diffusion_fields

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--accuracy", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reaction_diffusion.json"))
    args = parser.parse_args()
    exp = yaml.safe_load((ROOT / "train" / "configs" / "exp" / "reaction_diffusion.yaml").read_text())
    params, grid = exp["data"]["params"], tuple(exp["data"]["native_grid"])
    before, load_before = matmul_gflops(), os.getloadavg()[0]
    reaction_diffusion_fields(64, grid, 2, 1, **params)  # compiles
    t0 = time.perf_counter()
    fields = reaction_diffusion_fields(args.count, grid, 2, 0, **params)
    seconds = time.perf_counter() - t0
    after, load_after = matmul_gflops(), os.getloadavg()[0]
    fine = reaction_diffusion_fields(args.accuracy, grid, 2, 0, **{**params, "solver": "tsit5", "dt": params["dt"] / 5})
    rms = float(jnp.sqrt(jnp.mean(fine**2)))
    result = {
        "grid": list(grid), "params": params, "count": args.count,
        "seconds": seconds, "seconds_per_field": seconds / args.count,
        "experiment_count": exp["data"]["count"],
        "experiment_generation_s_estimate": seconds / args.count * exp["data"]["count"],
        "calibration_matmul_gflops": [before, after], "loadavg_1min": [load_before, load_after],
        "accuracy_fields": args.accuracy,
        "max_difference_vs_tsit5_dt_over_5": float(np.abs(fields[: args.accuracy] - fine).max()) / rms,
        "rms_difference_vs_tsit5_dt_over_5": float(np.sqrt(np.mean((fields[: args.accuracy] - fine) ** 2))) / rms,
        "jax": jax.__version__, "backend": jax.default_backend(),
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
