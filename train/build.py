"""From a validated config to the objects of a run: data source, prior, SDE, loss, network,
optimiser and sampler.

The `model` and `prior` groups name the class they build (`_target_`); `hydra.utils.instantiate`
builds it with what the program knows: the data's channels and dimension, and a key. Errors of the
constructors (the library checks its own arguments) are reported as `ConfigError`s naming the
config group.
"""

import functools
from typing import Any

import jax.random as jr
from jaxtyping import PRNGKeyArray
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError
from .config.programs import part_names


def _wrapped(group: str, fn, *args, **kwargs):
    from hydra.errors import InstantiationException

    try:
        return fn(*args, **kwargs)
    except ConfigError:
        raise
    except InstantiationException as error:  # hydra's wrapper of the constructor's own error
        cause = error.__cause__ if isinstance(error.__cause__, (ValueError, TypeError)) else error
        raise ConfigError(f"{group}: {cause}") from None
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{group}: {error}") from None


def build_source(data: DictConfig):
    """The data source of a `data` group (`train.data.make_source`), from its fields other than the
    pipeline's; reads no file."""
    import dataclasses

    from .config import PipelineConfig
    from .data import make_source

    fields = OmegaConf.to_container(data, resolve=True, enum_to_str=True)
    kind = fields.pop("name")
    for field in dataclasses.fields(PipelineConfig):
        fields.pop(field.name, None)
    return _wrapped("data", make_source, kind, **fields)


def _instantiate(group: str, node: DictConfig, **kwargs):
    import hydra.utils

    fields = OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return _wrapped(group, hydra.utils.instantiate, fields, **kwargs)


def build_prior(cfg: DictConfig):
    """The prior of `cfg.prior` (`sdeflow.priors`) on the data's torus. A spectral-multiplier
    prior (`prior=fno`) is fitted to the run's training data (`RadialMultiplier.fit`: the same data
    give the same prior, so every program rebuilds it alike); a combined one builds its two priors."""
    _, dim = dimensions(cfg)
    return _prior(cfg, cfg.prior, dim, "prior")


_FITTED: dict[str, Any] = {}  # fitted priors by their config and data, fitted once per process


def _prior(cfg: DictConfig, node: DictConfig, dim: int, where: str):
    from .config.diffusion import CombinedConfig, SpectralMultiplierConfig

    if node._target_ == CombinedConfig._target_:
        from sdeflow.priors import Combined

        first = node.first if node.first is not None else {"name": "laplacian"}
        second = node.second if node.second is not None else {"name": "matern"}
        first = _prior(cfg, _nested_prior(first, f"{where}.first"), dim, f"{where}.first")
        second = _prior(cfg, _nested_prior(second, f"{where}.second"), dim, f"{where}.second")
        return _wrapped(where, Combined, first, second, a=node.a, b=node.b)
    if node._target_ == SpectralMultiplierConfig._target_:
        key = OmegaConf.to_yaml(OmegaConf.create({"data": cfg.data, "prior": node, "dim": dim}), resolve=True)
        if key not in _FITTED:
            _FITTED[key] = _fitted_prior(cfg, node, dim, where)
        return _FITTED[key]
    return _instantiate(where, node, dim=dim)


def _nested_prior(fields: Any, where: str) -> DictConfig:
    """A combined prior's `{name: ..., field: value}` as its option's schema, checked by it."""
    from .config.diffusion import PRIORS

    fields = OmegaConf.to_container(fields, resolve=True) if OmegaConf.is_config(fields) else fields
    if not isinstance(fields, dict):
        raise ConfigError(f"{where} must be a mapping {{name: PRIOR, field: value, ...}}, got {fields!r}.")
    fields = dict(fields)
    name = fields.pop("name", None)
    if name not in PRIORS:
        raise ConfigError(f"{where}.name must be one of {list(PRIORS)}, got {name!r}.")
    try:
        return OmegaConf.merge(OmegaConf.structured(PRIORS[name]), fields)
    except Exception as error:  # omegaconf's own errors name the key
        raise ConfigError(f"{where}: {error}") from None


