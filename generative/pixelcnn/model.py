"""Gated PixelCNN (van den Oord et al., 2016, "Conditional Image Generation with PixelCNN Decoders").

Two stacks of masked convolutions run side by side. The vertical stack sees every pixel in the rows
above; the horizontal stack sees the pixels to the left in the current row and takes the vertical
stack's features at the same position, so together they cover all of x_<i with no blind spot. The
first layer masks the centre (type A: pixel i never sees itself); later layers keep it (type B: they
see features that already exclude pixel i). Each block is gated, tanh(W_f * x + V_f h) ⊙ σ(W_g * x + V_g h),
with h an optional class embedding, and the horizontal stack is residual. The head gives one softmax
over the ``levels`` discrete values of every pixel; one-channel images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from generative.data import level_indices


class MaskedConv2d(nn.Conv2d):
    """A "same"-padded convolution whose weights are multiplied by a fixed 0/1 mask at every call."""

    def __init__(self, channels_in: int, channels_out: int, mask: torch.Tensor):
        super().__init__(channels_in, channels_out, tuple(mask.shape), padding=(mask.shape[0] // 2, mask.shape[1] // 2))
        self.register_buffer("mask", mask[None, None].float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def vertical_mask(kernel: int, see_centre_row: bool) -> torch.Tensor:
    """k x k: the rows above the centre (and the centre row itself for type B layers)."""
    mask = torch.zeros(kernel, kernel)
    mask[:kernel // 2 + see_centre_row] = 1
    return mask


def horizontal_mask(kernel: int, see_centre: bool) -> torch.Tensor:
    """1 x k: the pixels left of the centre (and the centre itself for type B layers)."""
    mask = torch.zeros(1, kernel)
    mask[0, :kernel // 2 + see_centre] = 1
    return mask


def gate(features: torch.Tensor) -> torch.Tensor:
    # gated activation unit: tanh(f) ⊙ σ(g), the two halves of the channels
    f, g = features.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedBlock(nn.Module):
    """One gated layer of both stacks; ``first`` makes it type A."""

    def __init__(self, channels_in: int, channels: int, kernel: int, num_classes: int, first: bool):
        super().__init__()
        self.vertical = MaskedConv2d(channels_in, 2 * channels, vertical_mask(kernel, not first))
        self.horizontal = MaskedConv2d(channels_in, 2 * channels, horizontal_mask(kernel, not first))
        self.vertical_to_horizontal = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.label = nn.Embedding(num_classes, 2 * channels) if num_classes else None
        self.residual = not first

    def forward(self, v: torch.Tensor, h: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        v_features = self.vertical(v)
        h_features = self.horizontal(h) + self.vertical_to_horizontal(v_features)
        if self.label is not None and labels is not None:
            bias = self.label(labels)[:, :, None, None]
            v_features, h_features = v_features + bias, h_features + bias
        h_out = self.out(gate(h_features))
        return gate(v_features), h_out + h if self.residual else h_out


def log_prob(logits: torch.Tensor, x: torch.Tensor, levels: int) -> torch.Tensor:
    """log p(x) per image from the per-pixel logits (B, levels, H, W) of images x (B, 1, H, W)."""
    targets = level_indices(x, levels).squeeze(1)
    # autoregressive factorisation: log p(x) = Σ_i log p(x_i | x_<i)
    return -F.cross_entropy(logits.float(), targets, reduction="none").flatten(1).sum(1)


class PixelCNN(nn.Module):
    """(x (B, 1, H, W) in [0, 1], labels (B,) or None) -> logits (B, levels, H, W) of p(x_i | x_<i)."""

    def __init__(self, levels: int, channels: int = 64, layers: int = 8, kernel: int = 3, num_classes: int = 0):
        super().__init__()
        self.levels, self.num_classes = levels, num_classes
        self.blocks = nn.ModuleList(GatedBlock(1 if i == 0 else channels, channels, kernel, num_classes, first=i == 0)
                                    for i in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(),
                                  nn.Conv2d(channels, levels, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        v = h = 2 * x - 1
        for block in self.blocks:
            v, h = block(v, h, labels)
        return self.head(h)

    def log_prob(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) in nats per image, exactly."""
        return log_prob(self(x, labels), x, self.levels)

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int, int], labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, progress=None) -> torch.Tensor:
        """n images drawn pixel by pixel in raster order, x_i ~ p(x_i | x_<i); one network pass per pixel.
        ``progress(done, total)`` is called after each row."""
        weight = next(self.parameters())
        x = torch.zeros(n, *shape, device=weight.device, dtype=weight.dtype)
        _, height, width = shape
        for row in range(height):
            for col in range(width):
                probs = self(x, labels)[:, :, row, col].float().softmax(1)
                k = torch.multinomial(probs, 1, generator=generator).squeeze(1)
                x[:, 0, row, col] = k.to(x.dtype) / (self.levels - 1)
            if progress is not None:
                progress(row + 1, height)
        return x
