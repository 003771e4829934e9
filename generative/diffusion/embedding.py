"""What tells a denoiser which step it is at (and which class it should draw): the shared embedding."""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (Vaswani et al., 2017; as in Ho et al.): (B,) -> (B, dim)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Conditioning(nn.Module):
    """emb(t, y) = MLP(sinusoid(t)) + E[y]. With ``num_classes`` > 0 the label table has one extra row,
    index ``num_classes``, the "no label" token that label dropout trains for classifier-free guidance."""

    def __init__(self, base_dim: int, emb_dim: int, num_classes: int = 0):
        super().__init__()
        self.base_dim = base_dim
        self.num_classes = num_classes
        self.time = nn.Sequential(nn.Linear(base_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None

    def forward(self, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time(timestep_embedding(t, self.base_dim))
        if self.label is not None:
            if labels is None:
                labels = torch.full_like(t, self.num_classes)
            emb = emb + self.label(labels)
        return emb