def _fitted_prior(cfg: DictConfig, node: DictConfig, dim: int, where: str):
    """`RadialMultiplier.fit` to the first `fit_count` training examples on the `fit_grid` grid."""
    from sdeflow.priors import Matern, RadialMultiplier

    from .data import as_grid

    if node.radius < 0:
        raise ConfigError(f"{where}.radius must be an int >= 0, got {node.radius}.")
    if node.fit_count < 2:
        raise ConfigError(f"{where}.fit_count must be an int >= 2 (the fit estimates a mean), got {node.fit_count}.")
    if node.fit_grid < 2 * node.radius + 1:
        raise ConfigError(f"{where}.fit_grid must be >= 2 * {where}.radius + 1 = {2 * node.radius + 1} "
                          f"(the grid must hold every shell), got {node.fit_grid}.")
    tail = _wrapped(where, Matern, dim, s=node.s, tau=node.tau)
    source = build_source(cfg.data)
    values = source.load("train").values[: node.fit_count]
    import jax.numpy as jnp

    fields = jnp.asarray(source.converter(as_grid(node.fit_grid, dim))(values))
    return _wrapped(where, RadialMultiplier.fit, fields, tail, node.radius, learnable=node.learn)


def with_parts(sde, parts):
    """The run's SDE with the learned parts among `parts` (a dict of parts, raw or EMA): the
    schedule of part `schedule` and the prior of part `prior`; `sde` itself when the run learns
    neither. The loss trains with it, and sampling and evaluation use it after training."""
    import equinox as eqx

    if not isinstance(parts, dict):
        return sde
    if "schedule" in parts:
        sde = eqx.tree_at(lambda s: s.schedule, sde, parts["schedule"])
    if "prior" in parts:
        sde = eqx.tree_at(lambda s: s.prior, sde, parts["prior"])
    if "target" in parts:  # the bridge's fitted target x* (train.latent.FittedTarget)
        sde = eqx.tree_at(lambda s: s.target, sde, parts["target"].value())
    return sde


def dimensions(cfg: DictConfig) -> tuple[int, int]:
    """`(channels, dim)` of the run's data."""
    source = build_source(cfg.data)
    return source.channels, source.dim


def latent_factor(cfg: DictConfig) -> int:
    """How many data grid points per axis make one point of the score network's grid: 1, or
    `2**autoencoder.downsamplings` when the network models an autoencoder's latent maps."""
    autoencoder = cfg.get("autoencoder")
    return 1 if autoencoder is None else 2 ** int(autoencoder.downsamplings)


def network_channels(cfg: DictConfig) -> int:
    """The channels of the fields the score network models: the data's, or the latent maps'."""
    autoencoder = cfg.get("autoencoder")
    return dimensions(cfg)[0] if autoencoder is None else int(autoencoder.latent_channels)


