"""Train the MNIST classifier of the Fréchet features: `python -m train.classifier [data=mnist_t10k]`.

It trains on the first half of the data config's `holdout_range` (`train.mnist_classifier` says why)
and saves itself under `classifier.dir`; `train.evaluate` trains it when it is missing.
"""

if __name__ == "__main__":  # first of all, before any import starts a thread (train.memory)
    from .memory import retain_freed_memory

    retain_freed_memory()

import pathlib

from .mnist_classifier import default_folder, train_and_save


def _main(cfg) -> None:
    from .memory import retain_freed_memory
    from .progress import configure_logging

    configure_logging()
    retain_freed_memory()  # logs what the call at the top of the module did
    folder = pathlib.Path(cfg.classifier.dir) if cfg.classifier.dir else default_folder(cfg.data)
    train_and_save(cfg.data, folder, steps=int(cfg.classifier.steps), seed=int(cfg.classifier.seed))


if __name__ == "__main__":
    import hydra

    hydra.main(config_path="configs", config_name="classifier", version_base=None)(_main)()


