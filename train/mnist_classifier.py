"""A small CNN classifier of MNIST fields, whose penultimate features feed the Fréchet distance.

It must not have seen the digits the generative model trained on, nor the real digits the samples
are compared with: it trains on the first half of the data config's `holdout_range` and reports
its accuracy on the second half, which `train.evaluate` uses as the real reference set
(`classifier_split`). With the official split (`data=mnist`) that is train[50000:55000] for the
classifier and train[55000:60000] for reference; on machines with only t10k (`data=mnist_t10k`)
t10k[8000:9000] and t10k[9000:10000].

The classifier sees fields on the 32-grid (the digits' native grid, `train.data.NATIVE_GRID`);
samples from any grid are resampled spectrally to it first (`features`).

Saved as `<folder>/model.eqx` (equinox serialisation of the weights) and `<folder>/classifier.json`
(the architecture's fields, data ranges, smoothing and accuracy), under the ignored `runs/` folder.

    python -m train.classifier [data=mnist_t10k] [classifier.steps=2000] [classifier.dir=...]
"""

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

from .data import NATIVE_GRID, images_to_functions, load_mnist


logger = logging.getLogger("train.mnist_classifier")

GRID = NATIVE_GRID


class Classifier(eqx.Module):
    """Two convolution blocks (3 x 3, ReLU, 2 x 2 max-pool) and two dense layers on a 32 x 32 field.

    `features(x)` is the penultimate layer (`width` ReLU units), `__call__(x)` the 10 logits.

    **Arguments:**

    - `channels`: convolution channels of the two blocks.
    - `width`: the number of features.
    - `key`: a JAX random key.
    """

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    dense: eqx.nn.Linear
    head: eqx.nn.Linear
    pool: eqx.nn.MaxPool2d

    def __init__(self, channels: tuple[int, int] = (32, 64), width: int = 128, *, key: PRNGKeyArray):
        k1, k2, k3, k4 = jr.split(key, 4)
        self.conv1 = eqx.nn.Conv2d(1, channels[0], 3, padding=1, key=k1)
        self.conv2 = eqx.nn.Conv2d(channels[0], channels[1], 3, padding=1, key=k2)
        self.pool = eqx.nn.MaxPool2d(2, 2)
        self.dense = eqx.nn.Linear(channels[1] * (GRID // 4) ** 2, width, key=k3)
        self.head = eqx.nn.Linear(width, 10, key=k4)

    def features(self, x: Float[Array, "1 32 32"]) -> Float[Array, " width"]:
        """The penultimate-layer features of one field on the 32-grid."""
        h = self.pool(jax.nn.relu(self.conv1(x)))
        h = self.pool(jax.nn.relu(self.conv2(h)))
        return jax.nn.relu(self.dense(h.reshape(-1)))

    def __call__(self, x: Float[Array, "1 32 32"]) -> Float[Array, " 10"]:
        return self.head(self.features(x))


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


def classifier_split(holdout_range) -> tuple[tuple[int, int], tuple[int, int]]:
    """The holdout range split in two halves: (classifier training range, reference range)."""
    start, stop = int(holdout_range[0]), int(holdout_range[1])
    if stop - start < 2:
        raise ValueError(f"the holdout range {[start, stop]} needs at least two digits.")
    middle = (start + stop) // 2
    return (start, middle), (middle, stop)


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    smoothing: float,
    steps: int = 2000,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    channels: tuple[int, int] = (32, 64),
    width: int = 128,
) -> Classifier:
    """Train a `Classifier` with Adam on uint8 MNIST images (as 32-grid fields, random shifts by up
    to 2 pixels on the torus as augmentation).

    **Arguments:**

    - `images`, `labels`: the training digits `(N, 28, 28)` and labels `(N,)`.
    - `smoothing`: the blur of the data pipeline (the classifier sees the data as the model does).
    - `steps`, `batch_size`, `lr`, `seed`: the optimisation.
    - `channels`, `width`: the architecture.

    **Returns:**

    The trained classifier.
    """
    fields = jnp.asarray(images_to_functions(images, GRID, smoothing))
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


def train_and_save(
    data_cfg,
    folder: str | pathlib.Path,
    *,
    steps: int = 2000,
    seed: int = 0,
    channels: tuple[int, int] = (32, 64),
    width: int = 128,
) -> tuple[Classifier, dict]:
    """Train on the first half of `data_cfg.holdout_range`, measure accuracy on the second, save."""
    train_range, reference_range = classifier_split(data_cfg.holdout_range)
    kwargs = dict(root=data_cfg.root, download_missing=data_cfg.download)
    train = load_mnist(data_cfg.split, train_range, **kwargs)
    reference = load_mnist(data_cfg.split, reference_range, **kwargs)
    started = time.perf_counter()
    model = train_classifier(train.images, train.labels, smoothing=float(data_cfg.smoothing), steps=steps,
                             seed=seed, channels=channels, width=width)
    acc = accuracy(model, images_to_functions(reference.images, GRID, float(data_cfg.smoothing)), reference.labels)
    info = dict(
        channels=list(channels), width=int(width), split=data_cfg.split, train_range=list(train_range),
        reference_range=list(reference_range), smoothing=float(data_cfg.smoothing), steps=int(steps),
        seed=int(seed), reference_accuracy=acc, train_seconds=time.perf_counter() - started,
    )
    save(model, folder, info)
    logger.info(f"classifier saved in {folder}: accuracy {acc:.4f} on {data_cfg.split}{list(reference_range)}")
    return model, info


def default_folder(data_cfg) -> pathlib.Path:
    """`runs/classifier/<split>_<start>_<stop>_s<smoothing>`: one classifier per holdout and blur."""
    start, stop = (int(v) for v in data_cfg.holdout_range)
    return pathlib.Path("runs") / "classifier" / f"{data_cfg.split}_{start}_{stop}_s{float(data_cfg.smoothing):g}"
