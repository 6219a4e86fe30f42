"""Every sampler fed the exact score of Gaussian data reproduces the data law (the oracle test).

Data $X_0 \\sim N(\\mu, C_{data})$ with $C_{data}$ a Matérn covariance (other parameters than the
prior's), diffused by a VP SDE with a Matérn prior: $X_t \\sim N(m \\mu, m^2 C_{data} + s^2 C)$ is
diagonal in Fourier, so the exact score is known (`GaussianOracle`). Samples at $t_0$ must have
the mean $m(t_0) \\mu$ and per-mode variances $v_k(t_0)$. This file checks a 16-point grid;
`test_samplers_resolution.py` checks the same law on a 33-point grid.

Monte Carlo tolerance with n = 2000 samples: a per-mode sample variance has relative standard
deviation $\\sqrt{2/n} = 3.2\\%$ (real modes) or $\\sqrt{1/n} = 2.2\\%$ (complex modes); each mode
must lie within 15% (about 5 sigma), and the mean relative error over the modes within 5% (its MC
standard deviation is below 1%, the rest is room for the discretisation bias of each sampler).
The mean must be within 5 standard errors at every grid point.
"""

import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sdeflow
from sdeflow import samplers
from sdeflow.parameterisation import Epsilon
from sdeflow.priors import Matern
from sdeflow.sde import AbstractSchedule, CosineSchedule, LinearSchedule, OUBridge, VPSDE


NUM_SAMPLES = 2000
# Compile for speed of compilation: these programs are tiny and run once.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def gaussian_oracle(n: int, schedule: AbstractSchedule | None = None) -> samplers.GaussianOracle:
    sde = VPSDE(Matern(1, 1.5, 2 * np.pi), schedule or LinearSchedule())
    x = sdeflow.coordinates((n,))
    mean = jnp.sin(2 * jnp.pi * x) + 0.5 * jnp.cos(4 * jnp.pi * x)
    return samplers.GaussianOracle(sde, mean, Matern(1, 2.0, 8.0, variance=0.5))


def compiled(fn, *args):
    """`jax.jit(fn)` compiled for `args` with cheap XLA optimisation (tests run tiny programs once)."""
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)


SAMPLERS = {
    "euler_maruyama": samplers.EulerMaruyama(200),
    "shark": samplers.ReverseSDE(diffrax.ShARK(), 50, spacing=samplers.LogSNRSpacing()),
    "pf_heun": samplers.ProbabilityFlow(diffrax.Heun(), 50, spacing=samplers.LogSNRSpacing()),
    # The modes near the grid's cut-off have amplitudes ~1e-3: atol must be below them.
    "pf_tsit5": samplers.ProbabilityFlow(rtol=1e-5, atol=1e-5),
    "ddim": samplers.DDIM(200, spacing=samplers.LogSNRSpacing()),
    "predictor_corrector": samplers.PredictorCorrector(100, corrector_steps=1),
}




def draw_samples(score, sampler, n: int):
    """`NUM_SAMPLES` draws on the 1-d `n`-grid."""
    keys = jr.split(jr.key(n), NUM_SAMPLES)
    return compiled(jax.vmap(lambda k: sampler.sample(score, k, (1, n))), keys)(keys)


def mode_variance_ratios(x, oracle) -> np.ndarray:
    """Sample variance over the law's variance $v_k(t_0)$ of every kept mode of 1-d samples `x`."""
    n = x.shape[-1]
    v = np.asarray(oracle.variances(oracle.sde.t0, (n,)))
    kept = np.asarray(sdeflow.kept_modes((n,)))
    coefficients = np.fft.rfft(x[:, 0], axis=-1) / n
    variance = np.mean(np.abs(coefficients - coefficients.mean(0)) ** 2, 0)
    return (variance / np.where(kept, v, 1.0))[kept]


