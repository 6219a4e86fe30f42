"""Sampling and evaluation (train.build.make_sampler, train.sampling, train.evaluation, train.mnist_classifier)
on small inputs."""

import dataclasses
import json
import math
import types

import equinox as eqx
import hydra
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from sdeflow import metrics, samplers
from sdeflow.parameterisation import Epsilon
from sdeflow.priors import Matern
from sdeflow.sde import VPSDE
from train import mnist_classifier as clf
from train.build import make_sampler, sampler_fields
from train.config import SamplerConfig
from train.data import MnistSource
from train.evaluation import Reference, evaluate, evaluation_config, shared_sample_grid, write_evaluation
from train.sampling import draw, sampler_tag


def compose(name, *overrides):
    with hydra.initialize_config_module("train.configs", version_base=None):
        return hydra.compose(name, overrides=list(overrides))


def test_make_sampler_from_config_fields():
    cfg = compose("sample")
    assert isinstance(make_sampler(cfg.sampler), samplers.ReverseSDE) and cfg.sampler.steps == 200
    ode = make_sampler({"name": "ode", "steps": None, "solver": "tsit5", "rtol": 1e-2, "atol": 1e-2})
    assert isinstance(ode, samplers.ProbabilityFlow) and ode.num_steps is None and ode.rtol == 1e-2
    assert isinstance(make_sampler({"name": "ddim", "steps": 20}), samplers.DDIM)
    pc = make_sampler({"name": "pc", "steps": 20, "corrector_steps": 2})
    assert isinstance(pc, samplers.PredictorCorrector) and pc.corrector_steps == 2
    assert sampler_tag({"name": "ode", "solver": "tsit5", "steps": None, "rtol": 1e-3}) == "ode_tsit5_adaptive_tol0.001"
    with pytest.raises(Exception, match="langevin"):  # the schema refuses a name it does not know
        make_sampler({"name": "langevin", "steps": 10})
    log = make_sampler({"name": "ode", "steps": None, "variables": "log_sigma", "spacing": "log_snr"})
    assert log.variables == samplers.LogNoiseLevel() and log.spacing == samplers.LogSNRSpacing()
    assert (sampler_tag({"name": "ode", "steps": None, "rtol": 0.06, "variables": "sigma", "t_end": 0.01})
            == "ode_tsit5_adaptive_tol0.06_sigma_tend0.01")
    with pytest.raises(Exception, match="variables"):
        make_sampler({"name": "ode", "steps": None, "variables": "x"})


def test_make_sampler_coarse_to_fine():
    spec = {"name": "euler_maruyama", "steps": 100, "denoise": True, "coarse_grid": 32, "switch_time": 0.1}
    ml = make_sampler(spec)
    assert isinstance(ml, samplers.MultilevelSampler) and ml.coarse_grid == (32, 32) and ml.switch_time == 0.1
    assert (ml.coarse.num_steps, ml.fine.num_steps) == (90, 10)
    assert not ml.coarse.denoise and ml.fine.denoise and ml.denoise
    assert sampler_tag(spec) == "euler_maruyama_100_from32at0.1"
    ode = make_sampler({"name": "ode", "steps": None, "coarse_grid": 16, "switch_time": 0.3})
    assert ode.coarse.num_steps is None and ode.fine.num_steps is None
    assert make_sampler(spec, dim=1).coarse_grid == (32,)  # one size per axis of the data
    for field, value in (("switch_time", 1.0), ("coarse_grid", 2), ("steps", 1)):
        checked = OmegaConf.to_object(sampler_fields(dict(spec, **{field: value})))
        assert isinstance(checked, SamplerConfig)
        with pytest.raises(ValueError, match=f"sampler.{field}"):
            checked.check("sampler", 1e-3, 1.0, [64])


def test_draw_coarse_to_fine_counts_both_phases():
    sde = VPSDE(Matern(2, 2.0, 2 * math.pi))
    sampler = make_sampler({"name": "euler_maruyama", "steps": 10, "denoise": True, "coarse_grid": 8,
                            "switch_time": 0.3})
    x, n = draw(lambda t, u: jnp.zeros_like(u), sde, Epsilon(), sampler, jax.random.key(0), (1, 16, 16), 3, 3)
    assert x.shape == (3, 1, 16, 16) and np.all(n == 11) and np.all(np.isfinite(x))


