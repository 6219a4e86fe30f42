"""A small CNN classifier of MNIST fields, whose penultimate features feed the Fréchet distance.

It must not have seen the digits the generative model trained on, nor the real digits the samples
are compared with: it trains on half of the data config's `holdout_range` and reports
its accuracy on the other half, the real reference set of `train.evaluate`, itself in two random
halves: samples are compared with half b, and the real-vs-real baselines compare as many examples
of half a with it, so neither side was seen by the classifier. The parts are drawn by a seeded
permutation (`holdout_split`): with the official
split (`data=mnist`) the held-out digits are train[50000:60000], on machines with only t10k
(`data=mnist_t10k`) t10k[8000:10000].

The classifier sees fields on the 32-grid (the digits' native grid, `train.data.NATIVE_GRID`);
samples from any grid are resampled spectrally to it first (`features`).

Saved as `<folder>/model.eqx` (equinox serialisation of the weights) and `<folder>/classifier.json`
(its `settings`: data, training and architecture, and its accuracy), by default in a folder of
the ignored `runs/` named by those settings, so a change of any of them trains a new one.

    python -m train.classifier [data=mnist_t10k] [classifier.steps=2000] [classifier.dir=...]
"""

import dataclasses
import hashlib
import json
import logging
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

import sdeflow

from .config.errors import ConfigError
from .data import NATIVE_GRID

logger = logging.getLogger("train.mnist_classifier")

GRID = NATIVE_GRID
LAYOUT = "channels_last"  # how the convolutions ran in training: it changes the trained weights' round-off


