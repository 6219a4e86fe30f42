"""The training step: one `eqx.filter_jit` update over a mesh of devices with a `data` axis.

The batch is sharded along `data`; the model, its EMA and the optimiser state are replicated; the
state and the batch are donated, so XLA updates the weights in place. The same code runs on one
device and on many: the loss is a mean over the batch, which XLA computes with an all-reduce when
the batch is sharded, and the random numbers of `jax.random` do not depend on the sharding.

The network itself runs under `jax.shard_map` (`DataParallel`): each device evaluates it on its
own part of the batch, and the gradient's sum over devices is the transpose of the replicated
weights. Left to XLA's partitioner, the networks' spatial-major layout `(n_d, ..., n_1, B, c)`,
whose reshapes merge the sharded batch axis with others, made two devices slower than one.
"""

from collections.abc import Callable, Collection, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.tree_util as jtu
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

LossFn = Callable[[PyTree, Float[Array, "batch ..."], PRNGKeyArray], Float[Array, ""] | tuple[Float[Array, ""], dict]]
"""`loss_fn(parts, x0, key) -> scalar`: the loss of the trainable parts on a batch, e.g.
`sdeflow.losses.dsm_loss` of `parts["network"]` with the SDE bound. A loss that also updates
statistics of some parts (a codebook's moving averages, a running mean) returns
`(scalar, statistics)`: `statistics[name]` is handed to `parts[name].with_statistics` after the
optimiser's update, and to the EMA's part the same way (statistics are averages already)."""

Trainable = bool | Collection[str]
"""Which parts a step trains: `True` (every array of the parts), or the names of the parts (keys of
a dict of parts) that it trains, the others staying frozen."""


class TrainState(eqx.Module):
    """Everything a step changes: the trainable parts, their EMA, the optimiser state, the RNG key
    and the step count.

    **Fields:**

    - `parts`: the tree of trainable parts: in the programs a dict `{"network": ..., ...}` (the
        score network, and any other part a run trains: a learned schedule, prior, autoencoder);
        any PyTree, e.g. one network, in research code.
    - `ema`: the exponential moving average of the parts' weights (same structure).
    - `opt_state`: the optax state of the arrays being trained.
    - `key`: the RNG key that the next step splits.
    - `step`: the number of steps taken (int32 scalar).
    - `skipped`: how many of them had a loss or gradient that was not finite; their updates were
        not applied (int32 scalar).
    - `first_bad`: `(step, leaf)` of the first such step: its 0-based index and where it appeared,
        0 for the loss and $i + 1$ for the gradient of the parts' $i$-th leaf (`gradient_names`:
        the leaves of every part, trained or not); `(-1, -1)` if none.
    """

    parts: PyTree
    ema: PyTree
    opt_state: PyTree
    key: PRNGKeyArray
    step: Int[Array, ""]
    skipped: Int[Array, ""]
    first_bad: Int[Array, "2"]


def make_optimiser(
    lr: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    final_lr_fraction: float = 0.0,
    clip_norm: float | None = 1.0,
    weight_decay: float = 0.0,
    b1: float = 0.9,
    b2: float = 0.999,
    schedule_free: bool = False,
) -> optax.GradientTransformation:
    """AdamW with linear warm-up, cosine decay and gradient clipping by global norm, or
    schedule-free AdamW (`optax.contrib.schedule_free_adamw`: the same warm-up, then a constant
    rate, and the averaged iterate to evaluate; see `evaluation_params`).

    **Arguments:**

    - `lr`: the peak learning rate, reached after `warmup_steps`.
    - `total_steps`: the length of the schedule (warm-up included); the cosine ends there.
    - `warmup_steps`: linear warm-up from 0 over this many steps.
    - `final_lr_fraction`: the learning rate at `total_steps`, as a fraction of `lr`.
    - `clip_norm`: clip gradients to this global norm (`None`: no clipping).
    - `weight_decay`: decoupled weight decay of AdamW.
    - `b1`, `b2`: Adam's moment decay rates (with `schedule_free`, `b1` is its interpolation
      weight).
    - `schedule_free`: schedule-free AdamW instead (`final_lr_fraction` unused).

    **Returns:**

    An `optax.GradientTransformation`.
    """
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"need 0 <= warmup_steps < total_steps, got warmup_steps={warmup_steps}, "
            f"total_steps={total_steps}."
        )
    # one schedule for the update and for the logged rate (train.training.optimiser_lr)
    schedule = learning_rate_schedule(lr, total_steps, warmup_steps=warmup_steps,
                                      final_lr_fraction=final_lr_fraction, schedule_free=schedule_free)
    if schedule_free:  # the warm-up is in the schedule (optax's own is the same linear ramp)
        adamw = optax.contrib.schedule_free_adamw(schedule, warmup_steps=None, b1=b1, b2=b2,
                                                  weight_decay=weight_decay)
    else:
        adamw = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay)
    return adamw if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adamw)