DATA = {"name": "mnist", "split": "t10k", "train_range": [0, 8000], "holdout_range": [8000, 8800], "root": None,
        "download": False, "smoothing": 0.6}
SMALL = {"steps": 150, "channels": [8, 16], "width": 32}  # a small classifier, quick to train


@pytest.fixture(scope="module")
def trained_classifier(tmp_path_factory):
    source = MnistSource(**{k: v for k, v in DATA.items() if k != "name"})
    holdout = source.load("holdout")
    split = clf.holdout_split(len(holdout), True)
    folder = tmp_path_factory.mktemp("classifier")
    model, info = clf.train_and_save(source, holdout, split, folder, steps=150, channels=(8, 16), width=32)
    return source, folder, model, info


def test_classifier_learns_held_out_digits_and_round_trips(trained_classifier):
    source, folder, model, info = trained_classifier
    assert info["holdout_range"] == [8000, 8800] and info["split_seed"] == clf.SPLIT_SEED
    # A small net, 150 steps on 400 digits: far above chance (0.1) on the other 400 (measured 0.87).
    assert info["reference_accuracy"] > 0.7
    loaded, loaded_info = clf.load(folder)
    digits = MnistSource(split="t10k", train_range=(0, 8000), holdout_range=(9000, 9016), download=False)
    images = digits.load("holdout").values
    fields = digits.to_functions(images, 32)
    assert np.allclose(clf.features(model, fields), clf.features(loaded, fields))
    # Fields on another grid are resampled to the classifier's 32-grid (band-limited: same features).
    fine = digits.to_functions(images, 64)
    assert np.allclose(clf.features(model, fine), clf.features(model, fields), atol=1e-3)
    assert loaded_info == info


def test_classifier_is_the_channels_first_network():
    """The channels-last convolutions and the reshaped max-pool compute the network its weights
    describe: `eqx.nn.Conv2d` (channels first) and `eqx.nn.MaxPool2d`, to float32 round-off, with
    the same gradients."""
    model = clf.Classifier((4, 8), 16, key=jax.random.key(0))
    pool = eqx.nn.MaxPool2d(2, 2)

    def reference(m, x):
        h = pool(jax.nn.relu(m.conv1(x)))
        h = pool(jax.nn.relu(m.conv2(h)))
        return m.head(jax.nn.relu(m.dense(h.reshape(-1))))

    x = jax.random.normal(jax.random.key(1), (5, 1, 32, 32))
    np.testing.assert_allclose(jax.vmap(model)(x), jax.vmap(lambda u: reference(model, u))(x), atol=1e-5)

    def loss(m, f):
        return jnp.sum(jax.vmap(lambda u: f(m, u))(x) ** 2)

    got = eqx.filter_grad(loss)(model, lambda m, u: m(u))
    want = eqx.filter_grad(loss)(model, reference)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_classifier_cache_is_keyed_by_every_setting(trained_classifier, tmp_path):
    source, folder, _, info = trained_classifier
    split = clf.holdout_split(800, True)
    base = clf.settings(source, 150, 0, (8, 16), 32)
    assert {k: info[k] for k in base} == base
    folders = {clf.default_folder(base)}
    for change in ({"steps": 151}, {"seed": 1}, {"channels": [8, 8]}, {"width": 16}, {"smoothing": 0.0},
                   {"holdout_range": [8000, 8801]}, {"split": "train"}, {"layout": "channels_first"}):
        folders.add(clf.default_folder(dict(base, **change)))
    assert len(folders) == 9
    # The settings are read off the source: another blur or split gives other settings (a settings()
    # that left one out would reuse a classifier trained on other digits).
    assert set(base) == {"source", "split", "smoothing", "holdout_range", "split_seed", "steps", "seed", "channels",
                         "width", "layout"}
    for change in ({"smoothing": 0.0}, {"split": "train"}, {"holdout_range": (8000, 8801)}):
        other = dataclasses.replace(source, **change)
        assert clf.default_folder(clf.settings(other, 150, 0, (8, 16), 32)) != clf.default_folder(base), change
    # A classifier trained otherwise is refused by name, not silently reused.
    spec = OmegaConf.create(dict(SMALL, dir=str(folder), seed=3))
    with pytest.raises(ValueError, match=r"differs from the one asked for in \['seed'\]"):
        clf.load_or_train(source, source.load("holdout"), split, spec)
    spec.seed = 0
    assert clf.load_or_train(source, source.load("holdout"), split, spec)[1] == info
    assert clf.classifier_folder(source, OmegaConf.create(dict(SMALL, dir=None, seed=0))) == clf.default_folder(base)