class Classifier(eqx.Module):
    """Two convolution blocks (3 x 3, ReLU, 2 x 2 max-pool) and two dense layers on a 32 x 32 field.

    `features(x)` is the penultimate layer (`width` ReLU units), `__call__(x)` the 10 logits.

    The convolutions hold `eqx.nn.Conv2d` weights but run channels-last (`NHWC`), and the
    max-pool takes the maximum of each 2 x 2 block by a reshape: on CPU, XLA runs the
    channels-first convolutions' gradients and the windowed max-pool's (a select-and-scatter)
    ~1.8x slower, and the forward values are the same to the bit.

    **Arguments:**

    - `channels`: convolution channels of the two blocks.
    - `width`: the number of features.
    - `key`: a JAX random key.
    """

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    dense: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, channels: tuple[int, int] = (32, 64), width: int = 128, *, key: PRNGKeyArray):
        k1, k2, k3, k4 = jr.split(key, 4)
        self.conv1 = eqx.nn.Conv2d(1, channels[0], 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(channels[0], channels[1], 3, padding=1, key=k2)
        self.dense = eqx.nn.Linear(channels[1] * (GRID // 4) ** 2, width, key=k3)
        self.head = eqx.nn.Linear(width, 10, key=k4)

    def features(self, x: Float[Array, "1 32 32"]) -> Float[Array, " width"]:
        """The penultimate-layer features of one field on the 32-grid."""
        h = jnp.moveaxis(x, 0, -1)  # (32, 32, 1): channels last
        h = _max_pool(jax.nn.relu(_conv_channels_last(self.conv1, h)))
        h = _max_pool(jax.nn.relu(_conv_channels_last(self.conv2, h)))
        return jax.nn.relu(self.dense(jnp.moveaxis(h, -1, 0).reshape(-1)))  # flattened channels first

    def __call__(self, x: Float[Array, "1 32 32"]) -> Float[Array, " 10"]:
        return self.head(self.features(x))


def _conv_channels_last(conv: eqx.nn.Conv2d, h: Float[Array, "n n c"]) -> Float[Array, "m m o"]:
    """`conv` (with its own stride, zero padding and dilation) of one channels-last field."""
    weight = jnp.transpose(conv.weight, (2, 3, 1, 0))  # (o, i, kh, kw) -> (kh, kw, i, o)
    y = jax.lax.conv_general_dilated(h[None], weight, conv.stride, conv.padding, rhs_dilation=conv.dilation,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y[0] + conv.bias.reshape(-1)


def _max_pool(h: Float[Array, "n n c"]) -> Float[Array, "m m c"]:
    """The maximum over each 2 x 2 block of a channels-last field."""
    n1, n2, c = h.shape
    return h.reshape(n1 // 2, 2, n2 // 2, 2, c).max(axis=(1, 3))


def to_native_grid(x: Float[Array, "1 *grid"]) -> Float[Array, "1 32 32"]:
    """A field on any grid resampled spectrally to the classifier's 32-grid."""
    return x if tuple(x.shape[1:]) == (GRID, GRID) else sdeflow.resample(x, (GRID, GRID))


def _in_batches(fn, fields: np.ndarray | jax.Array, batch_size: int) -> np.ndarray:
    """`fn` (vmapped over fields, jitted) applied batch by batch, as one NumPy array."""
    fn = eqx.filter_jit(jax.vmap(fn))
    return np.concatenate([np.asarray(fn(jnp.asarray(fields[i : i + batch_size])))
                           for i in range(0, len(fields), batch_size)])


def features(model: Classifier, fields: np.ndarray | jax.Array, batch_size: int = 500) -> np.ndarray:
    """Penultimate features of a set of fields on any grid, batch by batch (NumPy `(n, width)`)."""
    return _in_batches(lambda u: model.features(to_native_grid(u)), fields, batch_size)


def probabilities(model: Classifier, fields: np.ndarray | jax.Array, batch_size: int = 500) -> np.ndarray:
    """Softmax class probabilities of a set of fields on any grid, batch by batch (NumPy `(n, 10)`)."""
    return _in_batches(lambda u: jax.nn.softmax(model(to_native_grid(u))), fields, batch_size)


def accuracy(model: Classifier, fields: np.ndarray, labels: np.ndarray) -> float:
    """The fraction of correctly classified fields."""
    return float(np.mean(probabilities(model, fields).argmax(1) == labels))


SPLIT_SEED = 0
"""The seed of the permutation that splits the held-out examples (`holdout_split`)."""


@dataclasses.dataclass(frozen=True, eq=False)
class HoldoutSplit:
    """The parts of a data source's held-out examples, as sorted positions in them, drawn by a
    seeded permutation: data files are often ordered (MNIST's test digits come in blocks of the same
    writers, and two adjacent blocks of 500 differ by a Riesz MMD of 0.022 where two random halves
    differ by 0.0006 at most), so contiguous blocks would not be samples of one law.

    **Fields:**

    - `classifier`: the examples the classifier trains on (half of them), or `None` when the data
        have no classifier.
    - `reference`: the examples samples are compared with (the others).
    - `reference_a`, `reference_b`: the two halves of `reference`. Samples are compared with half
        b, and the real-vs-real baselines compare as many examples of half a (`baseline`) with it:
        examples neither of which trained the classifier, and counts equal to the samples'.
    """

    classifier: np.ndarray | None
    reference: np.ndarray
    reference_a: np.ndarray
    reference_b: np.ndarray
    seed: int = SPLIT_SEED

    def in_reference(self, positions: np.ndarray) -> np.ndarray:
        """Where held-out examples lie among the reference's.

        **Arguments:**

        - `positions`: sorted positions of reference examples among the held-out ones (e.g.
            `reference_b`, or `baseline(n)`).

        **Returns:**

        Their positions in `reference`, to index the reference's fields with.
        """
        return np.searchsorted(self.reference, positions)

    def baseline(self, count: int) -> np.ndarray:
        """The real side of a real-vs-real baseline beside `count` samples, which a metric whose
        estimate depends on the number of examples (the Fréchet distance, a power spectrum)
        compares with half b as it compares the samples.

        **Arguments:**

        - `count`: the number of samples, >= 1.

        **Returns:**

        `count` positions of half a (all of it if it has fewer), drawn at random (from the
        split's seed), sorted.
        """
        if count < 1:
            raise ValueError(f"a real-vs-real baseline needs at least one example, not {count}.")
        order = np.random.default_rng([self.seed, 1]).permutation(len(self.reference_a))
        return np.sort(self.reference_a[order[:count]])


def holdout_split(count: int, with_classifier: bool, seed: int = SPLIT_SEED) -> HoldoutSplit:
    """Split `count` held-out examples at random (seeded): half for a classifier (if any), the
    others for reference, themselves in two random halves."""
    order = np.random.default_rng(seed).permutation(count)
    start = count // 2 if with_classifier else 0
    if count - start < 2:
        raise ValueError(f"the held-out examples ({count}) are too few for a reference set in two halves.")
    middle = (start + count) // 2
    return HoldoutSplit(np.sort(order[:start]) if with_classifier else None, np.sort(order[start:]),
                        np.sort(order[start:middle]), np.sort(order[middle:]), seed)


def train_classifier(
    fields: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    channels: tuple[int, int] = (32, 64),
    width: int = 128,
) -> Classifier:
    """Train a `Classifier` with Adam on digits as fields on the 32-grid (as the data pipeline
    makes them), with random shifts by up to 2 pixels on the torus as augmentation.

    **Arguments:**

    - `fields`, `labels`: the training digits `(N, 1, 32, 32)` and labels `(N,)`.
    - `steps`, `batch_size`, `lr`, `seed`: the optimisation.
    - `channels`, `width`: the architecture.

    **Returns:**

    The trained classifier.
    """
    fields = jnp.asarray(fields)
    labels = jnp.asarray(labels, jnp.int32)
    key_model, key_train = jr.split(jr.key(seed))
    model = Classifier(tuple(channels), int(width), key=key_model)
    optimiser = optax.adam(lr)
    opt_state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))

    def loss_fn(model, x, y):
        logits = jax.vmap(model)(x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    @eqx.filter_jit
    def step(model, opt_state, key):
        k_idx, k_shift = jr.split(key)
        idx = jr.randint(k_idx, (batch_size,), 0, fields.shape[0])
        shifts = jr.randint(k_shift, (batch_size, 2), -2, 3)
        x = jax.vmap(lambda u, s: jnp.roll(u, (s[0], s[1]), axis=(1, 2)))(fields[idx], shifts)
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, x, labels[idx])
        updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), opt_state, loss

    for i, key in enumerate(jr.split(key_train, steps)):
        model, opt_state, loss = step(model, opt_state, key)
        if (i + 1) % 500 == 0:
            logger.info(f"classifier step {i + 1}/{steps}: loss {float(loss):.4f}")
    return model


def save(model: Classifier, folder: str | pathlib.Path, info: dict) -> None:
    """Save weights (`model.eqx`) and description (`classifier.json`) into `folder`."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    eqx.tree_serialise_leaves(folder / "model.eqx", model)
    (folder / "classifier.json").write_text(json.dumps(info, indent=2))


def load(folder: str | pathlib.Path) -> tuple[Classifier, dict]:
    """Load a classifier saved by `save`: `(model, info)`."""
    folder = pathlib.Path(folder)
    info_path = folder / "classifier.json"
    if not info_path.is_file() or not (folder / "model.eqx").is_file():
        raise FileNotFoundError(
            f"no classifier in {folder} (model.eqx and classifier.json); train one with "
            "`python -m train.classifier`."
        )
    info = json.loads(info_path.read_text())
    template = Classifier(tuple(info["channels"]), int(info["width"]), key=jr.key(0))
    return eqx.tree_deserialise_leaves(folder / "model.eqx", template), info


def settings(source, steps: int, seed: int, channels: tuple[int, int] = (32, 64), width: int = 128) -> dict:
    """Everything that changes a trained classifier: its data (source, split, the held-out range
    whose `holdout_split` half it trains on, blur), its training (steps, seed, the convolutions'
    layout) and its architecture."""
    return dict(
        source=source.name, split=str(source.split), smoothing=float(source.smoothing),
        holdout_range=[int(v) for v in source.holdout_range], split_seed=SPLIT_SEED, steps=int(steps),
        seed=int(seed), channels=list(channels), width=int(width), layout=LAYOUT,
    )


def default_folder(settings: dict) -> pathlib.Path:
    """`runs/classifier/<source>_<split>_<start>_<stop>_<hash>`: one folder per `settings`."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    start, stop = settings["holdout_range"]
    return pathlib.Path("runs") / "classifier" / f"{settings['source']}_{settings['split']}_{start}_{stop}_{digest}"


def train_and_save(source, holdout, split: HoldoutSplit, folder: str | pathlib.Path, *, steps: int = 2000,
                   seed: int = 0, channels: tuple[int, int] = (32, 64), width: int = 128) -> tuple[Classifier, dict]:
    """Train on `split.classifier` of the held-out examples `holdout` of `source`, measure the
    accuracy on `split.reference`, save into `folder`.

    **Returns:**

    `(model, info)`: the classifier and its description (its `settings`, accuracy, time).
    """
    to_fields = source.converter((GRID, GRID))
    train, reference = split.classifier, split.reference
    started = time.perf_counter()
    model = train_classifier(to_fields(holdout.values[train]), holdout.labels[train], steps=steps, seed=seed,
                             channels=channels, width=width)
    acc = accuracy(model, to_fields(holdout.values[reference]), holdout.labels[reference])
    info = dict(settings(source, steps, seed, channels, width), reference_accuracy=acc,
                train_seconds=time.perf_counter() - started)
    save(model, folder, info)
    logger.info(f"classifier saved in {folder}: accuracy {acc:.4f} on {len(reference)} held-out examples")
    return model, info


def classifier_folder(source, spec) -> pathlib.Path:
    """The folder of the classifier of the settings `spec` (as `load_or_train` takes them):
    `spec.dir`, else `default_folder` of those settings."""
    if spec.dir:
        return pathlib.Path(spec.dir)
    return default_folder(settings(source, spec.steps, spec.seed, tuple(spec.channels), int(spec.width)))


def load_or_train(source, holdout, split: HoldoutSplit, spec) -> tuple[Classifier, dict]:
    """The classifier of the settings `spec` (`train.config.ClassifierSettings`: `dir`, `steps`,
    `seed`, `channels`, `width`): loaded from `spec.dir` (default `default_folder`), trained and
    saved there first if missing. A classifier in `spec.dir` trained otherwise is refused."""
    arch = dict(channels=tuple(spec.channels), width=int(spec.width))
    wanted = settings(source, spec.steps, spec.seed, **arch)
    folder = classifier_folder(source, spec)
    try:
        model, info = load(folder)
    except FileNotFoundError:
        logger.info(f"training the evaluation classifier into {folder}")
        return train_and_save(source, holdout, split, folder, steps=spec.steps, seed=spec.seed, **arch)
    differing = sorted(k for k in wanted if info.get(k) != wanted[k])
    if differing:
        raise ConfigError(
            f"the classifier in {folder} differs from the one asked for in {differing} "
            f"({ {k: info.get(k) for k in differing} } against { {k: wanted[k] for k in differing} }); "
            "use another classifier.dir, or none for the default folder of these settings."
        )
    return model, info