def applied_updates(opt_state: PyTree) -> int:
    """How many updates an optimiser of `make_optimiser` has applied: the step its schedule is at.

    A step skipped for a non-finite loss applies no update, so after skipped steps this is less
    than the number of steps taken.

    **Arguments:**

    - `opt_state`: the optimiser's state (a stage's; each stage's optimiser starts at 0).

    **Returns:**

    The count of optax's schedule, as a Python int.
    """
    counts = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
    if not counts:
        raise ValueError("the optimiser state holds no update count (it was not made by `make_optimiser`).")
    return int(counts[0][1])


def learning_rate_schedule(
    lr: float,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    final_lr_fraction: float = 0.0,
    schedule_free: bool = False,
) -> optax.Schedule:
    """The learning rate of `make_optimiser` with the same arguments, step by step: linear warm-up,
    then the cosine decay to `lr * final_lr_fraction` at `total_steps`; schedule-free, the same
    linear warm-up and then `lr`.

    **Returns:**

    An `optax.Schedule` (step -> rate).
    """
    if schedule_free:
        return optax.linear_schedule(0.0, lr, warmup_steps) if warmup_steps else optax.constant_schedule(lr)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=lr,
        warmup_steps=warmup_steps,
        decay_steps=total_steps,
        end_value=lr * final_lr_fraction,
    )


