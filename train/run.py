"""The training program: `python -m train.run +exp=NAME [field=value ...]`.

Composes `train/configs/config.yaml` with the experiment, checks every field before anything is built or
compiled, and trains (`train.training.run`), writing everything into the run folder
`train.run_dir`. Started again with the same run folder, a run resumes from its latest checkpoint.
"""

if __name__ == "__main__":  # first of all, before any import starts a thread (train.memory)
    from .memory import retain_freed_memory

    retain_freed_memory()

from omegaconf import DictConfig, OmegaConf

from . import devices as devices_lib
from . import distributed
from .compile_cache import use_compile_cache
from .config import validate
from .errors import reported_errors
from .memory import retain_freed_memory
from .progress import configure_logging
from .training import run


def _main(cfg: DictConfig) -> None:
    # grain's worker processes read absl flags, which hydra never parses: mark them parsed.
    import absl.flags

    absl.flags.FLAGS.mark_as_parsed()
    configure_logging(basic=False)  # hydra configures the handlers
    devices_lib.request_cpu_devices()  # before anything starts JAX's backends
    use_compile_cache()  # before anything compiles: a run started again loads its programs
    # a failure ends a process of a distributed run at once, so that the others stop too
    with distributed.leave_at_once_on_failure(), reported_errors():  # (user errors: one message, no traceback)
        spec = OmegaConf.to_object(cfg.train.distributed)
        spec.check("train.distributed")
        distributed.initialize(spec)  # also before JAX's backends start
        validate(cfg)  # before anything is compiled: a wrong field fails at once
        retain_freed_memory()  # logs what the call at the top of the module did
        run(cfg)


if __name__ == "__main__":
    import hydra

    hydra.main(config_path="configs", config_name="config", version_base=None)(_main)()
