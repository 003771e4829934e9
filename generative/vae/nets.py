"""Encoder / decoder pairs. An encoder maps images (N, C, H, W) to (μ, log σ²) of q(z|x), each (N, D);
a decoder maps latents (N, D) to one output per pixel (N, C, H, W) that the likelihood interprets.

    conv   a 3x3 convolution, then stride-2 4x4 convolutions (channels doubling) until the side is
           at most 7 (8 -> 4 for digits, 28 -> 14 -> 7 for MNIST); the decoder mirrors it with
           transposed convolutions. The default.
    mlp    two hidden layers each way (the MLP of Kingma & Welling, 2014, with SiLU units).
"""
from __future__ import annotations

import math

import torch
from torch import nn


def downsamplings(side: int) -> int:
    """How many stride-2 stages the conv pair uses for images of this side."""
    count = 0
    while side > 7 and side % 2 == 0:
        side //= 2
        count += 1
    return count


class GaussianHead(nn.Module):
    """The last linear layer of an encoder: features -> (μ, log σ²), returned in float32."""

    def __init__(self, features: int, latent_dim: int):
        super().__init__()
        self.linear = nn.Linear(features, 2 * latent_dim)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.linear(h).float().chunk(2, dim=-1)
        return mu, log_var


class ConvEncoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent_dim: int, channels: int = 32):
        super().__init__()
        c, side, _ = shape
        layers: list[nn.Module] = [nn.Conv2d(c, channels, 3, padding=1), nn.SiLU()]
        for _ in range(downsamplings(side)):
            layers += [nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1), nn.SiLU()]
            channels, side = 2 * channels, side // 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = GaussianHead(channels * side * side, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(x))


class ConvDecoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent_dim: int, channels: int = 32):
        super().__init__()
        c, side, _ = shape
        stages = downsamplings(side)
        top, small = channels * 2 ** stages, side // 2 ** stages
        layers: list[nn.Module] = [nn.Linear(latent_dim, top * small * small), nn.SiLU(),
                                   nn.Unflatten(1, (top, small, small))]
        for _ in range(stages):
            layers += [nn.ConvTranspose2d(top, top // 2, 4, stride=2, padding=1), nn.SiLU()]
            top //= 2
        layers.append(nn.Conv2d(top, c, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


class MLPEncoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent_dim: int, hidden: int = 512):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), hidden), nn.SiLU(),
                                  nn.Linear(hidden, hidden), nn.SiLU())
        self.head = GaussianHead(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.body(x))


class MLPDecoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent_dim: int, hidden: int = 512):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                  nn.Linear(hidden, math.prod(shape)), nn.Unflatten(1, shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


def make_networks(net: str, shape: tuple[int, int, int], latent_dim: int, width: int) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) of the named kind; ``width`` is the conv pair's first channel count or the
    MLP's hidden units."""
    if net == "conv":
        return ConvEncoder(shape, latent_dim, width), ConvDecoder(shape, latent_dim, width)
    if net == "mlp":
        return MLPEncoder(shape, latent_dim, width), MLPDecoder(shape, latent_dim, width)
    raise ValueError(f"unknown network {net!r}; known: conv, mlp")