class DataParallel(eqx.Module):
    """A network whose batched evaluation runs under `jax.shard_map` over the `data` axis of a mesh.

    `batched(t, x)` splits `t` and `x` along their first axis over the devices, evaluates the
    wrapped network's own `batched` on each part with the weights replicated, and returns the
    outputs sharded the same way; `__call__` (one sample) is the wrapped network's. Differentiable:
    the weights' gradient is summed over devices by `shard_map`'s transpose.

    **Arguments:**

    - `model`: a network with a `batched(t, x)` method (every network of `nets`).
    - `mesh`: a mesh with a `data` axis; a batch that is a multiple of its size is split over it,
      any other runs as one.
    """

    model: PyTree
    mesh: Mesh = eqx.field(static=True)

    def __call__(self, t: Any, x: Array) -> Array:
        return self.model(t, x)

    def batched(self, t: Float[Array, " batch"], x: Float[Array, "batch ..."]) -> Float[Array, "batch ..."]:
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        if x.shape[0] % self.mesh.size:  # a sub-batch that does not split (a loss's extra pass)
            return self.model.batched(t, x)
        params, static = eqx.partition(self.model, eqx.is_array)

        def local(params, t, x):
            return eqx.combine(params, static).batched(t, x)

        spec = PartitionSpec("data")
        return jax.shard_map(local, mesh=self.mesh, in_specs=(PartitionSpec(), spec, spec),
                             out_specs=spec)(params, t, x)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named `data` over `devices` (default: all devices), with Auto axis types."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh(
        (len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place every array of `tree` on every device of `mesh` (of this process and, when the mesh
    spans several processes, of the others: every process passes the same values)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    if all(device.process_index == jax.process_index() for device in mesh.devices.flat):
        # (a copy, not a jitted identity, which refuses arrays committed to other devices: a
        # checkpoint restored on one device, for a run on several)
        return jax.tree.map(lambda x: jax.device_put(x, sharding) if eqx.is_array(x) else x, tree)

    def one(x):
        if not eqx.is_array(x):
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x  # a global array already
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def shard_batch(batch: np.ndarray | Array, mesh: Mesh) -> Array:
    """Put a batch on the mesh, split along its first axis over `data`. When the mesh spans
    several processes, `batch` is this process's block of the global batch (the blocks in
    process order make the global batch)."""
    local = [device for device in mesh.devices.flat if device.process_index == jax.process_index()]
    if batch.shape[0] % len(local) != 0:
        raise ValueError(
            f"the batch size {batch.shape[0]} must be a multiple of the number of devices {len(local)}."
        )
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    if len(local) == mesh.size:
        return jax.device_put(batch, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(batch))


def trainable_filter(parts: PyTree, trainable: Trainable = True) -> PyTree:
    """The filter spec (for `eqx.filter` / `eqx.partition`) of the arrays a step trains.

    **Arguments:**

    - `parts`: the trainable parts.
    - `trainable`: `True` (all their inexact arrays) or the names of the parts trained (`parts`
        must then be a dict holding every one of them).

    **Returns:**

    `eqx.is_inexact_array`, or a dict with that filter for the trained parts and `False` for the others.
    """
    if trainable is True:
        return eqx.is_inexact_array
    if not isinstance(parts, dict) or not set(trainable) <= set(parts):
        names = sorted(parts) if isinstance(parts, dict) else "a single part"
        raise ValueError(f"the trainable parts {sorted(trainable)} must be among the parts {names}.")
    return {name: eqx.is_inexact_array if name in trainable else False for name in parts}


def init_state(
    parts: PyTree,
    optimiser: optax.GradientTransformation,
    key: PRNGKeyArray,
    mesh: Mesh,
    trainable: Trainable = True,
    ema: PyTree | None = None,
) -> TrainState:
    """The state at the start of a stage: the optimiser state from `optimiser.init` of the
    trained arrays, the EMA from `ema` (default: the parts themselves).

    **Arguments:**

    - `parts`: the initial trainable parts (e.g. `{"network": net}`).
    - `optimiser`: the optax transformation the steps will use.
    - `key`: the RNG key of the run.
    - `mesh`: the mesh whose devices hold the (replicated) state.
    - `trainable`: the parts the steps train (see `trainable_filter`).
    - `ema`: the EMA so far (when a new stage starts), or `None` to start it at `parts`.

    **Returns:**

    A replicated `TrainState`.
    """
    # Copies: steps donate the state's buffers, which must not be shared with the caller's model
    # and key, nor between the model and its EMA.
    def copy(tree):
        return jax.tree.map(lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, tree)

    params = eqx.filter(parts, trainable_filter(parts, trainable))
    state = TrainState(
        parts=copy(parts),
        ema=copy(parts if ema is None else ema),
        opt_state=optimiser.init(params),
        key=copy(key),
        step=jnp.zeros((), jnp.int32),
        skipped=jnp.zeros((), jnp.int32),
        first_bad=jnp.full((2,), -1, jnp.int32),
    )
    return replicate(state, mesh)


def data_parallel(parts: PyTree, mesh: Mesh) -> PyTree:
    """The parts with every network (a module with `batched`) wrapped in `DataParallel` when the
    mesh has several devices."""
    if mesh.size == 1:
        return parts

    def wrap(part):
        return DataParallel(part, mesh) if callable(getattr(part, "batched", None)) else part

    return {name: wrap(part) for name, part in parts.items()} if isinstance(parts, dict) else wrap(parts)


def make_train_step(
    loss_fn: LossFn,
    optimiser: optax.GradientTransformation,
    ema_decay: float | dict[str, float],
    mesh: Mesh,
    trainable: Trainable = True,
    ema_warmup: bool | dict[str, bool] = False,
) -> Callable[[TrainState, Array], tuple[TrainState, Float[Array, ""]]]:
    """The jitted training step `step(state, batch) -> (state, loss)`.

    One step splits the state's key, evaluates `loss_fn(parts, batch, key)` and its gradient with
    respect to the trained parts, applies the optimiser, and updates their EMA
    $\\bar\\theta \\leftarrow d \\bar\\theta + (1 - d) \\theta$ (of the averaged iterate for a
    schedule-free optimiser, `evaluation_params`); frozen parts and their EMA stay as
    they are. `state` and `batch` are donated: do not use them after the call. A new grid
    (another batch shape) compiles the step once more.

    **Arguments:**

    - `loss_fn`: `loss_fn(parts, x0, key) -> scalar`, the mean loss over the batch `x0`.
    - `optimiser`: the optax transformation (e.g. from `make_optimiser`), initialised by
        `init_state` with the same `trainable`.
    - `ema_decay`: the EMA decay $d \\in [0, 1)$, or one per part (a dict by part name, for a dict
        of parts).
    - `mesh`: the mesh with a `data` axis; batches must be sharded on it (`shard_batch`).
    - `trainable`: the parts trained (see `trainable_filter`).
    - `ema_warmup`: ramp the decay up over the first steps (`ema_decay_at`), or one flag per part.

    **Returns:**

    The step function.
    """
    decays = ema_decay.values() if isinstance(ema_decay, dict) else [ema_decay]
    if not all(0.0 <= d < 1.0 for d in decays):
        raise ValueError(f"`ema_decay` must be in [0, 1), got {ema_decay}.")
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))

    @eqx.filter_jit(donate="all")
    def step(state: TrainState, batch: Array) -> tuple[TrainState, Array]:
        state = eqx.filter_shard(state, replicated)
        batch = eqx.filter_shard(batch, batch_sharding)
        key, step_key = jr.split(state.key)
        spec = trainable_filter(state.parts, trainable)
        params, frozen = eqx.partition(state.parts, spec)

        def loss_of(params):
            return value_and_statistics(loss_fn(data_parallel(eqx.combine(params, frozen), mesh), batch, step_key))

        (loss, statistics), grads = eqx.filter_value_and_grad(loss_of, has_aux=True)(params)
        ema_params, ema_frozen = eqx.partition(state.ema, spec)
        # A step whose loss or gradient is not finite changes nothing but the key and the counts
        # (a cond, not a select: the update is computed only when it is applied).
        # (one flag per leaf of the parts, True for the frozen ones: `gradient_names` numbers them
        # so in every stage, whatever it trains)
        leaves = jax.tree.leaves(grads, is_leaf=_is_none)
        finite = jnp.stack([jnp.all(jnp.isfinite(loss))]
                           + [jnp.array(True) if g is None else jnp.all(jnp.isfinite(g)) for g in leaves])
        ok = jnp.all(finite)

        def update(_):
            updates, opt_state = optimiser.update(grads, state.opt_state, params)
            new_params = eqx.apply_updates(params, updates)
            decay = ema_decay_at(ema_decay, ema_warmup, state.step)
            parts = with_statistics(eqx.combine(new_params, frozen), statistics)
            averaged = evaluation_params(opt_state, new_params)
            ema = with_statistics(eqx.combine(_ema_update(ema_params, averaged, decay), ema_frozen), statistics)
            return eqx.filter((parts, ema, opt_state), eqx.is_array)

        # Only arrays pass through the cond (a part's Python flags, e.g. a dropout's, stay as they are).
        kept = (state.parts, state.ema, state.opt_state)
        arrays = jax.lax.cond(ok, update, lambda _: eqx.filter(kept, eqx.is_array), None)
        parts, ema, opt_state = eqx.combine(arrays, eqx.filter(kept, eqx.is_array, inverse=True))
        first = jnp.where((state.skipped == 0) & ~ok, jnp.stack([state.step, jnp.argmin(finite)]).astype(jnp.int32),
                          state.first_bad)
        new = TrainState(parts=parts, ema=ema, opt_state=opt_state, key=key, step=state.step + 1,
                         skipped=state.skipped + (~ok).astype(jnp.int32), first_bad=first)
        return eqx.filter_shard(new, replicated), loss

    return step


