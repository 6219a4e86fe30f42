"""Schemas of a run's autoencoder (`autoencoder`) and of its loss (`loss=vqvae`): a VQ-VAE trained in
one stage, whose latent maps a diffusion prior models in the next.

A run with an autoencoder has the part `autoencoder` beside the score network; the network then
acts on the latent maps (`latent_channels` channels on the data's grid divided by
`2**downsamplings`), and the run's diffusion loss trains it on the frozen encoder's outputs.
"""

import dataclasses

from .diffusion import check_name
from .errors import number, positive


@dataclasses.dataclass
class VQVAEConfig:
    """A VQ-VAE (`nets.VQVAE`): convolutional encoder and decoder around a vector quantiser whose
    codebook follows exponential moving averages, with restarts of unused codes."""

    _target_: str = "nets.VQVAE"  # the class built (with the data's channels and dimension)
    latent_channels: int = 4  # channels D of the latent map (the dimension of each code)
    num_codes: int = 64  # codebook size K
    width: int = 32  # hidden channels of the encoder and decoder
    downsamplings: int = 2  # halvings of the grid: the latent grid is the data's divided by 2**downsamplings
    res_blocks: int = 1  # residual blocks at the latent resolution, in the encoder and in the decoder
    decay: float = 0.99  # decay of the codebook's moving averages, in (0, 1)
    epsilon: float = 1.0e-5  # Laplace smoothing of the codes' counts, > 0
    restart_after: int = 50  # updates without use after which a code moves to an encoding of the batch

    def check(self, where: str = "autoencoder") -> None:
        for field in ("latent_channels", "num_codes", "width", "restart_after"):
            positive(f"{where}.{field}", getattr(self, field))
        positive(f"{where}.downsamplings", self.downsamplings, 0)
        positive(f"{where}.res_blocks", self.res_blocks, 0)
        number(f"{where}.decay", self.decay, lambda v: 0 < v < 1, "a number in (0, 1)")
        number(f"{where}.epsilon", self.epsilon, lambda v: v > 0, "a number > 0")


@dataclasses.dataclass
class VqvaeLossConfig:
    """The VQ-VAE's loss (`nets.vqvae_loss`): squared reconstruction error plus the commitment term;
    the codebook follows its moving averages. Trains the part `autoencoder` only."""

    name: str = "vqvae"  # the loss: vqvae (this schema); given as a stage's loss ({name: vqvae})
    commitment: float = 0.25  # weight beta of the commitment term ||z_e - sg(z_q)||^2, >= 0

    def check(self, where: str = "loss") -> None:
        check_name(where, self, "vqvae")
        number(f"{where}.commitment", self.commitment, lambda v: v >= 0, "a number >= 0")
