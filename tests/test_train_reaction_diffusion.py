"""The reaction_diffusion experiment's pieces: the pseudo-spectral FitzHugh–Nagumo solver against
exact solutions, its generator's cache and checksum, and the report's statistics on fields whose
spectrum, mean, variance and correlation are known."""

import json
import logging
from typing import final

import diffrax
import hydra
import jax.numpy as jnp
import numpy as np
import pytest

from train.data import FitzHughNagumo, GeneratedSource, reaction_diffusion_fields, solve_reaction_diffusion
from train.data.reaction_diffusion import AbstractReactionDiffusion, dealiasing_mask
from train.data.source import FieldResampler
from train.reaction_diffusion_report import compare, field_statistics, shell_power
from train.training import run


def compose(*overrides):
    with hydra.initialize_config_module("train.configs", version_base=None):
        return hydra.compose("config", overrides=["+exp=reaction_diffusion", *overrides])


@final
class PureDiffusion(AbstractReactionDiffusion):
    diffusion: tuple[float, float] = (1e-2, 3e-3)
    length: float = 2.0

    def reaction(self, y):
        return jnp.zeros_like(y)


def grid_points(n):
    return np.meshgrid(np.arange(n) / n, np.arange(n) / n, indexing="ij")


def test_pure_diffusion_of_a_fourier_mode_decays_exactly():
    """Without reaction, the mode k of the unit torus is the wavenumber 2 pi k / L on the square
    of side L: it decays as exp(-D (2 pi |k| / L)^2 t), per channel with its own D."""
    n, t = 12, 2.0
    x, y = grid_points(n)
    mode = np.cos(2 * np.pi * (3 * x + 2 * y)) + 0.5 * np.sin(2 * np.pi * (-1 * x + 3 * y))
    y0 = jnp.asarray(np.stack([mode, 2 * mode]), jnp.float32)
    out = np.asarray(solve_reaction_diffusion(PureDiffusion(), y0, t, dt=1.0, segment=1.0, solver=diffrax.Euler()))
    system = PureDiffusion()
    wavenumber = 2 * np.pi / system.length
    for c, (scale, d) in enumerate(zip((1.0, 2.0), system.diffusion)):
        exact = scale * (np.exp(-d * wavenumber**2 * 13 * t) * np.cos(2 * np.pi * (3 * x + 2 * y))
                         + 0.5 * np.exp(-d * wavenumber**2 * 10 * t) * np.sin(2 * np.pi * (-1 * x + 3 * y)))
        np.testing.assert_allclose(out[c], exact, atol=2e-6 * scale)
    assert np.exp(-system.diffusion[0] * wavenumber**2 * 13 * t) < 0.1  # a visible decay was checked


@final
class LinearCoupling(AbstractReactionDiffusion):
    diffusion: tuple[float, float] = (2e-2, 5e-3)
    length: float = 2.0

    def reaction(self, y):
        return jnp.stack([0.3 * y[0] - 0.8 * y[1], 0.6 * y[0] - 0.2 * y[1]])


def test_diffusion_and_a_coupling_reaction_together_follow_the_exact_modes():
    """With the linear reaction $R(y) = A y$ each Fourier mode follows $\\hat y_k(t) =
    e^{(A - \\Lambda_k) t} \\hat y_k(0)$: the integrating factor and the reaction must combine right
    for modes whose diffusion is fast beside the reaction."""
    from scipy.linalg import expm

    n, t = 12, 2.0
    x, y = grid_points(n)
    a = np.array([[0.3, -0.8], [0.6, -0.2]])
    system = LinearCoupling()
    wavenumber = 2 * np.pi / system.length
    exact = np.zeros((2, n, n))
    y0 = np.zeros((2, n, n))
    for (k1, k2), start in (((3, 2), (1.0, 0.5)), ((1, 0), (-0.5, 1.0))):
        wave = np.cos(2 * np.pi * (k1 * x + k2 * y))
        y0 += np.asarray(start)[:, None, None] * wave
        decay = np.diag(np.asarray(system.diffusion) * wavenumber**2 * (k1**2 + k2**2))
        exact += (expm((a - decay) * t) @ np.asarray(start))[:, None, None] * wave
    out = np.asarray(solve_reaction_diffusion(system, jnp.asarray(y0, jnp.float32), t, dt=0.05, segment=1.0))
    np.testing.assert_allclose(out, exact, atol=2e-5)
    assert np.abs(exact - y0).max() > 0.3  # the modes moved