def test_holdout_split_is_a_random_partition():
    """Half for the classifier, the rest for reference in two halves: disjoint, covering every
    held-out example, and not contiguous blocks (data files are ordered, e.g. by writer)."""
    split = clf.holdout_split(800, True)
    parts = [split.classifier, split.reference_a, split.reference_b]
    assert [len(p) for p in parts] == [400, 200, 200]
    assert sorted(np.concatenate(parts).tolist()) == list(range(800))
    np.testing.assert_array_equal(np.sort(np.concatenate(parts[1:])), split.reference)
    assert all(np.ptp(p) > 700 for p in parts)  # spread over the whole range, not a block
    assert clf.holdout_split(800, False).classifier is None and len(clf.holdout_split(800, False).reference) == 800
    np.testing.assert_array_equal(clf.holdout_split(800, True).reference, split.reference)  # seeded


def test_the_real_baseline_draws_as_many_examples_of_half_a_at_random():
    """The real side of a baseline beside n samples: n distinct examples of half a (all of it if
    it has fewer), seeded, and drawn from the whole half, not its first n positions (the files are
    ordered by writer)."""
    split = clf.holdout_split(2000, True)
    drawn = split.baseline(250)
    assert len(set(drawn)) == 250 and set(drawn) <= set(split.reference_a)
    assert np.max(drawn) > split.reference_a[400] and np.min(drawn) < split.reference_a[100]
    np.testing.assert_array_equal(drawn, clf.holdout_split(2000, True).baseline(250))
    np.testing.assert_array_equal(split.baseline(1000), split.reference_a)
    with pytest.raises(ValueError, match="at least one example"):
        split.baseline(0)


