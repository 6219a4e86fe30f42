"""The machine's calibration: a float32 2048 x 2048 matmul's rate, measured beside every timing so
that times taken on machines (or loads) of different speed can be compared and scaled."""

import statistics
import time


def matmul_gflops(repeats: int = 5) -> float:
    """The median rate, in GFLOP/s, of `repeats` float32 2048 x 2048 matmuls (jitted, after one
    warm-up call)."""
    import jax
    import jax.random as jr

    a = jr.normal(jr.key(3), (2048, 2048))
    matmul = jax.jit(lambda x: x @ x)
    matmul(a).block_until_ready()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a).block_until_ready()
        rates.append(2 * 2048**3 / (time.perf_counter() - start) / 1e9)
    return float(statistics.median(rates))
