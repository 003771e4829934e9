"""Mode coverage on the 2-D toys (the mode-collapse benchmarks of VEEGAN and PacGAN).

A sample is *high quality* when it lies within 3 standard deviations of some mode centre (for moons
and the Swiss roll: of the noiseless curve). A mode is *captured* when at least ``MIN_MODE_SHARE`` of
the samples are high-quality samples of that mode. PacGAN's reference code (Lin et al. 2018, after
VEEGAN) scores 2,500 samples and counts a mode with at least one; we keep that share, 1 in 2,500 of
N samples (at least one sample), so at N = 2,500 the numbers are the benchmark's.
"""
from __future__ import annotations

import functools
import math

import torch

from generative.data import Toy2D, toy_distribution

MIN_MODE_SHARE = 1 / 2500
"""Share of all samples a mode needs, among its high-quality samples, to count as captured."""


def mode_counts(samples: torch.Tensor, toy: Toy2D) -> tuple[torch.Tensor, torch.Tensor]:
    """(high-quality mask (N,), high-quality samples per mode (K,)) of a mixture toy."""
    distance, mode = torch.cdist(samples.double(), toy.centers.double()).min(1)
    high_quality = distance <= 3.0 * toy.std
    return high_quality, torch.bincount(mode[high_quality], minlength=len(toy.centers))


def modes_captured(samples: torch.Tensor, toy: Toy2D, min_share: float = MIN_MODE_SHARE) -> int:
    """Number of modes holding at least ``min_share`` of the samples as high-quality samples."""
    _, counts = mode_counts(samples, toy)
    return int((counts >= math.ceil(min_share * len(samples) - 1e-9)).sum())


@functools.cache
def _curve(name: str) -> torch.Tensor:
    """20,000 points on the noiseless curve of moons / swissroll."""
    return Toy2D(name, None, 0.0).sample(20_000, torch.Generator().manual_seed(0)).double()


def high_quality_share(samples: torch.Tensor, toy: Toy2D) -> float:
    """Share of samples within 3 standard deviations of a mode centre (or of the noiseless curve)."""
    support = toy.centers.double() if toy.centers is not None else _curve(toy.name)
    distance = torch.cat([torch.cdist(chunk.double(), support).min(1).values for chunk in samples.split(1000)])
    return (distance <= 3.0 * toy.std).double().mean().item()


def reference_points(name: str, n: int) -> torch.Tensor:
    """A fixed draw (seed 0) of n points of the true distribution."""
    return toy_distribution(name).sample(n, torch.Generator().manual_seed(0))