def test_evaluate_writes_every_metric(trained_classifier, tmp_path):
    _, folder, model, _ = trained_classifier
    run_cfg = OmegaConf.create({"data": DATA, "loss": {"parameterisation": "epsilon"}})
    cfg = compose(
        "evaluate", "run_dir=none", "grid=16", "num_samples=24", "batch_size=12", f"classifier.dir={folder}",
        "classifier.steps=150", "classifier.channels=[8,16]", "classifier.width=32",
        "sampler.steps=8", "likelihood.num_digits=2", "likelihood.rtol=1e-2", "likelihood.atol=1e-2",
        "metrics_block_size=64", "sliced_projections=16", "elbo.num_examples=16", "elbo.repeats=1",
    )
    sde = VPSDE(Matern(2, 2.0, 2 * math.pi))
    result = evaluate(lambda t, x: jnp.zeros_like(x), sde, run_cfg, cfg, step=0)
    json.dumps(result)  # JSON-ready
    for key in ("riesz_mmd", "riesz_mmd_real", "sliced_wasserstein", "frechet_distance", "frechet_distance_real",
                "vendi_samples", "vendi_reference", "power_spectrum_error", "classifier_confidence",
                "classifier_confidence_real"):
        assert math.isfinite(result[key]), key
    # Fraction f above 0.9 and mean top probability c of the same fields: 0.9 f <= c <= f + 0.9 (1 - f).
    for suffix in ("", "_real"):
        f, c = result["classifier_confident_fraction" + suffix], result["classifier_confidence" + suffix]
        assert 0 <= f <= 1 and 0.9 * f - 1e-6 <= c <= f + 0.9 * (1 - f) + 1e-6, suffix
    # The real fraction is that of the digits the samples are compared with (the reference's half
    # b), computed here from the logits in one vmap.
    reference = Reference(run_cfg, 16)
    logits = jax.vmap(lambda u: model(clf.to_native_grid(u)))(jnp.asarray(reference.half_b))
    top = np.asarray(jax.nn.softmax(logits)).max(1)
    assert result["classifier_confident_fraction_real"] == pytest.approx(np.mean(top > 0.9))
    assert result["class_histogram_real"] == np.bincount(np.asarray(logits).argmax(1), minlength=10).tolist()
    # The small classifier (0.87 accurate) is confident on about half of the real digits (measured
    # 0.53) and fooled by the zero model's fields (measured 1.0): the two fractions are not swapped.
    assert result["classifier_confident_fraction_real"] > 0.3
    assert result["classifier_confident_fraction"] > result["classifier_confident_fraction_real"] + 0.2
    # Their standard errors: the binomial one of the fraction over the 24 samples, and a bootstrap
    # one of the Fréchet distance (positive, smaller than the distance between these far-apart sets).
    f = result["classifier_confident_fraction"]
    assert result["classifier_confident_fraction_se"] == pytest.approx(math.sqrt(f * (1 - f) / 24))
    assert 0 < result["frechet_distance_se"] < result["frechet_distance"]
    # An untrained (zero-noise) model is far from the digits; two halves of real digits are close.
    assert result["riesz_mmd"] > 5 * abs(result["riesz_mmd_real"])
    assert result["sliced_wasserstein"] > 10 * result["sliced_wasserstein_real"]
    assert result["power_spectrum_error"] > 10 * result["power_spectrum_error_real"]
    # The spectrum error is the mean absolute log ratio of the two reported spectra over the shells
    # both resolve (7 on the 16-grid), the samples' against the reference's.
    spectra = result["power_spectrum"]
    ratio = np.log(np.asarray(spectra["samples"])[1:8]) - np.log(np.asarray(spectra["reference"])[1:8])
    assert result["power_spectrum_error"] == pytest.approx(float(np.mean(np.abs(ratio))), rel=1e-4)
    # The samples' Vendi score is theirs: at most their count, and not the reference's.
    assert 1 <= result["vendi_samples"] <= 24 and result["vendi_samples"] != pytest.approx(result["vendi_reference"])
    assert result["mean_network_evaluations"] == 9  # 8 steps + the denoising step
    # The samples are compared with half b of the reference digits (t10k[8000:8400] less the
    # classifier's half), and the real-vs-real baselines compare as many digits of half a (24, drawn
    # at random) with it: neither side trained the classifier, and the counts are the samples'.
    assert result["num_reference"] == 200 and result["num_baseline"] == 24 and sum(result["class_histogram"]) == 24
    # The sets built here from the split itself, not from `Reference` (a Reference that compared a
    # half with itself made every baseline ~0 and passed the one-sided checks above).
    split = clf.holdout_split(800, True)
    assert not set(split.reference_a) & set(split.reference_b)
    assert sorted([*split.reference_a, *split.reference_b]) == sorted(split.reference)
    source = MnistSource(**{k: v for k, v in DATA.items() if k != "name"})
    to_fields = source.converter((16, 16))
    values = source.load("holdout").values
    half_a, half_b = to_fields(values[split.baseline(24)]), to_fields(values[split.reference_b])
    f_a, f_b = clf.features(model, half_a), clf.features(model, half_b)
    assert result["frechet_distance_real"] == pytest.approx(float(metrics.frechet_distance(f_a, f_b)), rel=1e-4)
    assert result["vendi_reference"] == pytest.approx(float(metrics.vendi_score(f_a)), rel=1e-4)
    # Against all 200 of half a the baseline is another number (the distance's bias falls with the count).
    f_all = clf.features(model, to_fields(values[split.reference_a]))
    assert float(metrics.frechet_distance(f_all, f_b)) < 0.8 * result["frechet_distance_real"]
    assert result["frechet_distance_real"] > 1.0
    assert result["riesz_mmd_real"] == pytest.approx(float(metrics.riesz_mmd(half_a, half_b, block_size=64)),
                                                     rel=1e-4, abs=1e-7)
    assert result["likelihood"]["grid"] == [16, 16] and result["likelihood"]["dimensions"] == 15 * 15
    assert result["likelihood"]["bits_per_dim_8bit_dequantised"] is None  # grid 16 is not the pixel grid
    assert math.isfinite(result["likelihood"]["bits_per_dim"])
    # The ELBO of a dsm-trained (here: zero) network: Gaussian decoder off the pixel grid, its
    # terms adding up to the total, the first 2 digits those of the likelihood.
    elbo = result["elbo"]["16"]
    assert elbo["decoder"] == "GaussianDecoder" and elbo["dimensions"] == 15 * 15 and elbo["num_examples"] == 16
    assert sum(elbo["terms_bits_per_dim"].values()) == pytest.approx(elbo["bits_per_dim"], rel=1e-6)
    assert math.isfinite(elbo["bits_per_dim_first_2"])


