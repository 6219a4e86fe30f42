"""The FNO training step of `bench_train_step.py`, written the way the PyTorch reference codes are.

The reference PyTorch implementation was quoted at a median of ~850 ms per step on this kind
of machine (four runs: 720 to 1010 ms). Machines of one kind differ from day to day (the
calibration matmul of `bench_train_step.py` has measured 71 to 197 GFLOP/s here), so this script
times a PyTorch step of the same configuration on the machine at hand, for a ratio measured under
the same conditions. It is our own PyTorch code in the style of those codes: `FNO2d` with
`SpectralConv2d` (`rfft2`, two weight blocks for the positive and negative first-axis modes,
`irfft2`), a 1x1 convolution beside it, GELU, a sinusoidal time embedding added in every block,
and a 128-channel projection; Matérn prior noise drawn in Fourier space; the epsilon loss of a VP
SDE; Adam. Configuration as in `bench_train_step.py`: 4 Fourier layers, 14 modes per axis, width
32, batch 128 at 32x32, float32, on all CPU threads (`torch.get_num_threads()`).

`--device cuda` runs it on the GPU (for `bench_train_step --platform cuda`). PyTorch is not a
dependency of sdeflow: `pip install torch==2.13.0`. Run `python -m benchmarks.bench_train_step_torch`;
JSON goes to `benchmarks/results/train_step_torch.json`.
"""

import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]


def build(torch, width: int, modes: int, depth: int, projection: int, time_dim: int):
    """The reference FNO; its forward makes every tensor on the device of its input."""
    nn = torch.nn

    class SpectralConv2d(nn.Module):
        def __init__(self, channels: int):
            super().__init__()
            scale = 1 / (channels * channels)
            shape = (channels, channels, modes, modes)
            self.weights1 = nn.Parameter(scale * torch.rand(*shape, dtype=torch.cfloat))
            self.weights2 = nn.Parameter(scale * torch.rand(*shape, dtype=torch.cfloat))

        def forward(self, x):
            b, c, n1, n2 = x.shape
            x_ft = torch.fft.rfft2(x)
            out = torch.zeros(b, c, n1, n2 // 2 + 1, dtype=torch.cfloat, device=x.device)
            out[:, :, :modes, :modes] = torch.einsum(
                "bixy,ioxy->boxy", x_ft[:, :, :modes, :modes], self.weights1)
            out[:, :, -modes:, :modes] = torch.einsum(
                "bixy,ioxy->boxy", x_ft[:, :, -modes:, :modes], self.weights2)
            return torch.fft.irfft2(out, s=(n1, n2))

    class FNO2d(nn.Module):
        def __init__(self):
            super().__init__()
            self.time = nn.Sequential(nn.Linear(32, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
            self.lift = nn.Linear(1 + 4, width)
            self.spectral = nn.ModuleList(SpectralConv2d(width) for _ in range(depth))
            self.pointwise = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(depth))
            self.inject = nn.ModuleList(nn.Linear(time_dim, width) for _ in range(depth))
            self.fc1 = nn.Linear(width, projection)
            self.fc2 = nn.Linear(projection, 1)

        def forward(self, t, x):
            b, _, n1, n2 = x.shape
            half = 16
            dev = x.device
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=dev) / (half - 1))
            angle = 1000.0 * t[:, None] * freqs
            emb = self.time(torch.cat([torch.sin(angle), torch.cos(angle)], dim=1))
            g1, g2 = torch.meshgrid(torch.arange(n1, device=dev) / n1,
                                    torch.arange(n2, device=dev) / n2, indexing="ij")
            coords = torch.stack([torch.cos(2 * math.pi * g1), torch.sin(2 * math.pi * g1),
                                  torch.cos(2 * math.pi * g2), torch.sin(2 * math.pi * g2)])
            h = torch.cat([x, coords.expand(b, 4, n1, n2)], dim=1).permute(0, 2, 3, 1)
            h = self.lift(h).permute(0, 3, 1, 2)
            for spectral, pointwise, inject in zip(self.spectral, self.pointwise, self.inject):
                h = spectral(h) + pointwise(h) + inject(emb)[:, :, None, None]
                h = nn.functional.gelu(h)
            h = h.permute(0, 2, 3, 1)
            return self.fc2(nn.functional.gelu(self.fc1(h))).permute(0, 3, 1, 2)

    return FNO2d()


def run(steps: int, batch: int, grid: int, device: str = "cpu") -> dict:
    import torch

    torch.manual_seed(0)
    model = build(torch, width=32, modes=14, depth=4, projection=128, time_dim=64).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    # Matérn prior (s = 2, tau = 2 pi as the JAX benchmark's default), noise drawn in Fourier space
    k1 = torch.fft.fftfreq(grid, 1 / grid, device=device)
    k2 = torch.fft.rfftfreq(grid, 1 / grid, device=device)
    lam = (4 * math.pi**2 + 4 * math.pi**2 * (k1[:, None] ** 2 + k2[None, :] ** 2)) ** -2.0
    sqrt_lam = (lam / lam.sum()).sqrt()
    x0 = 0.5 * torch.randn(batch, 1, grid, grid, device=device)
    beta_min, beta_max = 0.1, 20.0

    def step():
        t = 1e-3 + (1 - 1e-3) * torch.rand(batch, device=device)
        shape = (batch, 1, grid, grid // 2 + 1)
        xi = torch.complex(torch.randn(shape, device=device), torch.randn(shape, device=device))
        eps = torch.fft.irfft2(xi * sqrt_lam, s=(grid, grid), norm="forward") / math.sqrt(2)
        log_m = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
        m = torch.exp(log_m)[:, None, None, None]
        s = torch.sqrt(1 - torch.exp(2 * log_m))[:, None, None, None]
        loss = torch.mean((model(t, m * x0 + s * eps) - eps) ** 2)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return float(loss.detach())  # waits for the device

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times),
            "times_ms": [round(1e3 * x, 1) for x in times], "loss": loss,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "device": device,
            "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "loadavg_1min": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="batch 16, 2 steps")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_step_torch.json"))
    args = parser.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("PyTorch is not installed: pip install torch==2.13.0 (a CUDA build for --device cuda), then run again.")
    sys.path.insert(0, str(ROOT))
    from benchmarks.calibration import matmul_gflops  # JAX's float32 matmul, as every benchmark here

    batch, steps = (16, 2) if args.quick else (args.batch, args.steps)
    before = matmul_gflops()
    result = run(steps, batch, 32, args.device)
    result["calibration_matmul_gflops"] = [before, matmul_gflops()]
    result.update(config={"depth": 4, "modes": 14, "width": 32, "projection": 128, "batch": batch,
                          "grid": [32, 32], "dtype": "float32"},
                  machine=platform.platform(), cpu_count=os.cpu_count())
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"PyTorch FNO step: median {result['median_ms']:.0f} ms (min {result['min_ms']:.0f}), "
          f"{result['threads']} threads, load {result['loadavg_1min']:.1f}, calibration "
          f"{result['calibration_matmul_gflops'][0]:.0f} / {result['calibration_matmul_gflops'][1]:.0f} GFLOP/s; "
          f"wrote {path}")


if __name__ == "__main__":
    main()