def check_gaussian_law(name: str, n: int, schedule: AbstractSchedule | None = None,
                       sampler: samplers.AbstractSampler | None = None,
                       oracle: samplers.GaussianOracle | None = None):
    oracle = oracle or gaussian_oracle(n, schedule)
    sampler = sampler or SAMPLERS[name]
    sde = oracle.sde
    result = draw_samples(samplers.PreconditionedScore(oracle, sde, Epsilon()), sampler, n)
    x = np.asarray(result.samples)
    # Mean: within 5 standard errors at every point (pointwise variance = sum over all k of v_k).
    v = np.asarray(oracle.variances(sde.t0, (n,)))
    kept = np.asarray(sdeflow.kept_modes((n,)))
    weights = np.where(np.arange(v.shape[0]) == 0, 1.0, 2.0)
    stderr = np.sqrt(np.sum(np.where(kept, weights * v, 0.0)) / NUM_SAMPLES)
    error = np.max(np.abs(x.mean(0) - np.asarray(oracle.marginal_mean(sde.t0))))
    assert error < 5 * stderr, (name, error, stderr)
    # Per-mode variances.
    coefficients = np.fft.rfft(x[:, 0], axis=-1) / n
    ratio = mode_variance_ratios(x, oracle)
    assert np.all(np.abs(ratio - 1) < 0.15), (name, ratio)
    assert abs(np.mean(ratio) - 1) < 0.05, (name, np.mean(ratio))
    # The samples live on the kept modes (no Nyquist content on even grids).
    assert np.max(np.abs(coefficients[:, ~kept]), initial=0.0) < 1e-4
    assert np.all(np.asarray(result.num_evaluations) > 0)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_sampler_reproduces_gaussian_law(name):
    check_gaussian_law(name, 16)


def test_cosine_schedule_from_t1_one():
    """The cosine schedule all the way from $t_1 = 1$: its $\\beta$ falls to 0 at $t = 1$, where
    float32's cos(pi/2) < 0 once made $\beta(1) < 0$ and every sample NaN. Measured per-mode
    variance ratios 0.98-1.07 (mean 1.02) with 100 uniform Euler–Maruyama steps, although
    $\\beta$ peaks near 500 just before $t = 1$."""
    check_gaussian_law("euler_maruyama_cosine", 16, CosineSchedule(), samplers.EulerMaruyama(100))


def bridge_oracle(n: int) -> samplers.GaussianOracle:
    """Gaussian data under the Ornstein–Uhlenbeck bridge toward a target $x^* \\ne 0$ with a
    non-zero mean mode, far from the data's mean: a sampler that dropped the shift $b(t)$ of the
    mean, or started from $N(0, s^2 C)$ instead of $N(x^*, s^2 C)$, would miss the data's mean."""
    x = sdeflow.coordinates((n,))
    target = 1.5 + 0.8 * jnp.cos(2 * jnp.pi * x)
    sde = OUBridge(Matern(1, 1.5, 2 * np.pi), target=target, theta=4.0, eta=2.0 ** 1.5)
    mean = jnp.sin(2 * jnp.pi * x) - 0.5
    return samplers.GaussianOracle(sde, mean, Matern(1, 2.0, 8.0, variance=0.5))


@pytest.mark.parametrize("name", ["euler_maruyama", "pf_heun", "ddim"])
def test_bridge_toward_a_target_reproduces_gaussian_law(name):
    """Started from the bridge's terminal law $N(x^* + e^{-\\theta}(\\mu - x^*)..., s(1)^2 C)$ and
    driven by the exact score, every sampler ends at the data's law (mean and per-mode variance)."""
    check_gaussian_law(name, 16, oracle=bridge_oracle(16))