def test_end_of_run_evaluation_uses_the_chosen_weights(trained_classifier, tmp_path):
    """`train.run` ends with `write_evaluation`: `configs/evaluate.yaml` under the run's
    `train.evaluation` overrides, for the EMA or the raw network, into `<run_dir>/evaluation.json`."""
    _, folder, _, _ = trained_classifier
    overrides = {"grid": 16, "num_samples": 12, "batch_size": 12, "classifier": dict(SMALL, dir=str(folder)),
                 "sampler": {"steps": 4}, "likelihood": {"num_digits": 0}, "metrics_block_size": 64,
                 "sliced_projections": 8, "weights": "raw", "elbo": {"num_examples": 0}}
    run_cfg = OmegaConf.create({"data": DATA, "loss": {"parameterisation": "epsilon"},
                                "train": {"evaluation": overrides}})
    eval_cfg = evaluation_config(run_cfg, tmp_path)
    assert eval_cfg.run_dir == str(tmp_path) and eval_cfg.grid == 16 and eval_cfg.sampler.name == "euler_maruyama"
    assert eval_cfg.likelihood.rtol == compose("evaluate").likelihood.rtol  # unset fields keep their defaults
    # The EMA network is poisoned: only the raw one gives finite samples.
    state = types.SimpleNamespace(ema={"network": lambda t, x: jnp.full_like(x, jnp.nan)},
                                  parts={"network": lambda t, x: jnp.zeros_like(x)})
    sde = VPSDE(Matern(2, 2.0, 2 * math.pi))
    received = []
    path = write_evaluation(state, sde, run_cfg, tmp_path, 7, received.append)
    result = json.loads(path.read_text())
    assert path == tmp_path / "evaluation.json"
    # the samples it drew, as drawn again here the way the evaluation draws them
    samples, _ = draw(state.parts["network"], sde, Epsilon(), make_sampler(eval_cfg.sampler, 2),
                      jax.random.key(eval_cfg.seed), (1, 16, 16), 12, 12)
    assert len(received) == 1 and received[0].shape == (12, 1, 16, 16) and np.all(np.isfinite(samples))
    np.testing.assert_array_equal(received[0], samples)
    assert (result["step"], result["grid"], result["num_samples"], result["weights"]) == (7, 16, 12, "raw")
    assert result["mean_network_evaluations"] == 5 and math.isfinite(result["riesz_mmd"])
    assert result["likelihood"] == {"skipped": "likelihood.num_digits is 0"}
    assert result["elbo"] == {"skipped": "elbo.num_examples is 0"}


def test_the_evaluation_gives_the_png_of_its_grid_only_when_it_draws_the_same_samples(tmp_path):
    """multilevel_mnist's evaluation draws 250 samples on the 32-grid with its PNGs' sampler and
    EMA weights, so the 32-grid PNG shows the first 36 of them; any difference keeps both draws, as
    do PNGs during training (their series keeps its keys)."""
    def shared(*overrides):
        return shared_sample_grid(compose("config", "+exp=multilevel_mnist", *overrides), tmp_path)

    assert shared() == 32
    for override in ("train.evaluate=false", "train.sample_every=100", "train.evaluation.sampler.snr=0.3", "sampler.steps=40",
                     "train.evaluation.weights=raw", "train.evaluation.sample_grid=64", "train.sample_grids=[64,128]",
                     "train.evaluation.num_samples=30", "train.evaluation.sampler.t_end=0.01"):
        assert shared(override) is None, override
    assert shared("train.evaluation.grid=64") == 64


def test_draw_pads_the_last_batch():
    sde = VPSDE(Matern(2, 2.0, 2 * math.pi))
    x, n = draw(lambda t, u: jnp.zeros_like(u), sde, Epsilon(), samplers.DDIM(3), jax.random.key(0),
                (1, 12, 12), 5, 2)
    assert x.shape == (5, 1, 12, 12) and np.all(n == 3)
    with pytest.raises(ValueError, match="sampler.t_end"):
        draw(lambda t, u: u, sde, Epsilon(), samplers.DDIM(3), jax.random.key(0), (1, 12, 12), 5, 2, t_end=2.0)


def test_evaluate_stops_on_missing_data_before_sampling(tmp_path):
    """Missing digits stop `evaluate` with the loader's message before any sample is drawn."""
    from train.data import MnistError

    data = dict(DATA, root=str(tmp_path))
    run_cfg = OmegaConf.create({"data": data, "loss": {"parameterisation": "epsilon"}})
    cfg = compose("evaluate", "run_dir=none", "grid=16", "num_samples=4", "batch_size=4", "sampler.steps=2")
    calls = []

    def model(t, x):
        calls.append(t)
        return jnp.zeros_like(x)

    with pytest.raises(MnistError, match=str(tmp_path)):
        evaluate(model, VPSDE(Matern(2, 2.0, 2 * math.pi)), run_cfg, cfg, step=0)
    assert calls == []  # not even traced