def field_shape_of_network(cfg: DictConfig, n: int | None = None) -> tuple[int, ...]:
    """The shape `(c, *grid)` of the fields the score network models on the data's `n`-grid
    (default: the first level's grid)."""
    from .config import to_schema

    n = to_schema(cfg.train).phases()[0].grid if n is None else n
    return (network_channels(cfg),) + (int(n) // latent_factor(cfg),) * dimensions(cfg)[1]


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
    if s.name == "ou_bridge":  # a fitted target starts at zero; `with_parts` puts in the part `target`
        import jax.numpy as jnp

        return _wrapped("sde", sdes.OUBridge, prior, target=jnp.zeros(field_shape_of_network(cfg), jnp.float32),
                        theta=s.theta, eta=s.eta, t0=s.t0, t1=s.t1)
    raise ConfigError(f"sde.name {s.name!r} is not known.")


def named(field: str, table: dict, name: Any):
    """The object a config's `name` stands for in a library's `table` of names to classes (built
    with its defaults); a `ConfigError` naming `field` for a name outside it."""
    key = str(name)
    if key not in table:
        raise ConfigError(f"{field} must be one of {list(table)}, got {key!r}.")
    return table[key]()


def build_parameterisation(name: Any):
    """The `sdeflow.parameterisation` object of a `loss.parameterisation` name, e.g. `"v"` ->
    `V()`: what the network predicts, for the loss, the samplers and the likelihood."""
    from sdeflow.parameterisation import PARAMETERISATIONS

    return named("loss.parameterisation", PARAMETERISATIONS, name)


def build_loss(cfg: DictConfig, sde, loss: Any = None):
    """`loss_fn(parts, x0, key) -> scalar`: `sdeflow.losses.dsm_loss` (or `vdm_elbo`) of
    `parts["network"]` with the settings of `loss` (a loss option's fields; default `cfg.loss`),
    each name made the library's object; the SDE takes the learned parts of `parts` (a schedule,
    a prior) when the run learns them (`with_parts`)."""
    from sdeflow.losses import dsm_loss, InterpolatedNorm, NORMS, P2Weighting, TIME_SAMPLINGS, WEIGHTINGS

    l = cfg.loss if loss is None else loss  # noqa: E741
    if l.name == "vqvae":
        return functools.partial(_vqvae, commitment=float(l.commitment))
    if l.name == "vdm":
        return functools.partial(_vdm, sde=sde, kwargs=vdm_options(l))
    weighting = named("loss.weighting", WEIGHTINGS, l.weighting)
    if isinstance(weighting, P2Weighting):
        weighting = P2Weighting(float(getattr(l, "p2_gamma", 1.0)), float(getattr(l, "p2_k", 1.0)))
    norm = named("loss.norm", NORMS, l.norm)
    if isinstance(norm, InterpolatedNorm):
        norm = InterpolatedNorm(float(getattr(l, "norm_power", norm.power)))
    return functools.partial(
        _dsm,
        sde=sde,
        kwargs=dict(
            parameterisation=build_parameterisation(l.parameterisation),
            weighting=weighting,
            time_sampling=named("loss.time_sampling", TIME_SAMPLINGS, l.time_sampling),
            norm=norm,
            self_conditioning=float(l.self_conditioning_prob) if self_conditioned(l) else None,
            consistency=consistency(l),
        ),
        loss=dsm_loss,
    )


def consistency(loss: Any):
    """The `sdeflow.losses.ResolutionConsistency` of a loss option's `consistency` fields, or None
    when its weight is 0 (or the option has none)."""
    from sdeflow.losses import ResolutionConsistency

    weight = float(getattr(loss, "consistency", 0.0))
    if weight == 0:
        return None
    return ResolutionConsistency(weight, int(loss.consistency_examples), int(loss.consistency_factor))


def self_conditioned(loss: Any) -> bool:
    """Whether a loss option (e.g. `cfg.loss`) trains a self-conditioned network: one that takes
    the data's channels twice, the second time an estimate of $x_0$."""
    return bool(getattr(loss, "self_conditioning", False))


def _dsm(parts, x0, key, *, sde, kwargs, loss):
    return _on_modelled(parts, x0, lambda x: loss(parts["network"], with_parts(sde, parts), x, key, **kwargs))


def _on_modelled(parts, x0, loss):
    """`loss(x)` of what the score network models of a batch `x0` (the batch itself, or the frozen
    encoder's latent maps of it), with the statistics the loss updates (the bridge's fitted
    target) when there are any: a `train.step.LossFn` output."""
    from .latent import encode

    if "autoencoder" in parts:
        x0 = encode(parts["autoencoder"], x0)
    value = loss(x0)
    return (value, {"target": parts["target"].updated(x0)}) if "target" in parts else value


def _vqvae(parts, x0, key, *, commitment):
    from nets import vqvae_loss

    value, quantiser, _ = vqvae_loss(parts["autoencoder"], x0, key, commitment=commitment)
    return value, {"autoencoder": quantiser}


def vdm_options(loss: Any) -> dict:
    """The keyword arguments of `sdeflow.losses.vdm_elbo` for the fields of a `vdm` loss option."""
    from sdeflow.losses import DECODERS, DiscretisedDecoder, TIME_SAMPLINGS

    decoder = named("loss.decoder", DECODERS, loss.decoder)
    if isinstance(decoder, DiscretisedDecoder):
        decoder = _wrapped("loss", DiscretisedDecoder, levels=int(loss.levels))
    return dict(
        parameterisation=build_parameterisation(loss.parameterisation),
        time_sampling=named("loss.time_sampling", TIME_SAMPLINGS, loss.time_sampling),
        decoder=decoder,
        variance_reduction=bool(loss.learned_schedule and loss.variance_reduction),
    )


def _vdm(parts, x0, key, *, sde, kwargs):
    from sdeflow.losses import vdm_elbo

    return _on_modelled(parts, x0, lambda x: vdm_elbo(parts["network"], with_parts(sde, parts), x, key, **kwargs)[0])


def build_schedule(cfg: DictConfig, key: PRNGKeyArray):
    """The learned noise schedule of a `loss=vdm` run (`sdeflow.sde.LearnedSchedule`), its part
    `schedule`."""
    from sdeflow.sde import LearnedSchedule

    l = cfg.loss  # noqa: E741
    return _wrapped("loss", LearnedSchedule, l.gamma_min, l.gamma_max, learn_endpoints=l.learn_endpoints,
                    hidden=l.schedule_hidden, key=key)


def build_model(cfg: DictConfig, key: PRNGKeyArray):
    """The network of `cfg.model` (its `_target_` class), on the data's channels and dimension, or
    the latent maps' channels with an autoencoder (twice the channels in, with `loss.self_conditioning`;
    wrapped in `nets.ClippedEstimate` with `loss.self_conditioning_clip`)."""
    channels, dim = network_channels(cfg), dimensions(cfg)[1]
    in_channels = 2 * channels if self_conditioned(cfg.loss) else channels
    model = _instantiate("model", cfg.model, in_channels=in_channels, out_channels=channels, dim=dim, key=key)
    clip = cfg.loss.get("self_conditioning_clip") if self_conditioned(cfg.loss) else None
    if clip is not None:
        import nets

        model = nets.ClippedEstimate(model, channels, float(clip[0]), float(clip[1]))
    return model


def check_model_grids(model, dim: int, grids: list[tuple[str, int]], group: str = "model") -> None:
    """A `ConfigError` naming the field if the network `model` cannot act on one of `grids`
    (`(field, n)` pairs: the n-grid on each of `dim` axes), e.g. a grid too small for its modes."""
    for field, n in grids:
        try:
            model.check_grid((int(n),) * dim)
        except ValueError as error:
            raise ConfigError(f"{field} = {n} does not suit {group}={type(model).__name__}: {error}") from None


def check_run_grids(cfg: DictConfig, grids: list[tuple[str, int]]) -> None:
    """`check_model_grids` on the network of `cfg.model` (and on the autoencoder, whose latent grids
    the network then acts on), built as shapes only (nothing is allocated or initialised)."""
    import equinox as eqx

    dim = dimensions(cfg)[1]
    if cfg.get("autoencoder") is not None:
        check_model_grids(eqx.filter_eval_shape(build_autoencoder, cfg, jr.key(0)), dim, grids, "autoencoder")
        factor = latent_factor(cfg)
        grids = [(f"{field}'s latent grid ({n} / {factor})", n // factor) for field, n in grids]
    model = eqx.filter_eval_shape(build_model, cfg, jr.key(0))
    check_model_grids(model, dim, grids)


def build_autoencoder(cfg: DictConfig, key: PRNGKeyArray):
    """The autoencoder of `cfg.autoencoder` (its `_target_` class, e.g. `nets.VQVAE`) on the data's
    channels and dimension: the part `autoencoder`."""
    channels, dim = dimensions(cfg)
    return _instantiate("autoencoder", cfg.autoencoder, in_channels=channels, dim=dim, key=key)


def build_target(cfg: DictConfig, key: PRNGKeyArray):
    """The bridge's fitted target $x^*$ (`sde.target=constant|field`): the part `target`, a
    `train.latent.FittedTarget` on the network's fields of the first level's grid."""
    from .latent import FittedTarget

    return FittedTarget.zeros(field_shape_of_network(cfg), per_position=str(cfg.sde.target) == "field")


def build_sampler(cfg: DictConfig, spec: DictConfig | None = None, where: str = "sampler"):
    """The sampler of `spec` (default `cfg.sampler`) on the data's dimension, as `make_sampler`
    builds it; errors name the group `where`."""
    return _wrapped(where, make_sampler, cfg.sampler if spec is None else spec, dimensions(cfg)[1])


def build_parts(cfg: DictConfig, key: PRNGKeyArray) -> dict:
    """The trainable parts of a run, by name (`part_names`): the score network, and any part
    that the run's loss or prior learns."""
    builders = {"network": build_model, "schedule": build_schedule, "prior": lambda cfg, key: build_prior(cfg),
                "autoencoder": build_autoencoder, "target": build_target}
    # The network takes `key` itself, so adding a part leaves its initialisation unchanged.
    return {name: builders[name](cfg, key if i == 0 else jr.fold_in(key, i))
            for i, name in enumerate(part_names(cfg))}


def part_optim(cfg: DictConfig, name: str) -> DictConfig:
    """The optimiser settings of part `name`: `cfg.optim_parts[name]`, else `cfg.optim`."""
    return cfg.optim_parts[name] if name in cfg.get("optim_parts", {}) else cfg.optim


def trainable(cfg: DictConfig, stage: int) -> bool | set[str]:
    """The parts stage `stage` trains: `True` (every part) or their names."""
    from .config import to_schema

    names = to_schema(cfg.train).stage_list()[stage].trainable
    return True if names is None else set(names)


def build_optimiser(cfg: DictConfig, stage: int = 0):
    """The optimiser of stage `stage`: for each part it trains, AdamW with the part's settings
    (`part_optim`) and a schedule over the stage's steps (`train.step.make_optimiser`); one
    `optax.multi_transform` over the dict of parts."""
    import optax

    from .config import to_schema
    from .step import make_optimiser

    steps = sum(level.steps for level in to_schema(cfg.train).stage_list()[stage].levels)
    names = trainable(cfg, stage)
    names = part_names(cfg) if names is True else names
    transforms = {}
    for name in part_names(cfg):
        o = part_optim(cfg, name)
        transforms[name] = optax.set_to_zero() if name not in names else make_optimiser(
            o.lr, steps, warmup_steps=o.warmup_steps, final_lr_fraction=o.final_lr_fraction,
            clip_norm=o.clip_norm, weight_decay=o.weight_decay, b1=o.b1, b2=o.b2,
            schedule_free=o.schedule_free,
        )
    return optax.multi_transform(transforms, {name: name for name in transforms})



def sampler_fields(spec: Any) -> DictConfig:
    """A sampler's fields (a mapping, e.g. `{"name": "ode", "steps": None}`) typed by the `sampler`
    schema: its defaults filled in, wrong keys and types refused."""
    from .config import SamplerConfig

    return OmegaConf.merge(OmegaConf.structured(SamplerConfig), spec)


def make_sampler(spec: Any, dim: int = 2):
    """An `sdeflow.samplers` sampler from the fields of the `sampler` group (`SamplerConfig`).

    - `name`: `euler_maruyama` (reverse SDE, Euler–Maruyama), `shark` (reverse SDE, ShARK; adaptive
      when `steps` is null), `ode` (probability flow with `solver`; adaptive Tsit5 when `steps` is
      null), `ddim`, `pc` (predictor–corrector);
    - `t_end` is not the sampler's but `draw`'s (the time the solve stops at);
    - `coarse_grid` (null: off) and `switch_time`: sample coarse-to-fine
      (`sdeflow.samplers.MultilevelSampler`): on the grid of `coarse_grid` points per axis (of
      `dim` axes) down to `switch_time`, then on the target grid. Fixed `steps` are split between
      the phases in proportion to their time spans ($1 - t_s$ and $t_s$, for $t_1 = 1$).

    The values were checked at start-up (`train.config.validate`); the samplers' constructors check
    their own.
    """
    import diffrax

    from sdeflow import samplers

    s = sampler_fields(spec)
    if s.coarse_grid is not None:
        first = second = s.steps
        if s.steps is not None:
            first = min(s.steps - 1, max(1, round(s.steps * (1 - s.switch_time))))
            second = s.steps - first
        phase = OmegaConf.merge(s, {"coarse_grid": None})
        return samplers.MultilevelSampler(
            make_sampler(OmegaConf.merge(phase, {"steps": first, "denoise": False}), dim),
            make_sampler(OmegaConf.merge(phase, {"steps": second}), dim),
            (s.coarse_grid,) * dim,
            float(s.switch_time),
        )
    common = dict(denoise=s.denoise, spacing=named("sampler.spacing", samplers.SPACINGS, s.spacing))
    if s.name == "euler_maruyama":
        return samplers.ReverseSDE(diffrax.Euler(), s.steps, **common)
    if s.name == "shark":
        return samplers.ReverseSDE(diffrax.ShARK(), s.steps, rtol=s.rtol, atol=s.atol, **common)
    if s.name == "ddim":
        clip = None if s.clip is None else (float(s.clip[0]), float(s.clip[1]))
        return samplers.DDIM(s.steps, eta=float(s.eta), clip=clip, **common)
    if s.name == "pc":
        return samplers.PredictorCorrector(s.steps, corrector_steps=s.corrector_steps, snr=s.snr, **common)
    solvers = {"tsit5": diffrax.Tsit5, "heun": diffrax.Heun, "euler": diffrax.Euler}
    variables = named("sampler.variables", samplers.VARIABLES, s.variables)
    return samplers.ProbabilityFlow(
        solvers[s.solver](), s.steps, rtol=s.rtol, atol=s.atol, variables=variables, **common
    )


def split_keys(seed: int) -> tuple[PRNGKeyArray, PRNGKeyArray, PRNGKeyArray]:
    """Keys of the model's initialisation, of the training steps and of the sample grids, from the seed."""
    model_key, train_key, sample_key = jr.split(jr.key(seed), 3)
    return model_key, train_key, sample_key
