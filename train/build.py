"""From a validated config to the objects of a run: prior, SDE, loss function and network.

The model group (`configs/model/<name>.yaml`) holds the network's `_target_` class, its `name` and
the keyword arguments of its constructor; `hydra.utils.instantiate` builds it with the channels,
dimension and key that the program knows.
Errors of the constructors are reported as `ConfigError`s naming the config group.
"""

import functools
from typing import Any

import jax.random as jr
from jaxtyping import PRNGKeyArray
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, SAMPLER_NAMES, total_steps


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
    """The sampler of `cfg.sampler` (`sdeflow.samplers`), as `make_sampler` builds it."""
    return _wrapped("sampler", make_sampler, cfg.sampler)


def build_optimiser(cfg: DictConfig):
    """The optimiser of `cfg.optim` over the whole curriculum (`train.step.make_optimiser`)."""
    from .step import make_optimiser

    o = cfg.optim
    return make_optimiser(
        o.lr, total_steps(cfg), warmup_steps=o.warmup_steps, final_lr_fraction=o.final_lr_fraction,
        clip_norm=o.clip_norm, weight_decay=o.weight_decay, b1=o.b1, b2=o.b2,
    )


def make_sampler(spec: Any):
    """An `sdeflow.samplers` sampler from a mapping of fields (the `sampler` group of the configs).

    - `name`: `euler_maruyama` (reverse SDE, Euler–Maruyama), `shark` (reverse SDE, ShARK; adaptive
      when `steps` is null), `ode` (probability flow with `solver` tsit5 | heun | euler; adaptive
      Tsit5 when `steps` is null), `ddim`, `pc` (predictor–corrector);
    - `steps`, `rtol`, `atol`, `spacing` (`uniform` | `log_snr`), `corrector_steps`, `snr`, `denoise`;
    - `variables` (`ode` only): `t` (x against t) | `sigma` | `log_sigma` ((x - b)/m against the
      noise level s/m or its log);
    - `t_end` is not the sampler's but `draw`'s (the time the solve stops at);
    - `coarse_grid` (null: off) and `switch_time`: sample coarse-to-fine
      (`sdeflow.samplers.MultilevelSampler`): on the `coarse_grid` square grid down to `switch_time`,
      then on the target grid.

    Raises `ValueError` naming the field for a wrong value.
    """
    import diffrax

    from sdeflow import samplers

    s = dict(spec)
    if s.get("coarse_grid") is not None:
        return _multilevel(s)
    name = s.get("name")
    if name not in SAMPLER_NAMES:
        raise ValueError(f"sampler.name must be one of {', '.join(SAMPLER_NAMES)}, got {name!r}.")
    steps = s.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ValueError(f"sampler.steps must be a positive int or null (adaptive), got {steps!r}.")
    common = dict(denoise=bool(s.get("denoise", False)))
    spacing = s.get("spacing", "uniform")
    if name in ("euler_maruyama", "ddim", "pc") and steps is None:
        raise ValueError(f"sampler.steps must be a positive int for sampler {name!r}, got null.")
    if name == "euler_maruyama":
        return samplers.ReverseSDE(diffrax.Euler(), steps, spacing=spacing, **common)
    if name == "shark":
        return samplers.ReverseSDE(
            diffrax.ShARK(), steps, rtol=float(s.get("rtol", 1e-2)), atol=float(s.get("atol", 1e-2)),
            spacing=spacing, **common,
        )
    if name == "ddim":
        return samplers.DDIM(steps, spacing=spacing, **common)
    if name == "pc":
        return samplers.PredictorCorrector(
            steps, corrector_steps=int(s.get("corrector_steps", 1)), snr=float(s.get("snr", 0.16)),
            spacing=spacing, **common,
        )
    solvers = {"tsit5": diffrax.Tsit5, "heun": diffrax.Heun, "euler": diffrax.Euler}
    solver = s.get("solver", "tsit5")
    if solver not in solvers:
        raise ValueError(f"sampler.solver must be one of {', '.join(solvers)}, got {solver!r}.")
    variables = s.get("variables", "t")
    if variables not in ("t", "sigma", "log_sigma"):
        raise ValueError(f"sampler.variables must be t, sigma or log_sigma, got {variables!r}.")
    return samplers.ProbabilityFlow(
        solvers[solver](), steps, rtol=float(s.get("rtol", 1e-3)), atol=float(s.get("atol", 1e-3)),
        spacing=spacing, variables=variables, **common,
    )


def _multilevel(s: dict):
    """`sdeflow.samplers.MultilevelSampler` of the fields (`coarse_grid`, `switch_time` and the
    sampler's own): fixed `steps` are split between the phases in proportion to their time spans
    ($1 - t_s$ and $t_s$, for $t_1 = 1$), adaptive steps stay adaptive in both."""
    from sdeflow import samplers

    coarse = s["coarse_grid"]
    if not isinstance(coarse, int) or isinstance(coarse, bool) or coarse < 4:
        raise ValueError(f"sampler.coarse_grid must be null or an int >= 4, got {coarse!r}.")
    switch = s.get("switch_time")
    if not isinstance(switch, (int, float)) or isinstance(switch, bool) or not 0 < switch < 1:
        raise ValueError(f"sampler.switch_time must be a number in (0, 1), got {switch!r}.")
    steps = s.get("steps")
    first, second = steps, steps
    if steps is not None:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 2:
            raise ValueError(f"sampler.steps must be an int >= 2 or null with coarse_grid, got {steps!r}.")
        first = min(steps - 1, max(1, round(steps * (1 - switch))))
        second = steps - first
    phase = dict(s, coarse_grid=None)
    return samplers.MultilevelSampler(
        make_sampler(dict(phase, steps=first, denoise=False)),
        make_sampler(dict(phase, steps=second)),
        (coarse, coarse),
        float(switch),
    )


def split_keys(seed: int) -> tuple[PRNGKeyArray, PRNGKeyArray, PRNGKeyArray]:
    """Keys of the model's initialisation, of the training steps and of the sample grids, from the seed."""
    model_key, train_key, sample_key = jr.split(jr.key(seed), 3)
    return model_key, train_key, sample_key
