"""A VQ-VAE (van den Oord et al. 2017) on the torus, with an exponential-moving-average codebook.

The encoder maps one sample `(c, *grid)` to a continuous latent `(D, *latent)` on a grid
`2**downsamplings` times coarser on each axis; each latent vector is replaced by its nearest code
of a codebook of `K` codes; the decoder maps the quantised latent back to `(c, *grid)`. The
codebook is not trained by gradients but by exponential moving averages of the encodings assigned
to each code (the appendix of the paper; Sonnet's `VectorQuantizerEMA`), and a code that has not
been used for `restart_after` updates is moved onto an encoding of the current batch (dead-code
restarts, as in Jukebox). All convolutions pad circularly: the data are functions on the torus.
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.random as jr
from jax.scipy.special import xlogy
from jaxtyping import Array, Float, Int, PRNGKeyArray


class VectorQuantiser(eqx.Module):
    r"""A codebook of `K` codes in $\mathbb{R}^D$ learned by exponential moving averages.

    With decay $\gamma$, batch counts $n_k$ (encodings assigned to code $k$) and batch sums
    $s_k = \sum_{i: k_i = k} z_i$, one update is

    $$N_k \leftarrow \gamma N_k + (1 - \gamma) n_k, \qquad
      S_k \leftarrow \gamma S_k + (1 - \gamma) s_k,$$

    and the codes are $e_k = S_k / \tilde N_k$ with the Laplace-smoothed counts
    $\tilde N_k = (N_k + \epsilon) / (N + K \epsilon) \cdot N$, $N = \sum_k N_k$ (smoothing keeps
    an unused code finite). The fields hold $S$ (`sums`), $N$ (`counts`) and, per code, the number
    of updates since it was last assigned an encoding (`idle`).

    A new quantiser has counts 1, sums equal to normal codes of standard deviation `init_scale`,
    and every code idle for `restart_after` updates already: its first update moves every code
    the batch does not use onto an encoding of the batch (a data-dependent initialisation, which
    avoids starting with all encodings assigned to the one code nearest to them).

    **Arguments:**

    - `num_codes`: the number of codes $K$.
    - `dim`: the dimension $D$ of a code (the latent channels).
    - `decay`: the decay $\gamma$ of the moving averages.
    - `epsilon`: the Laplace smoothing $\epsilon$ of the counts.
    - `restart_after`: a code idle for more than this many updates is restarted.
    - `init_scale`: the standard deviation of the initial codes.
    - `key`: a JAX random key (the initial codes).
    """

    sums: Float[Array, "K D"]
    counts: Float[Array, " K"]
    idle: Float[Array, " K"]
    decay: float = eqx.field(static=True)
    epsilon: float = eqx.field(static=True)
    restart_after: int = eqx.field(static=True)

    def __init__(self, num_codes: int, dim: int, *, decay: float = 0.99, epsilon: float = 1e-5,
                 restart_after: int = 50, init_scale: float = 0.01, key: PRNGKeyArray):
        if int(num_codes) < 1 or int(dim) < 1:
            raise ValueError(
                f"`num_codes` and `dim` must be positive, got num_codes={num_codes}, dim={dim}."
            )
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"`decay` must lie in [0, 1), got {decay}.")
        if not float(epsilon) > 0.0:
            raise ValueError(f"`epsilon` must be positive, got {epsilon}.")
        if int(restart_after) < 1:
            raise ValueError(f"`restart_after` must be a positive number of updates, got "
                             f"{restart_after}.")
        self.sums = init_scale * jr.normal(key, (int(num_codes), int(dim)))
        self.counts = jnp.ones(int(num_codes))
        self.idle = jnp.full(int(num_codes), float(restart_after))
        self.decay, self.epsilon = float(decay), float(epsilon)
        self.restart_after = int(restart_after)

    @property
    def num_codes(self) -> int:
        """The number of codes $K$."""
        return self.sums.shape[0]

    @staticmethod
    def smoothed(counts: Float[Array, " K"], epsilon: float) -> Float[Array, " K"]:
        r"""The Laplace-smoothed counts $(N_k + \epsilon) / (N + K\epsilon) \cdot N$, which keep
        the total $N$ and are positive."""
        total = jnp.sum(counts)
        return (counts + epsilon) / (total + counts.shape[0] * epsilon) * total

    @property
    def codebook(self) -> Float[Array, "K D"]:
        """The codes, `sums / smoothed counts`, of shape `(K, D)`."""
        return self.sums / self.smoothed(self.counts, self.epsilon)[:, None]

    def nearest(self, vectors: Float[Array, "M D"]) -> Int[Array, " M"]:
        """The index of the nearest code (squared Euclidean distance) of each row of `vectors`.

        **Arguments:**

        - `vectors`: an array of shape `(M, D)`.

        **Returns:**

        An int32 array of shape `(M,)` of code indices in `[0, K)`; of equally near codes, the
        lowest index.
        """
        codebook = self.codebook
        distances = (
            jnp.sum(vectors**2, axis=1, keepdims=True)
            - 2.0 * vectors @ codebook.T
            + jnp.sum(codebook**2, axis=1)[None, :]
        )
        return jnp.argmin(distances, axis=1).astype(jnp.int32)

    def quantise(
        self, z: Float[Array, "D *grid"]
    ) -> tuple[Float[Array, "D *grid"], Int[Array, "*grid"]]:
        r"""Replace each vector of one sample by its nearest code.

        **Arguments:**

        - `z`: one encoding of shape `(D, *grid)`.

        **Returns:**

        `(z_q, indices)`: the quantised encoding with the straight-through estimator,
        $z + \mathrm{sg}(z_q - z)$ (its value is the codes, its derivative with respect to $z$
        the identity), and the code indices of shape `grid`.
        """
        if z.ndim < 1 or z.shape[0] != self.sums.shape[1]:
            raise ValueError(f"`z` must have shape ({self.sums.shape[1]}, *grid), got "
                             f"{tuple(z.shape)}.")
        grid = z.shape[1:]
        vectors = z.reshape(z.shape[0], -1).T
        indices = self.nearest(vectors)
        codes = lax.stop_gradient(self.codebook)[indices].T.reshape(z.shape)
        return z + lax.stop_gradient(codes - z), indices.reshape(grid)

    def updated(
        self, z: Float[Array, "B D *grid"], indices: Int[Array, "B *grid"], key: PRNGKeyArray
    ) -> "VectorQuantiser":
        """One moving-average update from a batch, then the dead-code restarts.

        Every code idle for more than `restart_after` updates (this one included) is moved onto a
        random encoding of the batch (distinct encodings where the batch holds at least `K`): its
        count is reset to 1, its idle counter to 0, and the sums of all codes are recomputed from
        the codes so that the codes that stay are unchanged. Nothing here is differentiated
        (everything is under `stop_gradient`).

        **Arguments:**

        - `z`: the batch's encodings, of shape `(B, D, *grid)`.
        - `indices`: their code indices, of shape `(B, *grid)` (from `quantise`; indices outside
          `[0, K)` would be dropped, as JAX drops out-of-bounds scatters).
        - `key`: a JAX random key (the encodings chosen for restarts).

        **Returns:**

        The updated `VectorQuantiser`.
        """
        if z.ndim < 2 or z.shape[1] != self.sums.shape[1]:
            raise ValueError(f"`z` must have shape (B, {self.sums.shape[1]}, *grid), got "
                             f"{tuple(z.shape)}.")
        k = self.num_codes
        z = lax.stop_gradient(z)
        vectors = jnp.moveaxis(z, 1, -1).reshape(-1, z.shape[1]).astype(self.sums.dtype)
        flat = indices.reshape(-1)
        batch_counts = jnp.zeros(k, self.counts.dtype).at[flat].add(1.0)
        batch_sums = jax.ops.segment_sum(vectors, flat, num_segments=k)
        counts = self.decay * self.counts + (1.0 - self.decay) * batch_counts
        sums = self.decay * self.sums + (1.0 - self.decay) * batch_sums
        idle = jnp.where(batch_counts > 0, 0.0, self.idle + 1.0)
        codebook = sums / self.smoothed(counts, self.epsilon)[:, None]
        # Dead-code restarts, all codes at once: the chosen encodings, then consistent statistics.
        dead = idle > self.restart_after
        m = vectors.shape[0]
        chosen = vectors[jr.choice(key, m, (k,), replace=m < k)]
        codebook = jnp.where(dead[:, None], chosen, codebook)
        counts = jnp.where(dead, 1.0, counts)
        idle = jnp.where(dead, 0.0, idle)
        sums = codebook * self.smoothed(counts, self.epsilon)[:, None]
        return eqx.tree_at(lambda q: (q.sums, q.counts, q.idle), self, (sums, counts, idle))

    def statistics(self, indices: Int[Array, "..."]) -> dict[str, Array]:
        r"""How the codes are used in `indices`.

        **Arguments:**

        - `indices`: code indices of any shape, in `[0, K)` (as `quantise` gives them; others are
          not counted).

        **Returns:**

        A dict of scalars: `usage`, the fraction of the `K` codes used at least once, and
        `perplexity`, $\exp(-\sum_k p_k \log p_k)$ of the code frequencies $p_k$ (from 1 when
        one code is used to $K$ when all are used equally).
        """
        counts = jnp.zeros(self.num_codes).at[indices.reshape(-1)].add(1.0)
        p = counts / jnp.maximum(jnp.sum(counts), 1.0)
        return {
            "usage": jnp.mean((counts > 0).astype(p.dtype)),
            "perplexity": jnp.exp(-jnp.sum(xlogy(p, p))),
        }


def _conv(dim: int, c_in: int, c_out: int, kernel: int, key: PRNGKeyArray, stride: int = 1):
    # Circular padding: the fields live on the torus.
    return eqx.nn.Conv(dim, c_in, c_out, kernel, stride=stride, padding=kernel // 2,
                       padding_mode="CIRCULAR", key=key)


class ResidualBlock(eqx.Module):
    """`h + conv1(silu(conv3(silu(h))))`: the residual block of the VQ-VAE paper, with SiLU for its
    ReLU (a ReLU after an upsampling convolution can die for good at a large learning rate)."""

    conv3: eqx.nn.Conv
    conv1: eqx.nn.Conv

    def __init__(self, dim: int, channels: int, *, key: PRNGKeyArray):
        k3, k1 = jr.split(key)
        self.conv3 = _conv(dim, channels, channels, 3, k3)
        self.conv1 = _conv(dim, channels, channels, 1, k1)

    def __call__(self, h: Float[Array, "c *grid"]) -> Float[Array, "c *grid"]:
        """Apply the block to one sample.

        **Arguments:**

        - `h`: one sample of shape `(channels, n_1, ..., n_d)`.

        **Returns:**

        `h + conv1(silu(conv3(silu(h))))`, an array shaped like `h`.
        """
        return h + self.conv1(jax.nn.silu(self.conv3(jax.nn.silu(h))))


class VQVAE(eqx.Module):
    """A convolutional VQ-VAE for one sample `(c, *grid)` on the torus.

    The encoder is a 3-convolution to `width` channels, `downsamplings` strided 3-convolutions
    (stride 2, each followed by a SiLU), `res_blocks` residual blocks, a SiLU and a 1-convolution
    to `latent_channels`; the decoder mirrors it: a 3-convolution, `res_blocks` residual blocks,
    `downsamplings` times nearest upsampling + 3-convolution + SiLU, and a 3-convolution to
    `in_channels`. Every convolution pads circularly. The latent grid is the input grid divided by
    `2**downsamplings` on each axis, so one model encodes any grid whose sizes are multiples of
    `2**downsamplings` (32^2 to 8^2 and 64^2 to 16^2 with `downsamplings=2`).

    **Arguments:**

    - `in_channels`: the channels `c` of the data.
    - `latent_channels`: the dimension `D` of a latent vector and of a code.
    - `num_codes`: the number of codes `K`.
    - `dim`: the dimension of the torus.
    - `width`: the channels inside the encoder and the decoder.
    - `downsamplings`: the number of halvings of the grid.
    - `res_blocks`: residual blocks in the encoder and in the decoder.
    - `decay`, `epsilon`, `restart_after`: the codebook's (see `VectorQuantiser`).
    - `key`: a JAX random key.
    """

    encoder_in: eqx.nn.Conv
    encoder_down: tuple[eqx.nn.Conv, ...]
    encoder_blocks: tuple[ResidualBlock, ...]
    encoder_out: eqx.nn.Conv
    quantiser: VectorQuantiser
    decoder_in: eqx.nn.Conv
    decoder_blocks: tuple[ResidualBlock, ...]
    decoder_up: tuple[eqx.nn.Conv, ...]
    decoder_out: eqx.nn.Conv
    in_channels: int = eqx.field(static=True)
    latent_channels: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    downsamplings: int = eqx.field(static=True)

    def __init__(
        self,
        *,
        in_channels: int,
        latent_channels: int,
        num_codes: int,
        dim: int = 2,
        width: int = 32,
        downsamplings: int = 2,
        res_blocks: int = 1,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        restart_after: int = 50,
        key: PRNGKeyArray,
    ):
        if dim not in (1, 2, 3):
            raise ValueError(f"`dim` must be 1, 2 or 3, got {dim}.")
        if int(in_channels) < 1 or int(latent_channels) < 1 or int(width) < 1:
            raise ValueError(
                f"`in_channels`, `latent_channels` and `width` must be positive, got "
                f"{in_channels}, {latent_channels}, {width}."
            )
        if int(downsamplings) < 0 or int(res_blocks) < 0:
            raise ValueError(f"`downsamplings` and `res_blocks` must be non-negative, got "
                             f"{downsamplings}, {res_blocks}.")
        self.in_channels, self.latent_channels = int(in_channels), int(latent_channels)
        self.dim, self.downsamplings = dim, int(downsamplings)
        width, res_blocks = int(width), int(res_blocks)
        keys = iter(jr.split(key, 5 + 2 * (self.downsamplings + res_blocks)))
        self.encoder_in = _conv(dim, self.in_channels, width, 3, next(keys))
        self.encoder_down = tuple(_conv(dim, width, width, 3, next(keys), stride=2)
                                  for _ in range(self.downsamplings))
        self.encoder_blocks = tuple(ResidualBlock(dim, width, key=next(keys))
                                    for _ in range(res_blocks))
        self.encoder_out = _conv(dim, width, self.latent_channels, 1, next(keys))
        self.quantiser = VectorQuantiser(num_codes, self.latent_channels, decay=decay,
                                         epsilon=epsilon, restart_after=restart_after,
                                         key=next(keys))
        self.decoder_in = _conv(dim, self.latent_channels, width, 3, next(keys))
        self.decoder_blocks = tuple(ResidualBlock(dim, width, key=next(keys))
                                    for _ in range(res_blocks))
        self.decoder_up = tuple(_conv(dim, width, width, 3, next(keys))
                                for _ in range(self.downsamplings))
        self.decoder_out = _conv(dim, width, self.in_channels, 3, next(keys))

    def check_grid(self, grid: Sequence[int]) -> None:
        """Raise a `ValueError` unless `grid` has `dim` axes, each a multiple of
        `2**downsamplings`.

        **Arguments:**

        - `grid`: the spatial shape `(n_1, ..., n_d)`.

        **Returns:**

        None; it raises a `ValueError` when `grid` has another number of axes than `dim`, or a
        size is smaller than or not a multiple of `2**downsamplings`.
        """
        factor = 2**self.downsamplings
        grid = tuple(int(n) for n in grid)
        if len(grid) != self.dim:
            raise ValueError(f"the VQVAE on a {self.dim}-dimensional torus needs a grid of "
                             f"{self.dim} axes, got grid {grid}.")
        if any(n < factor or n % factor for n in grid):
            raise ValueError(
                f"the VQVAE with {self.downsamplings} downsamplings needs grid sizes that are "
                f"multiples of {factor}, got grid {grid}."
            )

    def latent_grid(self, grid: Sequence[int]) -> tuple[int, ...]:
        """The latent grid of the input grid `grid`: each size divided by `2**downsamplings`
        (after `check_grid`).

        **Arguments:**

        - `grid`: the input grid `(n_1, ..., n_d)`.

        **Returns:**

        The tuple `(n_1 / 2**downsamplings, ..., n_d / 2**downsamplings)` of ints; a
        `ValueError` from `check_grid` when `grid` does not fit.
        """
        self.check_grid(grid)
        return tuple(int(n) // 2**self.downsamplings for n in grid)

    def encode(self, x: Float[Array, "c *grid"]) -> Float[Array, "D *latent"]:
        """The continuous encoding of one sample.

        **Arguments:**

        - `x`: one sample of shape `(in_channels, *grid)`.

        **Returns:**

        The encoder output of shape `(latent_channels, *latent_grid(grid))`, before quantisation.
        """
        if x.ndim != self.dim + 1 or x.shape[0] != self.in_channels:
            raise ValueError(
                f"`x` must have shape ({self.in_channels}, n_1, ..., n_{self.dim}) (one sample; "
                f"vmap over batches), got {tuple(x.shape)}."
            )
        self.check_grid(x.shape[1:])
        h = self.encoder_in(x)
        for conv in self.encoder_down:
            h = jax.nn.silu(conv(h))
        for block in self.encoder_blocks:
            h = block(h)
        return self.encoder_out(jax.nn.silu(h))

    def quantise(
        self, z: Float[Array, "D *latent"]
    ) -> tuple[Float[Array, "D *latent"], Int[Array, "*latent"]]:
        """`self.quantiser.quantise(z)`: the nearest codes (straight-through) and their
        indices.

        **Arguments:**

        - `z`: one latent of shape `(latent_channels, *latent)`.

        **Returns:**

        `(z_q, indices)`: the quantised latent, shaped like `z` (its value the codes, its
        derivative with respect to `z` the identity), and the code indices of shape `latent`.
        """
        return self.quantiser.quantise(z)

    def decode(self, z: Float[Array, "D *latent"]) -> Float[Array, "c *grid"]:
        """The reconstruction from one (quantised) latent.

        **Arguments:**

        - `z`: a latent of shape `(latent_channels, *latent)`.

        **Returns:**

        An array of shape `(in_channels, *grid)`, each axis `2**downsamplings` times the
        latent's.
        """
        if z.ndim != self.dim + 1 or z.shape[0] != self.latent_channels:
            raise ValueError(
                f"`z` must have shape ({self.latent_channels}, m_1, ..., m_{self.dim}) (one "
                f"latent; vmap over batches), got {tuple(z.shape)}."
            )
        h = self.decoder_in(z)
        for block in self.decoder_blocks:
            h = block(h)
        for conv in self.decoder_up:
            for axis in range(1, h.ndim):
                h = jnp.repeat(h, 2, axis=axis)
            h = jax.nn.silu(conv(h))
        return self.decoder_out(h)

    def __call__(
        self, x: Float[Array, "c *grid"]
    ) -> tuple[Float[Array, "c *grid"], Float[Array, "D *latent"], Int[Array, "*latent"]]:
        """Encode, quantise and decode one sample.

        **Arguments:**

        - `x`: one sample of shape `(in_channels, *grid)`.

        **Returns:**

        `(reconstruction, z_e, indices)`: the decoded quantised latent (shape of `x`), the
        continuous encoding and the code indices on the latent grid.
        """
        z_e = self.encode(x)
        z_q, indices = self.quantise(z_e)
        return self.decode(z_q), z_e, indices

    def with_statistics(self, quantiser: VectorQuantiser) -> "VQVAE":
        """This model with the codebook statistics (`sums`, `counts`, `idle`) of `quantiser`
        (e.g. the one `vqvae_loss` returns), the rest unchanged.

        **Arguments:**

        - `quantiser`: a `VectorQuantiser` of the same number of codes and dimension.

        **Returns:**

        The `VQVAE` with those statistics.
        """
        if quantiser.sums.shape != self.quantiser.sums.shape:
            raise ValueError(f"the quantiser's codebook has shape {tuple(quantiser.sums.shape)}, "
                             f"the model's {tuple(self.quantiser.sums.shape)}.")
        return eqx.tree_at(
            lambda m: (m.quantiser.sums, m.quantiser.counts, m.quantiser.idle),
            self,
            (quantiser.sums, quantiser.counts, quantiser.idle),
        )


def vqvae_loss(
    model: VQVAE, x: Float[Array, "B c *grid"], key: PRNGKeyArray, *, commitment: float = 0.25
) -> tuple[Float[Array, ""], VectorQuantiser, dict[str, Float[Array, ""]]]:
    r"""The VQ-VAE loss of a batch, with the codebook's update from its encodings.

    The loss is $\mathrm{mean}\,(\hat x - x)^2 + \beta\, \mathrm{mean}\,(z_e - \mathrm{sg}(z_q))^2$:
    the reconstruction error, whose gradient reaches the encoder through the straight-through
    estimator, and the commitment term that keeps the encodings near their codes. The codebook
    has no loss term: it follows the encodings through `VectorQuantiser.updated`.

    **Arguments:**

    - `model`: the `VQVAE`.
    - `x`: a batch of shape `(B, in_channels, *grid)`.
    - `key`: a JAX random key (the codebook's restarts).
    - `commitment`: the weight $\beta$ of the commitment term.

    **Returns:**

    `(loss, new_quantiser, metrics)`: the scalar loss, `model.quantiser.updated(...)` from this
    batch's encodings (put it into the model with `VQVAE.with_statistics` after the optimiser's
    update), and a dict of scalars `reconstruction`, `commitment`, `usage` and `perplexity`.
    """
    if x.ndim != model.dim + 2:
        raise ValueError(f"`x` must have shape (B, {model.in_channels}, n_1, ..., n_{model.dim}), "
                         f"got {tuple(x.shape)}.")
    z_e = jax.vmap(model.encode)(x)
    z_q, indices = jax.vmap(model.quantise)(z_e)
    reconstruction = jnp.mean((jax.vmap(model.decode)(z_q) - x) ** 2)
    commit = jnp.mean((z_e - lax.stop_gradient(z_q)) ** 2)
    loss = reconstruction + commitment * commit
    new_quantiser = model.quantiser.updated(z_e, indices, key)
    metrics = {"reconstruction": reconstruction, "commitment": commit,
               **model.quantiser.statistics(indices)}
    return loss, new_quantiser, metrics