@eqx.filter_jit
def weights_finite(state: TrainState) -> Bool[Array, ""]:
    """Whether the weights of a training state are finite.

    **Arguments:**

    - `state`: the state after some steps.

    **Returns:**

    Whether every floating-point array of its parts and of their EMA is finite: false after an
    update that overflowed although the step's loss and gradients were finite (the step's own
    check is on those).
    """
    arrays = jax.tree.leaves(eqx.filter((state.parts, state.ema), eqx.is_inexact_array))
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in arrays]))


def value_and_statistics(out: Array | tuple[Array, dict]) -> tuple[Array, dict]:
    """A `LossFn`'s output as `(value, statistics)`: `statistics` is `{}` for a plain scalar."""
    return out if isinstance(out, tuple) else (out, {})


def with_statistics(parts: PyTree, statistics: dict) -> PyTree:
    """`parts` (a dict of parts) with `parts[name].with_statistics(statistics[name])` for every
    name of `statistics`: the statistics a loss updated (see `LossFn`)."""
    if not statistics:
        return parts
    unknown = sorted(set(statistics) - set(parts))
    if unknown:
        raise ValueError(f"the loss returned statistics of {unknown}, which are not among the parts {sorted(parts)}.")
    return {name: part.with_statistics(statistics[name]) if name in statistics else part
            for name, part in parts.items()}


