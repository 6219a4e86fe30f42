"""A convolution network inside a sampler's loop against the same network outside one.

Samplers run the network inside `lax.while_loop`/`scan` (diffrax's loop). XLA on CPU runs a
channels-first (`NCHW`) convolution there far slower than outside a loop, where the same layout is
fast; a channels-last (`NHWC`) convolution runs at one speed in both. The UNet's convolutions
(`nets.CircularConv`) are computed channels-last for that reason. This benchmark times, per call:

- one 3x3 convolution (16 channels, 32², batch 36), channels-first and channels-last, in a
  `fori_loop` of 50 and unrolled 50 times;
- the `ddpm_mnist` UNet (16-32-32 channels, attention at 8²) with `nets.CircularConv` and with
  `equinox.nn.Conv` (channels-first) in its place, batch 36, in a `fori_loop` of 10 and unrolled.

Run `python -m benchmarks.bench_conv_in_loop`; JSON goes to `benchmarks/results/conv_in_loop.json`.
"""

import argparse
import json
import os
import pathlib
import sys
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]


def per_call_ms(make_body, x, calls: int) -> dict:
    """Milliseconds per call of `body = make_body()` applied `calls` times in a `fori_loop` and
    unrolled (both jitted; median of 3 runs after a compiling one)."""
    import statistics

    import jax

    body = make_body()
    looped = jax.jit(lambda x: jax.lax.fori_loop(0, calls, lambda i, y: body(y), x))

    def unrolled(x):
        for _ in range(calls):
            x = body(x)
        return x

    out = {}
    for name, fn in (("loop", looped), ("unrolled", jax.jit(unrolled))):
        fn(x).block_until_ready()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn(x).block_until_ready()
            times.append(time.perf_counter() - start)
        out[name] = 1000 * statistics.median(times) / calls
    out["loop_over_unrolled"] = out["loop"] / out["unrolled"]
    return out


def with_equinox_convs(unet):
    """The same UNet with every `CircularConv` replaced by `equinox.nn.Conv` (channels-first)
    holding the same weights."""
    import equinox as eqx
    import jax

    from nets.circular_conv import CircularConv

    def swap(m):
        if not isinstance(m, CircularConv):
            return m
        dim, kernel = m.weight.ndim - 2, m.weight.shape[-1]
        conv = eqx.nn.Conv(dim, m.weight.shape[1], m.weight.shape[0], kernel, stride=m.stride,
                           padding=kernel // 2, padding_mode="CIRCULAR", key=jax.random.key(0))
        return eqx.tree_at(lambda c: (c.weight, c.bias), conv, (m.weight, m.bias.reshape(conv.bias.shape)))

    return jax.tree.map(swap, unet, is_leaf=lambda m: isinstance(m, CircularConv))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "conv_in_loop.json"))
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import jax.random as jr

    sys.path.insert(0, str(ROOT))  # (run as a module or as a script)
    import nets
    from benchmarks.calibration import matmul_gflops

    before = matmul_gflops()
    batch, channels, n = 36, 16, 32
    w = 0.05 * jr.normal(jr.key(0), (channels, channels, 3, 3))
    x = jr.normal(jr.key(1), (batch, channels, n, n))

    def first():
        return lambda y: 0.5 * jax.lax.conv_general_dilated(
            jnp.pad(y, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="wrap"), w, (1, 1), "VALID",
            dimension_numbers=("NCHW", "OIHW", "NCHW"))

    def last():
        wl = jnp.transpose(w, (2, 3, 1, 0))
        return lambda y: 0.5 * jax.lax.conv_general_dilated(
            jnp.pad(y, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="wrap"), wl, (1, 1), "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    result = {
        "conv_3x3_channels_first_ms": per_call_ms(first, x, 50),
        "conv_3x3_channels_last_ms": per_call_ms(last, jnp.transpose(x, (0, 2, 3, 1)), 50),
    }
    unet = nets.UNet(1, 1, channels=16, multipliers=(1, 2, 2), attention_levels=(2,), key=jr.key(2))
    u = jr.normal(jr.key(3), (batch, 1, n, n))
    t = jnp.full((batch,), 0.5)
    for name, model in (("unet_circular_conv_ms", unet), ("unet_equinox_conv_ms", with_equinox_convs(unet))):
        result[name] = per_call_ms(lambda model=model: (lambda y: y + 0.01 * model.batched(t, y)), u, 10)
    result["calibration_gflops"] = {"before": before, "after": matmul_gflops()}
    result["loadavg_1min"] = os.getloadavg()[0]
    result["devices"] = [str(d) for d in jax.devices()]
    path = pathlib.Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