def test_pixel_bins_exist_only_for_8_bit_values_on_their_native_grid_without_blur():
    """`pixel_bin_width` names the quantisation bin exactly when the functions' values are the
    8-bit levels $-1 + j \\cdot 2/255$: MNIST without blur on its padded 32-grid, and nowhere else."""
    unblurred = MnistSource(**{**{k: v for k, v in DATA.items() if k != "name"}, "smoothing": 0.0})
    blurred = MnistSource(**{k: v for k, v in DATA.items() if k != "name"})
    values = unblurred.load("holdout").values[:16]
    width = unblurred.pixel_bin_width(values, 32)
    assert width == pytest.approx(2 / 255)
    levels = (unblurred.to_functions(values, 32) + 1) / width
    assert np.abs(levels - np.round(levels)).max() < 1e-3 and levels.min() > -1e-3 and levels.max() < 255 + 1e-3
    # Blurred, resampled to another grid, or already floats: no bins (and blurred values are off the levels).
    assert blurred.pixel_bin_width(values, 32) is None
    off = (blurred.to_functions(values, 32) + 1) / width
    assert np.abs(off - np.round(off)).max() > 0.1
    assert unblurred.pixel_bin_width(values, 16) is None and unblurred.pixel_bin_width(values, (32, 16)) is None
    assert unblurred.pixel_bin_width(values.astype(np.float32), 32) is None


def test_likelihoods_of_8_bit_values_are_those_of_dequantised_values_with_the_bin_bound():
    """With a bin width, each field's likelihood is that of the field plus one bin of uniform
    noise, and the discrete bound adds $\\log_2(1/w)$ bits per dimension; without one, the
    fields themselves and no bound."""
    from sdeflow import likelihood
    from train.evaluation import likelihoods

    source = MnistSource(**{k: v for k, v in DATA.items() if k != "name"})
    values = source.load("holdout").values[:2]
    fields = source.to_functions(values, 16)  # the grid only keeps the test quick
    width = 0.25  # coarse bins, so that dequantising moves the likelihood well beyond round-off
    cfg = OmegaConf.create({"seed": 3, "likelihood": {"num_digits": 2, "num_probes": 2, "rtol": 1e-3, "atol": 1e-3}})
    sde = VPSDE(Matern(2, 2.0, 2 * math.pi))

    def model(t, x):
        return 0.3 * x  # an epsilon predictor whose probability-flow ODE has a non-trivial divergence

    quantised = likelihoods(model, sde, Epsilon(), fields, cfg, width)
    plain = likelihoods(model, sde, Epsilon(), fields, cfg, None)
    assert plain["bits_per_dim_8bit_dequantised"] is None and "why_no_8bit_value" in plain
    assert quantised["bits_per_dim_8bit_dequantised"] == pytest.approx(
        quantised["bits_per_dim"] + math.log2(1 / width), rel=1e-6)
    # Each digit's draw: its key split into the dequantisation's and the probes'.
    score = samplers.PreconditionedScore(model, sde, Epsilon())
    expected, undequantised = [], []
    for i, key in enumerate(jax.random.split(jax.random.key(cfg.seed + 1), 2)):
        key_deq, key_probe = jax.random.split(key)
        x = jnp.asarray(fields[i])
        noise = likelihood.uniform_dequantise(key_deq, x, levels=9) - x  # 9 levels on [-1, 1]: bins of 0.25
        assert 0 <= float(noise.min()) and float(noise.max()) < width
        for point, out in ((x + noise, expected), (x, undequantised)):
            out.append(float(likelihood.log_likelihood(score, point, key_probe, num_probes=2, rtol=1e-3,
                                                       atol=1e-3).log_likelihood))
    dims = quantised["dimensions"]
    assert quantised["nats_per_dim"] == pytest.approx(-np.mean(expected) / dims, rel=1e-7)
    assert plain["nats_per_dim"] == pytest.approx(-np.mean(undequantised) / dims, rel=1e-7)
    # (the bins move the digits' log-likelihoods by about 0.02 nats of about 700: 30 times float32's step)
    assert abs(np.mean(expected) - np.mean(undequantised)) > 0.005
