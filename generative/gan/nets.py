"""Generators and discriminators: MLPs for the 2-D toys, DCGAN convolutions for 8x8 to 32x32 images.

Every network takes ``labels`` (int64, shape (N,)) as its second argument; unconditional networks
(``num_classes=0``) ignore it. Conditioning (Mirza & Osindero 2014; Miyato & Koyama 2018):

* the generator reads the one-hot label concatenated to z;
* the discriminator either reads it concatenated to its input (``concat``: one-hot planes for images)
  or scores ``psi(h) + <embed(y), h>`` on its last features h (``projection``).

Discriminators return one real number per sample (a logit, or the critic's score).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations


def spectral_norm(module: nn.Module) -> nn.Module:
    """W / sigma(W), sigma the largest singular value estimated by one power iteration per training
    forward pass (Miyato et al. 2018); the u vector persists, so the estimate converges as training runs."""
    return parametrizations.spectral_norm(module)


def append_label(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """x (N, F) or (N, C, H, W) with the one-hot label appended as features or constant planes."""
    if not num_classes:
        return x
    one_hot = F.one_hot(labels, num_classes).to(x.dtype)
    if x.dim() == 4:
        one_hot = one_hot[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
    return torch.cat([x, one_hot], dim=1)


class ScoreHead(nn.Module):
    """The discriminator's last layer: a linear score of the features h, plus <embed(y), h> when it
    is a projection discriminator."""

    def __init__(self, features: int, num_classes: int, projection: bool, norm=lambda m: m):
        super().__init__()
        self.linear = norm(nn.Linear(features, 1))
        self.embed = norm(nn.Embedding(num_classes, features)) if projection and num_classes else None

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        score = self.linear(h).squeeze(-1)
        if self.embed is not None:
            score = score + (self.embed(labels) * h).sum(dim=-1)   # projection term <embed(y), h>
        return score


class Discriminator(nn.Module):
    """A feature trunk and a ScoreHead, with the label fed where the conditioning says."""

    def __init__(self, trunk: nn.Module, features: int, num_classes: int, conditioning: str, norm):
        super().__init__()
        self.num_classes, self.concat = num_classes, conditioning == "concat"
        self.trunk = trunk
        self.head = ScoreHead(features, num_classes, projection=not self.concat, norm=norm)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.concat:
            x = append_label(x, labels, self.num_classes)
        return self.head(self.trunk(x).flatten(1), labels)


def _norm(use_spectral_norm: bool):
    return spectral_norm if use_spectral_norm else (lambda module: module)


# ---------------------------------------------------------------- 2-D toys
class MLPGenerator(nn.Module):
    """z (+ one-hot label) -> ``depth`` layers of ``hidden`` units with batch norm and ReLU (the DCGAN
    generator guideline, as in the PacGAN / VEEGAN toy generators) -> a point of R^dim."""

    def __init__(self, latent_dim: int, hidden: int, depth: int, dim: int = 2, num_classes: int = 0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        layers, width = [], latent_dim + num_classes
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(append_label(z, labels, self.num_classes))


def pack(x: torch.Tensor, m: int) -> torch.Tensor:
    """(N * m, d) samples -> (N, m * d): m consecutive samples joined into one discriminator input
    (PacGAN, Lin et al. 2018; m = 1 leaves x as it is)."""
    # x_pack = [x_1, ..., x_m]  (the discriminator judges m samples at once, all real or all generated)
    return x.reshape(len(x) // m, m * x.shape[1]) if m > 1 else x


def mlp_discriminator(hidden: int, depth: int, dim: int = 2, num_classes: int = 0,
                      conditioning: str = "projection", use_spectral_norm: bool = False) -> Discriminator:
    """``depth`` LeakyReLU(0.2) layers of ``hidden`` units and a ScoreHead."""
    norm = _norm(use_spectral_norm)
    layers, width = [], dim + (num_classes if conditioning == "concat" else 0)
    for _ in range(depth):
        layers += [norm(nn.Linear(width, hidden)), nn.LeakyReLU(0.2)]
        width = hidden
    return Discriminator(nn.Sequential(*layers), hidden, num_classes, conditioning, norm)


# ---------------------------------------------------------------- DCGAN (Radford et al. 2016)
def dcgan_base(image_size: int) -> tuple[int, int]:
    """(base, upsamplings): the generator starts at base x base and doubles up to image_size
    (8 -> 4 x 1, 16 -> 4 x 2, 32 -> 4 x 3, 28 -> 7 x 2)."""
    base, doublings = image_size, 0
    while base % 2 == 0 and base > 7:
        base, doublings = base // 2, doublings + 1
    if doublings == 0:
        raise ValueError(f"image size {image_size} cannot be reached by doubling from 4 to 7 pixels")
    return base, doublings


def dcgan_init(module: nn.Module) -> None:
    """Weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), biases 0 (as in the DCGAN paper)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """z (+ one-hot label) -> linear to base x base -> fractionally-strided 4x4 convolutions that double
    the size, batch norm and ReLU between them, tanh at the output (DCGAN guidelines)."""

    def __init__(self, latent_dim: int, channels: int, image_size: int, image_channels: int, num_classes: int = 0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        base, doublings = dcgan_base(image_size)
        width = channels * 2 ** (doublings - 1)
        layers: list[nn.Module] = [
            nn.Linear(latent_dim + num_classes, width * base * base, bias=False),
            nn.Unflatten(1, (width, base, base)), nn.BatchNorm2d(width), nn.ReLU()]
        for _ in range(doublings - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU()]
            width //= 2
        layers += [nn.ConvTranspose2d(width, image_channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(append_label(z, labels, self.num_classes))


def dcgan_discriminator(channels: int, image_size: int, image_channels: int, num_classes: int = 0,
                        conditioning: str = "projection", use_spectral_norm: bool = False,
                        batch_norm: bool = True) -> Discriminator:
    """Strided 4x4 convolutions that halve the size down to base x base, LeakyReLU(0.2), batch norm
    after all but the first (DCGAN guidelines; off for WGAN-GP, whose penalty is per sample, and
    under spectral normalization), then a ScoreHead on the flattened features."""
    norm = _norm(use_spectral_norm)
    base, doublings = dcgan_base(image_size)
    width = image_channels + (num_classes if conditioning == "concat" else 0)
    layers: list[nn.Module] = []
    for i in range(doublings):
        out = channels * 2 ** i
        layers.append(norm(nn.Conv2d(width, out, 4, 2, 1, bias=not (batch_norm and i > 0))))
        if batch_norm and i > 0:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.LeakyReLU(0.2))
        width = out
    discriminator = Discriminator(nn.Sequential(*layers), width * base * base, num_classes, conditioning, norm)
    if not use_spectral_norm:
        dcgan_init(discriminator)
    return discriminator
