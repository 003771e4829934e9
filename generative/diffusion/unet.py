"""The U-Net denoiser of DDPM (Ho et al., 2020; Ronneberger et al., 2015), kept small and readable.

Residual blocks with GroupNorm that take the time(+class) embedding, self-attention at the low
resolutions listed, a downsampling path whose every activation is a skip connection to the
upsampling path. Sized by a base ``width`` and one channel multiplier per resolution level.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from generative.diffusion.embedding import Conditioning


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer whose output is added to a residual stream (starts as identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, emb_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, channels_out)
        self.norm2 = nn.GroupNorm(groups, channels_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(channels_out, channels_out, 3, padding=1))
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class Attention(nn.Module):
    """Multi-head self-attention over the H·W positions, residual."""

    def __init__(self, channels: int, groups: int, head_dim: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_dim)
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)                   # (b, heads, hw, c/heads)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """ε-, v- or x_0-predicting U-Net: (x_t (B, C, H, W), t (B,), labels (B,) or None) -> (B, C, H, W),
    or (B, out_channels, H, W) (2C: the prediction, then the variance interpolation v).

    H and W must be divisible by 2^(len(channel_mults) - 1)."""

    def __init__(self, in_channels: int, width: int = 32, channel_mults: tuple[int, ...] = (1, 2, 2),
                 res_blocks: int = 1, attention_resolutions: tuple[int, ...] = (8,), image_size: int = 16,
                 dropout: float = 0.1, num_classes: int = 0, groups: int = 8, out_channels: int | None = None):
        super().__init__()
        emb_dim = 4 * width
        self.conditioning = Conditioning(width, emb_dim, num_classes)
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)

        self.down = nn.ModuleList()
        skips, channels, size = [width], width, image_size
        for level, mult in enumerate(channel_mults):
            for _ in range(res_blocks):
                self.down.append(self._block(channels, width * mult, emb_dim, groups, dropout,
                                             size in attention_resolutions))
                channels = width * mult
                skips.append(channels)
            if level < len(channel_mults) - 1:
                self.down.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
                skips.append(channels)
                size //= 2

        self.middle = nn.ModuleList([ResBlock(channels, channels, emb_dim, groups, dropout),
                                     Attention(channels, groups),
                                     ResBlock(channels, channels, emb_dim, groups, dropout)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(res_blocks + 1):
                self.up.append(self._block(channels + skips.pop(), width * mult, emb_dim, groups, dropout,
                                           size in attention_resolutions))
                channels = width * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(channels, channels, 3, padding=1)))
                size *= 2

        self.head = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                  _zero(nn.Conv2d(channels, out_channels or in_channels, 3, padding=1)))

    @staticmethod
    def _block(channels_in, channels_out, emb_dim, groups, dropout, attention: bool) -> nn.ModuleList:
        layers = [ResBlock(channels_in, channels_out, emb_dim, groups, dropout)]
        if attention:
            layers.append(Attention(channels_out, groups))
        return nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.conditioning(t, labels)
        h = self.stem(x)
        skips = [h]
        for layer in self.down:
            h = self._run_block(layer, h, emb)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, emb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = self._run_block(layer, torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.head(h)

    @staticmethod
    def _run_block(layer: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.ModuleList):          # a residual block, maybe followed by attention
            for sublayer in layer:
                h = sublayer(h, emb)
            return h
        return layer(h)                                # a strided-conv downsampling
