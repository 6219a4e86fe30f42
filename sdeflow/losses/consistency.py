"""A penalty on a network's dependence on the grid: its prediction on the training grid against its
prediction on a finer grid, restricted back, for the same band-limited input."""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..grid import resample
from ..parameterisation import AbstractParameterisation
from ..sde import AbstractSDE
from .norms import AbstractNorm


class ResolutionConsistency(eqx.Module):
    """$\\lambda\\, \\frac1k \\sum_{i < k} w(t_i) \\|\\hat\\epsilon_n(t_i, x_i) - R_n \\hat\\epsilon_{fn}(t_i,
    P_{fn} x_i)\\|^2$: for the first `examples` inputs $x_i$ of a batch on the grid $n$, the
    network's noise estimate there against its estimate on the grid `factor` times finer, given
    the same field (prolonged spectrally, $P$, so the input is band-limited to the coarse grid) and
    restricted back ($R$). A network that is one operator on every grid has zero penalty; one whose
    pointwise nonlinearities alias on the coarse grid does not. It adds a pass of `examples`
    inputs on the finer grid to each step, forward and backward (about `factor**d * examples /
    batch` of the step for $d$ axes).

    **Arguments:**

    - `weight`: $\\lambda \\ge 0$, the penalty's weight against the denoising loss.
    - `examples`: $k \\ge 1$, the inputs of each batch it is measured on.
    - `factor`: the refinement, an integer >= 2.
    """

    weight: float = eqx.field(static=True)
    examples: int = eqx.field(static=True, default=4)
    factor: int = eqx.field(static=True, default=2)

    def __check_init__(self):
        if not self.weight >= 0:
            raise ValueError(f"`weight` must be >= 0, got {self.weight}.")
        if int(self.examples) != self.examples or self.examples < 1:
            raise ValueError(f"`examples` must be a positive integer, got {self.examples}.")
        if int(self.factor) != self.factor or self.factor < 2:
            raise ValueError(f"`factor` must be an integer >= 2, got {self.factor}.")

    def __call__(
        self,
        apply: Callable[[Array, Array], Array],
        parameterisation: AbstractParameterisation,
        norm: AbstractNorm,
        sde: AbstractSDE,
        weights: Float[Array, " batch"],
        t: Float[Array, " batch"],
        inputs: Float[Array, "batch ci *grid"],
        eps_hat: Float[Array, "batch c *grid"],
        x_t: Float[Array, "batch c *grid"],
        m: Array,
        s: Array,
        b: Array,
    ) -> Float[Array, ""]:
        """The penalty for a batch whose noise estimates `eps_hat` came from `apply(t, inputs)`.

        **Arguments:**

        - `apply`: the network on a batch, `apply(t, inputs) -> output`.
        - `parameterisation`: what the network predicts (its output made $\\hat\\epsilon$).
        - `norm`: the norm of the difference, the loss's own.
        - `sde`: the forward SDE (for the norm).
        - `weights`: the loss's time weights $w(t_i)$ of the batch.
        - `t`, `inputs`: the batch's times and the network's inputs on the grid.
        - `eps_hat`: the network's noise estimates on the grid.
        - `x_t`, `m`, `s`, `b`: the noised fields and the marginal's factors (`perturb_batch`).

        **Returns:**

        The scalar penalty, `weight` included.
        """
        k = min(int(self.examples), inputs.shape[0])
        grid = tuple(inputs.shape[2:])
        fine = tuple(self.factor * n for n in grid)
        up = jax.vmap(lambda u: resample(u, fine))(inputs[:k])
        back = jax.vmap(lambda u: resample(u, grid))(apply(t[:k], up))
        eps_fine = parameterisation.to_epsilon(back, x_t[:k], m[:k], s[:k], b[:k])
        norms = jax.vmap(lambda v: norm.squared(sde, v))(eps_hat[:k] - eps_fine)
        return self.weight * jnp.mean(weights[:k] * norms)
