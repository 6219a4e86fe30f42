"""From a validated config to the objects of a run: prior, SDE, loss function and network.

The model group (`configs/model/<name>.yaml`) holds the network's `_target_` class, its `name` and
the keyword arguments of its constructor; `hydra.utils.instantiate` builds it with the channels,
dimension and key that the program knows.
Errors of the constructors are reported as `ConfigError`s naming the config group.
"""

import functools

import jax.random as jr
from jaxtyping import PRNGKeyArray
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError


MODELS = {"fno": "FNO", "uno": "UNO", "unet": "UNet"}
"""`model.name` -> the class in `nets`."""

DIM = 2  # MNIST digits are 2-D fields


def _wrapped(group: str, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{group}: {error}") from None


def build_prior(cfg: DictConfig):
    """The prior of `cfg.prior` (`sdeflow.priors`)."""
    from sdeflow import priors

    p = cfg.prior
    if p.name == "matern":
        return _wrapped("prior", priors.Matern, DIM, s=p.s, tau=p.tau, variance=p.variance)
    if p.name == "laplacian":
        return _wrapped("prior", priors.Laplacian, DIM, s=p.s, variance=p.variance)
    if p.name == "white":
        return _wrapped("prior", priors.WhiteNoise, DIM, variance=p.variance)
    raise ConfigError(f"prior.name {p.name!r} is not known.")


def build_sde(cfg: DictConfig):
    """The forward SDE of `cfg.sde` driven by the prior of `cfg.prior` (`sdeflow.sde`)."""
    from sdeflow import sde as sdes

    prior = build_prior(cfg)
    s = cfg.sde
    if s.name in ("vp", "subvp"):
        if s.schedule == "linear":
            schedule = _wrapped("sde", sdes.LinearSchedule, beta_min=s.beta_min, beta_max=s.beta_max)
        else:
            schedule = _wrapped("sde", sdes.CosineSchedule, offset=s.cosine_offset, min_alpha_bar=s.min_alpha_bar)
        cls = sdes.VPSDE if s.name == "vp" else sdes.SubVPSDE
        return _wrapped("sde", cls, prior, schedule=schedule, t0=s.t0, t1=s.t1)
    if s.name == "ve":
        return _wrapped("sde", sdes.VESDE, prior, sigma_min=s.sigma_min, sigma_max=s.sigma_max, t0=s.t0, t1=s.t1)
    raise ConfigError(f"sde.name {s.name!r} is not known.")


def build_loss(cfg: DictConfig, sde):
    """`loss_fn(model, x0, key) -> scalar`: `sdeflow.losses.dsm_loss` with the settings of `cfg.loss`."""
    from sdeflow.losses import dsm_loss

    l = cfg.loss  # noqa: E741
    return functools.partial(
        _dsm,
        sde=sde,
        kwargs=dict(
            parameterisation=l.parameterisation,
            weighting=l.weighting,
            time_sampling=l.time_sampling,
            norm=l.norm,
        ),
        loss=dsm_loss,
    )


def _dsm(model, x0, key, *, sde, kwargs, loss):
    return loss(model, sde, x0, key, **kwargs)


CHANNELS = 1  # MNIST digits are scalar fields


def build_model(cfg: DictConfig, key: PRNGKeyArray):
    """The network of `cfg.model`, by `hydra.utils.instantiate` of its `_target_` (one of `MODELS`)."""
    import hydra.utils

    fields = OmegaConf.to_container(cfg.model, resolve=True)
    name = fields.pop("name")
    if name not in MODELS:
        raise ConfigError(f"model.name must be one of {', '.join(MODELS)}, got {name!r}.")
    if fields.get("_target_") != f"nets.{MODELS[name]}":
        raise ConfigError(f"model._target_ must be nets.{MODELS[name]} for model.name {name!r}.")
    return _wrapped(
        "model", hydra.utils.instantiate, fields, in_channels=CHANNELS, out_channels=CHANNELS,
        dim=DIM, key=key,
    )


def build_sampler(cfg: DictConfig):
    """The sampler of `cfg.sampler` (`sdeflow.samplers`), as `train.sample.make_sampler` builds it."""
    from .sample import make_sampler

    return _wrapped("sampler", make_sampler, cfg.sampler)


def split_keys(seed: int) -> tuple[PRNGKeyArray, PRNGKeyArray, PRNGKeyArray]:
    """Keys of the model's initialisation, of the training steps and of the sample grids, from the seed."""
    model_key, train_key, sample_key = jr.split(jr.key(seed), 3)
    return model_key, train_key, sample_key
