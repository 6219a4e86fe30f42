"""Helpers shared by the tests."""

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8) -> bool:
    """Whether two PyTrees have the same structure and allclose leaves."""
    if jtu.tree_structure(x) != jtu.tree_structure(y):
        return False
    return all(
        np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)
        for a, b in zip(jtu.tree_leaves(x), jtu.tree_leaves(y))
    )


def max_abs(x, y) -> float:
    """The largest absolute difference between two arrays."""
    return float(jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y))))


def primitive_names(fn, *args) -> set[str]:
    """The names of every primitive in the jaxpr of `fn(*args)`, nested jaxprs included (the bodies
    of `custom_jvp`, `pjit`, loops, ...)."""
    names = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    if hasattr(sub, "eqns"):
                        walk(sub)
                    elif hasattr(getattr(sub, "jaxpr", None), "eqns"):
                        walk(sub.jaxpr)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names


def cifar_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR-10 batch in the official structure (a protocol-2 pickle, as the python version's)."""
    import pickle

    batch = {b"batch_label": b"synthetic", b"labels": labels, b"data": images.reshape(len(images), 3072),
             b"filenames": [b"x.png"] * len(images)}
    return pickle.dumps(batch, protocol=2)


def write_tarball(path, members: dict[str, bytes]) -> str:
    """A gzipped tarball of `members` (name -> bytes) at `path`; returns its MD5."""
    import hashlib
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar_tarball(folder, images: np.ndarray, labels: list[int], test_count: int) -> str:
    """`folder/cifar-10-python.tar.gz` of the official structure: the last `test_count` images form
    the test batch, the others five data batches. Returns the tarball's MD5."""
    import pickle

    train = len(images) - test_count
    bounds = np.linspace(0, train, 6).astype(int)
    members = {f"cifar-10-batches-py/data_batch_{i + 1}": cifar_batch(images[a:b], labels[a:b])
               for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))}
    members["cifar-10-batches-py/test_batch"] = cifar_batch(images[train:], labels[train:])
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [b"airplane"]}, protocol=2)
    return write_tarball(folder / "cifar-10-python.tar.gz", members)