def rk4(f, y, t, steps):
    h = t / steps
    for _ in range(steps):
        k1 = f(y)
        k2 = f(y + h / 2 * k1)
        k3 = f(y + h / 2 * k2)
        k4 = f(y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return y


def test_constant_state_follows_the_reaction_ode():
    """A spatially constant (u, v) feels no diffusion: it follows u' = u - u^3 - k - v, v' = u - v
    (a float64 RK4 with 2000 steps as the reference)."""
    system = FitzHughNagumo(k=0.05)
    start = np.array([0.9, -0.4])
    y0 = jnp.asarray(np.broadcast_to(start[:, None, None], (2, 8, 8)), jnp.float32)
    out = np.asarray(solve_reaction_diffusion(system, y0, 2.0, dt=0.05, segment=1.0))
    exact = rk4(lambda y: np.array([y[0] - y[0] ** 3 - 0.05 - y[1], y[0] - y[1]]), start, 2.0, 2000)
    assert np.abs(exact - start).max() > 0.3  # the state moved
    np.testing.assert_allclose(out, np.broadcast_to(exact[:, None, None], out.shape), atol=2e-5)


def test_solver_refuses_bad_times():
    y0 = jnp.zeros((2, 8, 8))
    with pytest.raises(ValueError, match="multiple"):
        solve_reaction_diffusion(FitzHughNagumo(), y0, 1.0, dt=0.3)
    with pytest.raises(ValueError, match="segment"):
        solve_reaction_diffusion(FitzHughNagumo(d_u=10.0, d_v=10.0), y0, 1.0, dt=0.5)


def test_generator_fields_cache_and_refuses_a_corrupted_file(tmp_path, caplog):
    """Generated fields are deterministic, dealiased (no mode with |k_i| >= n/3) and of the asked
    shape; the cache reads them back, and a corrupted cache file is refused by its checksum and
    generated again."""
    params = {"t_end": 0.5, "dt": 0.25, "segment": 0.5}
    source = GeneratedSource(name="rd", generator="fitzhugh_nagumo", params=params, count=3, native_grid=(12, 12),
                             channels=2, seed=4, cache_dir=tmp_path)
    fields = source.fields()
    assert fields.shape == (3, 2, 12, 12) and fields.dtype == np.float32
    np.testing.assert_array_equal(fields, reaction_diffusion_fields(3, (12, 12), 2, 4, **params))
    coefficients = np.fft.rfft2(fields, norm="forward")
    assert np.abs(coefficients * (1 - np.asarray(dealiasing_mask((12, 12))))).max() < 1e-6
    assert np.abs(coefficients).max() > 0.05
    path = source.cache_path()
    raw = bytearray(path.read_bytes())
    raw[-4:] = b"\x00\x00\xc0\x7f"  # the last value becomes a NaN: a corrupted cache
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="train.data"):
        again = source.fields()
    assert "corrupt" in caplog.text and "SHA-256" in caplog.text
    np.testing.assert_array_equal(again, fields)
    np.testing.assert_array_equal(np.load(path), fields)  # written anew
    with pytest.raises(ValueError, match="2-channel"):
        reaction_diffusion_fields(1, (8, 8), 1, 0, **params)


