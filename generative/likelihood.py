"""Likelihoods of discrete images, shared by the models that report one (PixelCNN, VAE, DDPM).

Pixels take ``levels`` discrete values; a model with a density over real numbers scores them by
integrating its density over each value's bin (the discretized Gaussian of Ho et al. 2020, eq. 13),
so every model's figure is -log P(x) of the same discrete image, in nats per image or bits per
dimension, and the figures are comparable across families.
"""
from __future__ import annotations

import math

import torch

from lab.errors import LabError

LIKELIHOODS = {"pixelcnn": "exact -log p(x)", "vae": "importance-weighted bound", "ddpm": "variational bound"}
"""The algorithms that score -log p(x) of discrete images, and what their figure is."""


def require_likelihood(algo: str) -> str:
    """What kind of -log p(x) an algorithm reports; one without a likelihood is refused in one sentence."""
    if algo not in LIKELIHOODS:
        raise LabError(f"{algo} defines no likelihood, so there is no bits/dim to report; "
                       f"the models with one are {', '.join(LIKELIHOODS)}.")
    return LIKELIHOODS[algo]


def bits_per_dim(nats_per_image: float, dims: int) -> float:
    """Nats per image -> bits per dimension: nats / (D ln 2)."""
    return nats_per_image / (dims * math.log(2))


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
                                  levels: int) -> torch.Tensor:
    """log P(x) per pixel, for x on the grid of ``levels`` values spanning [-1, 1], under N(mean, σ²)
    integrated over x's bin of half-width δ = 1 / (levels - 1); the two end bins reach out to ±∞,
    so the probabilities of the ``levels`` values sum to 1. Computed in float64, returned in x's dtype."""
    dtype = x.dtype
    x, mean, log_std = (v.double() for v in torch.broadcast_tensors(x, mean, log_std))
    delta = 1.0 / (levels - 1)
    inv_std = torch.exp(-log_std)
    upper = torch.where(x > 1 - delta, math.inf, (x + delta - mean) * inv_std)
    lower = torch.where(x < -1 + delta, -math.inf, (x - delta - mean) * inv_std)
    # discretized Gaussian decoder: P(x) = Φ((x + δ - μ) / σ) - Φ((x - δ - μ) / σ)
    right_tail = lower > 0   # Φ(b) - Φ(a) = Φ(-a) - Φ(-b): keep both ends in the left tail, where log Φ is exact
    a, b = torch.where(right_tail, -upper, lower), torch.where(right_tail, -lower, upper)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return (log_b + torch.log1p(-torch.exp(log_a - log_b))).to(dtype)