def test_bridge_reverse_marginals_at_every_time():
    """The reverse Euler–Maruyama chain of the bridge has the forward marginal law
    $N(m \\mu + (1 - m) x^*, m^2 C_{data} + s^2 C)$ at every saved time, not only at the end
    (a chain whose time labels were one step off would drift from it on the way down)."""
    n = 16
    oracle = bridge_oracle(n)
    sde = oracle.sde
    times = jnp.asarray([0.6, 0.3, 0.1, 0.03])
    score = samplers.PreconditionedScore(oracle, sde, Epsilon())
    keys = jr.split(jr.key(7), NUM_SAMPLES)
    sampler = samplers.EulerMaruyama(200)
    result = compiled(jax.vmap(lambda k: sampler.sample(score, k, (1, n), save_ts=times)), keys)(keys)
    saved = np.asarray(result.chain)  # (samples, times, 1, n)
    kept = np.asarray(sdeflow.kept_modes((n,)))
    for i, t in enumerate(np.asarray(times)):
        x = saved[:, i]
        v = np.asarray(oracle.variances(t, (n,)))
        weights = np.where(np.arange(v.shape[0]) == 0, 1.0, 2.0)
        stderr = np.sqrt(np.sum(np.where(kept, weights * v, 0.0)) / NUM_SAMPLES)
        error = np.max(np.abs(x.mean(0) - np.asarray(oracle.marginal_mean(t))))
        assert error < 5 * stderr, (t, error, stderr)
        coefficients = np.fft.rfft(x[:, 0], axis=-1) / n
        variance = np.mean(np.abs(coefficients - coefficients.mean(0)) ** 2, 0)
        ratio = (variance / np.where(kept, v, 1.0))[kept]
        assert np.all(np.abs(ratio - 1) < 0.15) and abs(np.mean(ratio) - 1) < 0.05, (t, ratio)


def test_langevin_steps_follow_their_exact_gaussian_chain():
    """The corrector's step on Gaussian data is, mode by mode, the linear chain
    $d \\leftarrow (1 - a_k) d + \\sqrt{2 \\delta \\lambda_k}\\, \\xi$ in the deviation $d$ from the mean,
    with $\\delta = 2 r^2 s(t)^2$ and $a_k = \\delta \\lambda_k / v_k(t)$: after $n$ steps from $x = 0$,
    its mean is $(1 - (1 - a_k)^n)$ times the law's and its variance $v_k (1 - (1 - a_k)^{2n}) /
    (1 - a_k / 2)$. 4000 chains match both (a corrector that dropped its drift, its noise, or took
    another step size would not)."""
    n, t, snr, steps, count = 16, 0.5, 0.3, 5, 4000
    oracle = gaussian_oracle(n)
    sde = oracle.sde
    score = samplers.PreconditionedScore(oracle, sde, Epsilon())

    def chain(key):
        def body(i, x):
            return samplers.langevin_step(score, jr.fold_in(key, i), t, x, snr)

        return jax.lax.fori_loop(0, steps, body, jnp.zeros((1, n)))

    x = np.asarray(compiled(jax.vmap(chain), jr.split(jr.key(3), count))(jr.split(jr.key(3), count)))
    _, s = sde.marginal(t)
    delta = 2 * (snr * float(s)) ** 2
    v = np.asarray(oracle.variances(t, (n,)))
    lam = np.asarray(sde.prior.eigenvalues((n,)))
    kept = np.asarray(sdeflow.kept_modes((n,)))
    v = np.where(kept, v, 1.0)  # the Nyquist mode of the even grid is not charged
    rho = 1 - delta * lam / v
    coefficients = np.fft.rfft(x[:, 0], axis=-1) / n
    target_mean = np.fft.rfft(np.asarray(oracle.marginal_mean(t))[0]) / n
    variance = np.mean(np.abs(coefficients - coefficients.mean(0)) ** 2, 0)
    expected_variance = v * (1 - rho ** (2 * steps)) / (1 - delta * lam / (2 * v))
    ratio = variance[kept] / expected_variance[kept]
    assert np.all(np.abs(ratio - 1) < 0.1), ratio
    mean_error = np.abs(coefficients.mean(0) - (1 - rho**steps) * target_mean)[kept]
    assert np.all(mean_error < 5 * np.sqrt(expected_variance[kept] / count)), mean_error
    # the chain has not converged on every mode: the step size is seen, not only the invariant law
    assert np.max(rho[kept] ** (2 * steps)) > 0.05