def gradient_names(parts: PyTree) -> list[str]:
    """Where a non-finite value can appear in a step, by `TrainState.first_bad`'s leaf index.

    **Arguments:**

    - `parts`: the parts of a run (a dict of modules).

    **Returns:**

    `"loss"`, then the path of each leaf of the parts (e.g. `['network'].blocks[0].weight`),
    trained or not and `None` fields included (the step flattens its gradients so), so that an
    index means the same array in every stage.
    """
    leaves = jtu.tree_flatten_with_path(parts, is_leaf=_is_none)[0]
    return ["loss"] + [jtu.keystr(path) for path, _ in leaves]


def _is_none(x) -> bool:
    return x is None


def ema_decay_at(
    decay: float | dict[str, float], warmup: bool | dict[str, bool], step: Int[Array, ""]
) -> float | Array | dict:
    """The EMA decay of the update after step `step` (0-based): `decay`, or with `warmup`
    $\\min(d, (1 + n) / (10 + n))$, which averages over about the steps taken so far early on (the
    EMA of the first steps otherwise stays near the initial weights for $1 / (1 - d)$ steps).

    **Arguments:**

    - `decay`: $d$, or one per part (a dict by part name).
    - `warmup`: whether to ramp, or one flag per part.
    - `step`: the number $n$ of steps taken before this update.

    **Returns:**

    The decay (a float when no part ramps), or one per part.
    """
    if isinstance(decay, dict):
        flags = warmup if isinstance(warmup, dict) else {name: warmup for name in decay}
        return {name: ema_decay_at(d, flags.get(name, False), step) for name, d in decay.items()}
    if not warmup:
        return decay
    n = jnp.asarray(step, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + n) / (10.0 + n))


def _is_schedule_free(node: Any) -> bool:
    return isinstance(node, optax.contrib.ScheduleFreeState)


def evaluation_params(opt_state: PyTree, params: PyTree) -> PyTree:
    """The weights to evaluate: `params`, except that the parts a schedule-free optimiser trains
    (`make_optimiser(..., schedule_free=True)`, inside `optax.multi_transform` or not) are its
    averaged iterate $x = (y - (1 - \\beta_1) z) / \\beta_1$ rather than the gradient point $y$.

    **Arguments:**

    - `opt_state`: the optimiser's state for `params`.
    - `params`: the trained weights (a dict of parts, or one part).

    **Returns:**

    A PyTree like `params`.
    """
    states = [n for n in jax.tree.leaves(opt_state, is_leaf=_is_schedule_free) if _is_schedule_free(n)]
    for state in states:
        def average(y, z, b1=state.b1):
            return jax.tree.map(lambda yi, zi: (yi - (1.0 - b1) * zi) / b1, y, z)

        if isinstance(params, dict) and isinstance(state.z, dict):  # a multi_transform over parts
            params = {name: part if isinstance(state.z.get(name, optax.MaskedNode()), optax.MaskedNode)
                      else average(part, state.z[name]) for name, part in params.items()}
        else:
            params = average(params, state.z)
    return params


def _ema_update(ema: PyTree, params: PyTree, decay: float | Array | dict[str, float | Array]) -> PyTree:
    """$d\\,\\bar\\theta + (1 - d)\\,\\theta$ leaf by leaf, with one $d$ or one per part."""
    if isinstance(decay, dict):
        return {name: _ema_update(ema[name], params[name], decay[name]) for name in params}
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def tree_max_difference(a: Any, b: Any) -> float:
    """The largest absolute difference between the inexact arrays of two PyTrees of one structure."""
    leaves_a = jax.tree.leaves(eqx.filter(a, eqx.is_inexact_array))
    leaves_b = jax.tree.leaves(eqx.filter(b, eqx.is_inexact_array))
    return max(
        (float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(leaves_a, leaves_b)),
        default=0.0,
    )
