"""The maths of the variational bound, as small functions on tensors (checked by hand in the tests).

All densities are diagonal Gaussians over the latent ``z`` of shape (..., D); every log-density and
KL is summed over the latent dimensions unless its name says "per_dim".

    reparameterize         z = μ + σ ⊙ ε,  ε ~ N(0, I)           (gradients flow to μ and σ)
    gaussian_kl_per_dim    KL(N(μ, σ²) || N(0, 1)) per dimension, in closed form
    diagonal_gaussian_log_prob, standard_normal_log_prob
    log_mean_exp           log (1/K) Σ_k exp(a_k), computed stably
"""
from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2.0 * math.pi)


def reparameterize(mu: torch.Tensor, log_var: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The reparameterization trick: a sample of N(μ, σ²) as a differentiable function of μ and σ."""
    return mu + torch.exp(0.5 * log_var) * eps


def gaussian_kl_per_dim(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) || N(0, 1)) = ½ (μ² + σ² − 1 − log σ²), elementwise (one value per latent dimension)."""
    return 0.5 * (mu.square() + log_var.exp() - 1.0 - log_var)


def gaussian_kl(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z)) for q = N(μ, diag σ²) and p = N(0, I), summed over the latent dimensions."""
    return gaussian_kl_per_dim(mu, log_var).sum(-1)


def diagonal_gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; μ, diag σ²), summed over the last dimension."""
    return -0.5 * (LOG_2PI + log_var + (z - mu).square() * torch.exp(-log_var)).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I), summed over the last dimension (the prior p(z))."""
    return -0.5 * (LOG_2PI + z.square()).sum(-1)


def log_mean_exp(values: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/K) Σ_k exp(values_k) along ``dim`` without overflow (log-sum-exp minus log K)."""
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])


def free_bits_kl(kl_per_dim: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL term under "free bits" (Kingma et al., 2016): a latent dimension whose batch-mean KL is
    below ``free_bits`` nats counts as exactly ``free_bits`` (a constant, so no gradient pushes it
    lower). Per example; its batch mean is Σ_j max(free_bits, mean KL_j). Plain KL when free_bits = 0."""
    if free_bits <= 0:
        return kl_per_dim.sum(-1)
    above = kl_per_dim.mean(0) >= free_bits
    return torch.where(above, kl_per_dim, torch.full_like(kl_per_dim, free_bits)).sum(-1)
