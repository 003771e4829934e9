"""Networks shared by the RL algorithms: an MLP for vector observations and the Nature-DQN CNN for
stacks of 84x84 uint8 frames. ``trunk_for`` picks the one an observation space needs."""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from lab.errors import LabError


def mlp(in_dim: int, out_dim: int, hidden: tuple[int, ...] = (64, 64), activation: type[nn.Module] = nn.ReLU,
        out_gain: float | None = None) -> nn.Sequential:
    """Linear layers of sizes in_dim -> hidden... -> out_dim with ``activation`` between them.
    ``out_gain`` gives the last layer an orthogonal init with that gain (0.01 for policy heads)."""
    sizes = (in_dim, *hidden)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation()]
    last = nn.Linear(sizes[-1], out_dim)
    if out_gain is not None:
        nn.init.orthogonal_(last.weight, out_gain)
        nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class NatureCNN(nn.Module):
    """Mnih et al. (2015): conv 32x8x8/4, conv 64x4x4/2, conv 64x3x3/1, dense 512; uint8 in, /255 inside."""

    def __init__(self, in_channels: int = 4, features: int = 512):
        super().__init__()
        self.features_dim = features
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, features), nn.ReLU(),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames.float() / 255.0)


def is_image_space(space: gym.Space) -> bool:
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def trunk_for(space: gym.Space, hidden: tuple[int, ...], activation: type[nn.Module] = nn.ReLU
              ) -> tuple[nn.Module, int]:
    """(feature network, feature size) for an observation space: NatureCNN for (C, 84, 84) uint8 frames,
    an MLP (ending in ``activation``) for flat Box spaces. Anything else is refused with the reason."""
    if is_image_space(space):
        if space.shape[1:] != (84, 84):
            raise LabError(f"observations of shape {space.shape} are images the Nature CNN cannot take; "
                           "it needs (C, 84, 84) uint8 frames (use the Atari pipeline, ALE/<Game>-v5).")
        cnn = NatureCNN(space.shape[0])
        return cnn, cnn.features_dim
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        dims = (space.shape[0], *hidden)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), activation()]
        return nn.Sequential(*layers), dims[-1]
    if isinstance(space, gym.spaces.Discrete):
        raise LabError(f"observations are a Discrete({space.n}) index; these networks need a flat Box vector "
                       "(one-hot encode it) or 84x84 image frames.")
    raise LabError(f"observation space {space} fits neither network: the MLP takes a flat Box vector, "
                   "the Nature CNN takes (C, 84, 84) uint8 frames.")


def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2)) -> nn.Module:
    """Orthogonal weights and zero biases for every Linear/Conv layer (the usual actor-critic init)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(layer.weight, gain)
            nn.init.zeros_(layer.bias)
    return module
