"""The decoder's distributions p(x|z) over pixels: the decoder outputs one number per pixel and a
likelihood turns it into a log-density of the image (summed over pixels, one value per example)
and into the image shown for that z (the distribution's mean).

    Bernoulli             binary pixels; the output is the logit. Log-probabilities in nats, the
                          numbers the literature reports on binarized MNIST.
    Gaussian              gray levels; the output is the mean, σ fixed or one learned σ shared by all
                          pixels ("σ-VAE", Rybkin et al., 2021). A density: values are not comparable
                          with the Bernoulli ones and can go below zero.
    ContinuousBernoulli   gray levels in [0, 1] (Loaiza-Ganem & Cunningham, 2019): the Bernoulli
                          formula made a proper density on [0, 1] by its normalizing constant C(λ).
    DiscretizedGaussian   the Gaussian integrated over each pixel's bin of the data's discrete levels
                          (17 for digits, 256 for bytes): probabilities, so -log p(x) is in nats of the
                          discrete image, comparable with PixelCNN's and the DDPM bound.
"""
from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from generative.likelihood import discretized_gaussian_log_prob

Likelihood = Literal["bernoulli", "gaussian", "continuous-bernoulli", "discretized-gaussian"]
LIKELIHOODS = get_args(Likelihood)


def _per_example(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(1).sum(1)


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log Π λ^x (1 − λ)^(1−x) with λ = sigmoid(logits), per pixel."""
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none")


def continuous_bernoulli_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(λ) with C(λ) = 2 atanh(1 − 2λ) / (1 − 2λ); with λ = sigmoid(l) this is l / tanh(l/2),
    an even function equal to 2 at l = 0 (its Taylor series log 2 + l²/12 is used near there)."""
    a = logits.abs()
    small = a < 1e-2
    safe = torch.where(small, torch.ones_like(a), a)
    exact = torch.log(safe) - torch.log(torch.tanh(0.5 * safe))
    return torch.where(small, math.log(2.0) + a.square() / 12.0, exact)


def continuous_bernoulli_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] = λ / (2λ − 1) + 1 / (2 atanh(1 − 2λ)) = sigmoid(l) / tanh(l/2) − 1/l (→ 1/2 + l/12 near 0)."""
    small = logits.abs() < 1e-2
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.sigmoid(safe) / torch.tanh(0.5 * safe) - 1.0 / safe
    return torch.where(small, 0.5 + logits / 12.0, exact)


class Bernoulli(nn.Module):
    def log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _per_example(bernoulli_log_prob(logits, x))

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


class Gaussian(nn.Module):
    def __init__(self, std: float = 0.1, learned: bool = False):
        super().__init__()
        log_std = torch.tensor(math.log(std))
        if learned:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)

    def log_prob(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        log_std = self.log_std.float()
        return _per_example(-0.5 * math.log(2 * math.pi) - log_std
                            - 0.5 * (x - mean).square() * torch.exp(-2.0 * log_std))

    def mean(self, mean: torch.Tensor) -> torch.Tensor:
        return mean.clamp(0.0, 1.0)


class DiscretizedGaussian(Gaussian):
    def __init__(self, levels: int, std: float = 0.1, learned: bool = False):
        super().__init__(std, learned)
        self.levels = levels

    def log_prob(self, mean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # pixels in [0, 1] -> [-1, 1], where the bins of the levels are laid out: the mean maps alike, σ doubles
        log_std = (self.log_std.float() + math.log(2.0)).expand_as(mean)
        return _per_example(discretized_gaussian_log_prob(2 * x - 1, 2 * mean - 1, log_std, self.levels))


class ContinuousBernoulli(nn.Module):
    def log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _per_example(bernoulli_log_prob(logits, x) + continuous_bernoulli_log_norm(logits))

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return continuous_bernoulli_mean(logits)


def make_likelihood(name: str, gaussian_variance: str = "fixed", gaussian_std: float = 0.1,
                    levels: int | None = None) -> nn.Module:
    if name == "bernoulli":
        return Bernoulli()
    if name == "gaussian":
        return Gaussian(gaussian_std, learned=gaussian_variance == "learned")
    if name == "continuous-bernoulli":
        return ContinuousBernoulli()
    if name == "discretized-gaussian":
        return DiscretizedGaussian(levels, gaussian_std, learned=gaussian_variance == "learned")
    raise ValueError(f"unknown likelihood {name!r}; known: {', '.join(LIKELIHOODS)}")