def test_shell_power_of_known_modes():
    """cos(2 pi 3 x) puts (1/2)^2 on each of the modes (+-3, 0); sin(2 pi (4 x + 3 y)) (1/2)^2 on
    +-(4, 3): the shells 3 and 5 hold that power divided by their number of modes; a constant c
    puts c^2 on the shell 0."""
    n = 16
    x, y = grid_points(n)
    fields = np.stack([np.stack([np.cos(2 * np.pi * 3 * x) + 0.7 * np.sin(2 * np.pi * (4 * x + 3 * y)),
                                 np.full((n, n), 0.3)])] * 2)
    power = shell_power(fields)
    modes = np.zeros(power.shape[1], int)
    for a in range(-n // 2, n // 2):
        for b in range(-n // 2, n // 2):
            modes[int(np.rint(np.hypot(a, b)))] += 1
    expected = np.zeros_like(power)
    expected[0, 3] = 2 * 0.25 / modes[3]
    expected[0, 5] = 2 * 0.7**2 * 0.25 / modes[5]
    expected[1, 0] = 0.09
    np.testing.assert_allclose(power, expected, atol=1e-12)


def test_field_statistics_and_compare_on_known_values():
    """Four fields u = m(x) + a z, v = m' + b (cos th z + sin th w) with orthogonal +-1 vectors z, w:
    unbiased variances 4a^2/3 and 4b^2/3, correlation cos th, means the spatial averages of m, m'."""
    n, a, b, theta = 8, 0.5, 2.0, 0.6
    x, _ = grid_points(n)
    z = np.array([1.0, -1.0, 1.0, -1.0])[:, None, None]
    w = np.array([1.0, 1.0, -1.0, -1.0])[:, None, None]
    u = 0.2 + np.cos(2 * np.pi * x) + a * z
    v = -0.1 + b * (np.cos(theta) * z + np.sin(theta) * w) * np.ones((n, n))
    fields = np.stack([u, v], axis=1)
    stats = field_statistics(fields)
    np.testing.assert_allclose(stats["mean"], [0.2, -0.1], atol=1e-12)
    np.testing.assert_allclose(stats["variance"], [4 * a**2 / 3, 4 * b**2 / 3], rtol=1e-12)
    assert abs(stats["correlation"] - np.cos(theta)) < 1e-12
    # Twice some fields: four times the power on every shell and the variance, the same correlation.
    fields = np.random.default_rng(0).standard_normal((5, 2, n, n)) + 0.3
    result = compare(2 * fields, fields, top=3)
    np.testing.assert_allclose(result["relative_error"], 3.0, rtol=1e-12)
    np.testing.assert_allclose(result["variance_relative_error"], [3.0, 3.0], rtol=1e-12)
    np.testing.assert_allclose(result["mean_difference"], field_statistics(fields)["mean"], atol=1e-12)
    assert abs(result["correlation_difference"]) < 1e-12 and result["shells"] == [1, 2, 3]
    banded = compare(2 * fields, fields, top=3, band=1)
    np.testing.assert_allclose(banded["mean_relative_error_in_band"], 3.0, rtol=1e-12)
    np.testing.assert_allclose(banded["power_fraction_beyond_band"], banded["reference_power_fraction_beyond_band"])
    # A field of the shell 1 only has no power beyond the band 1; one of the shell 3 only, all of it.
    x, y = grid_points(n)
    pair = np.stack([np.stack([np.cos(2 * np.pi * x), np.cos(2 * np.pi * 3 * y)])] * 2)
    pair[1] *= 2
    np.testing.assert_allclose(compare(pair, pair, top=3, band=1)["power_fraction_beyond_band"], [0.0, 1.0], atol=1e-12)


def test_report_refuses_other_data_and_miscounted_grids():
    from train.config import ConfigError
    from train.config.programs import validate

    with pytest.raises(ConfigError, match="data.generator=fitzhugh_nagumo"):
        validate(compose("data.generator=gaussian_fields"))
    with pytest.raises(ConfigError, match="train.report.grid_samples"):
        validate(compose("train.report.grid_samples=[8,8]"))
    with pytest.raises(ConfigError, match=r"data.native_grid: .* square 2D grid, got \[128, 64\]"):
        validate(compose("data.native_grid=[128,64]"))


def test_tiny_reaction_diffusion_run_reports_against_its_held_out_fields(tmp_path):
    """A tiny run of the reaction_diffusion experiment (simulated on 16², trained on 8²) and its
    report: the held-out fields' spectra and statistics are those of the fields simulated again here
    (the same on 32², where the report interpolates them: every mode the data hold is kept), the
    held-out halves' baseline is `compare` of the halves it names, and the shells, bands and counts
    are the config's."""
    from sdeflow.metrics.power_spectrum import resolved_shells

    params = {"t_end": 0.5, "dt": 0.25, "segment": 0.5}
    run_dir = tmp_path / "run"
    cfg = compose(
        f"train.run_dir={run_dir}", f"data.cache_dir={tmp_path / 'cache'}", "data.count=24", "data.seed=3",
        "data.train_range=[0,16]", "data.holdout_range=[16,24]", "data.native_grid=[16,16]",
        *(f"data.params.{k}={v}" for k, v in params.items()),
        "model.width=4", "model.modes=3", "model.depth=1", "model.projection=8", "model.time_features=8",
        "model.time_dim=8", "model.groups=2", "train.batch_size=8", "train.levels=[{grid:8,steps:3}]",
        "train.log_every=1", "train.ckpt_every=3", "optim.warmup_steps=1", "sampler.steps=2",
        "train.report.grids=[16,32]", "train.report.grid_samples=[6,2]", "train.report.batch_size=4",
    )
    run(cfg, progress_bar=False)
    report = json.loads((run_dir / "reaction_diffusion.json").read_text())
    holdout = reaction_diffusion_fields(24, (16, 16), 2, 3, **params)[16:]
    assert report["step"] == 3 and report["heldout_fields"] == 8 and report["native_grid"] == [16, 16]
    assert report["channels"] == ["u", "v"] and report["data_band"] == 5  # |k_i| < 16/3 complete to shell 5
    trained = resolved_shells((8, 8))  # 3: the shells the training grid holds
    for n, count in ((16, 6), (32, 2)):
        entry = report["grids"][str(n)]
        assert entry["num_samples"] == count and entry["shells"] == [1, 2, 3, 4, 5] and entry["band"] == trained
        # the reference: the held-out fields simulated again, on 32² interpolated (same coefficients)
        np.testing.assert_allclose(entry["reference_power"], shell_power(holdout)[:, 1:6], rtol=1e-4)
        expected = field_statistics(holdout)
        np.testing.assert_allclose(entry["reference_statistics"]["mean"], expected["mean"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(entry["reference_statistics"]["variance"], expected["variance"], rtol=1e-4)
        assert entry["reference_statistics"]["correlation"] == pytest.approx(expected["correlation"], rel=1e-4)
        # the baseline: the first min(count, 4) held-out fields against the last 4
        m = min(count, 4)
        assert entry["baseline"]["counts"] == [m, 4]
        reference = FieldResampler(native_grid=(16, 16), grid=(n, n))(holdout)
        baseline = compare(reference[:m], reference[4:], 5, trained)
        for key in ("mean_relative_error", "mean_relative_error_in_band", "relative_error", "mean_difference",
                    "variance_relative_error"):
            np.testing.assert_allclose(entry["baseline"][key], baseline[key], rtol=1e-4, atol=1e-7)
        assert entry["baseline"]["correlation_difference"] == pytest.approx(baseline["correlation_difference"], abs=1e-6)
        # the samples against it: errors of their own numbers, means over the shells the report names
        power, error = np.asarray(entry["power"]), np.asarray(entry["relative_error"])
        assert power.shape == (2, 5) and np.all(np.isfinite(power)) and np.all(power >= 0)
        np.testing.assert_allclose(error, np.abs(power / np.asarray(entry["reference_power"]) - 1), rtol=1e-9)
        np.testing.assert_allclose(entry["mean_relative_error_in_band"], error[:, :trained].mean(axis=1), rtol=1e-9)
        assert -1 <= entry["statistics"]["correlation"] <= 1 and min(entry["statistics"]["variance"]) >= 0
        assert all(0 <= f <= 1 for f in entry["power_fraction_beyond_band"])
        assert (run_dir / f"reaction_diffusion_{n}.png").stat().st_size > 1000
    assert (run_dir / "reaction_diffusion_spectra.png").stat().st_size > 1000
