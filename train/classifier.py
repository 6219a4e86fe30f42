"""Train the MNIST classifier of the Fréchet features: `python -m train.classifier [data=mnist_t10k]`.

It trains on half of the data config's `holdout_range` (`train.mnist_classifier` says why)
and saves itself under `classifier.dir`; `train.evaluate` trains it when it is missing.
"""

if __name__ == "__main__":  # first of all, before any import starts a thread (train.memory)
    from .memory import retain_freed_memory

    retain_freed_memory()

from .config import register
from .mnist_classifier import holdout_split, load_or_train


def main(cfg) -> None:
    """Train (or find) the classifier of a composed `configs/classifier.yaml`."""
    from .build import build_source
    from .config import ConfigError, to_schema
    from .evaluation import has_classifier

    to_schema(cfg).classifier.check("classifier")
    source = build_source(cfg.data)
    if not has_classifier(source):
        raise ConfigError(f"the classifier is one of MNIST digits; data={cfg.data.name} is not MNIST "
                          "(data=mnist or data=mnist_t10k).")
    holdout = source.load("holdout")
    load_or_train(source, holdout, holdout_split(len(holdout), True), cfg.classifier)


def _main(cfg) -> None:
    from .errors import run_program

    run_program(main, cfg)


if __name__ == "__main__":
    import hydra

    register()  # the schemas of the configs (stored when train.config is imported; again is harmless)
    hydra.main(config_path="configs", config_name="classifier", version_base=None)(_main)()


