"""The noise schedule of DDPM and every quantity derived from it. No network lives here.

Forward process (Ho et al., 2020):   q(x_t | x_{t-1}) = N(sqrt(1 - β_t) x_{t-1}, β_t I)
In closed form, with α_t = 1 - β_t and ᾱ_t = Π_{s<=t} α_s:   q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)

Everything is computed once in float64 (ᾱ_t is a product of up to 1,000 factors and 1 - ᾱ_t near t = 0
loses digits in float32) and cast once to the working dtype and device. Timesteps are 0-based:
t = 0 is the first noising step (the paper's t = 1).
"""
from __future__ import annotations

import math
from typing import Literal, get_args

import torch

Schedule = Literal["linear", "cosine"]
Prediction = Literal["eps", "v", "x0", "levels"]
SCHEDULES, PREDICTIONS = get_args(Schedule), get_args(Prediction)


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """β_t rising linearly from 1e-4 to 0.02 (Ho et al., 2020), rescaled when T != 1000 so that the
    total noise added stays the same."""
    scale = 1000 / num_steps
    return torch.linspace(scale * beta_start, scale * beta_end, num_steps, dtype=torch.float64)


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """β_t from ᾱ(t) = cos²(((t/T + s) / (1 + s)) · π/2) (Nichol & Dhariwal, 2021), clipped at 0.999."""
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


def make_betas(kind: str, num_steps: int) -> torch.Tensor:
    if kind == "linear":
        return linear_betas(num_steps)
    if kind == "cosine":
        return cosine_betas(num_steps)
    raise ValueError(f"unknown schedule {kind!r}; known: {', '.join(SCHEDULES)}")


def _at(coefficient: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """coefficient[t] shaped (B, 1, 1, ...) to broadcast against a batch like ``like``."""
    return coefficient[t].view(-1, *([1] * (like.dim() - 1)))


class NoiseSchedule:
    """β_t, ᾱ_t, the posterior q(x_{t-1} | x_t, x_0) and the conversions between ε, v and x_0."""

    def __init__(self, betas: torch.Tensor, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        betas = betas.to(torch.float64)
        if betas.dim() != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ValueError("betas must be a 1-D tensor with every β_t in (0, 1)")
        self.num_steps = len(betas)
        alphas = 1.0 - betas                                            # α_t = 1 - β_t
        alphas_cumprod = torch.cumprod(alphas, 0)                       # ᾱ_t = Π α_s
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        # posterior variance β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t   (Ho et al., eq. 7)
        posterior_variance = betas * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
        # posterior mean μ̃_t = coef_x0 · x_0 + coef_xt · x_t         (Ho et al., eq. 7)
        posterior_coef_x0 = betas * alphas_cumprod_prev.sqrt() / (1 - alphas_cumprod)
        posterior_coef_xt = (1 - alphas_cumprod_prev) * alphas.sqrt() / (1 - alphas_cumprod)
        # log β̃_t with β̃_0 = 0 replaced by β̃_1: the reverse variance at t = 0 (Nichol & Dhariwal's clipping)
        posterior_log_variance = torch.cat([posterior_variance[1:2], posterior_variance[1:]]).log()

        self.alphas_cumprod64 = alphas_cumprod    # kept in float64: samplers derive their step coefficients from it
        cast = dict(device=device, dtype=dtype)
        self.betas = betas.to(**cast)
        self.alphas_cumprod = alphas_cumprod.to(**cast)
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt().to(**cast)
        self.sqrt_one_minus_alphas_cumprod = (1 - alphas_cumprod).sqrt().to(**cast)
        self.sqrt_recip_alphas_cumprod = alphas_cumprod.rsqrt().to(**cast)
        self.sqrt_recip_m1_alphas_cumprod = (1 / alphas_cumprod - 1).sqrt().to(**cast)
        self.posterior_variance = posterior_variance.to(**cast)
        self.posterior_log_variance = posterior_log_variance.to(**cast)
        self.log_betas = betas.log().to(**cast)
        self.posterior_coef_x0 = posterior_coef_x0.to(**cast)
        self.posterior_coef_xt = posterior_coef_xt.to(**cast)

    @classmethod
    def create(cls, kind: str = "linear", num_steps: int = 1000, device="cpu", dtype=torch.float32) -> NoiseSchedule:
        return cls(make_betas(kind, num_steps), device, dtype)

    # ------------------------------------------------------------------ forward process
    def add_noise(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # forward process in closed form: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε,  ε ~ N(0, I)
        return _at(self.sqrt_alphas_cumprod, t, x0) * x0 + _at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def velocity(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # v-prediction target (Salimans & Ho, 2022): v = sqrt(ᾱ_t) ε - sqrt(1 - ᾱ_t) x_0
        return _at(self.sqrt_alphas_cumprod, t, x0) * noise - _at(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0

    def target(self, prediction: str, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network regresses: ε (Ho et al.'s simple loss), v, or x_0."""
        if prediction == "eps":
            return noise
        if prediction == "v":
            return self.velocity(x0, t, noise)
        return x0

    # ------------------------------------------------------------------ reverse process
    def x0_and_eps(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prediction: str,
                   clip: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) from the network's output under any parameterisation; x̂_0 optionally clipped to
        [-clip, clip] (images live in [-1, 1]) with ε̂ recomputed to stay consistent with it."""
        a, s = _at(self.sqrt_alphas_cumprod, t, x_t), _at(self.sqrt_one_minus_alphas_cumprod, t, x_t)
        if prediction == "eps":
            x0 = (x_t - s * output) / a                       # x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t)
        elif prediction == "v":
            x0 = a * x_t - s * output                         # x̂_0 = sqrt(ᾱ_t) x_t - sqrt(1 - ᾱ_t) v̂
        else:
            x0 = output
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        elif prediction == "eps":
            return x0, output
        return x0, (x_t - a * x0) / s                         # ε̂ = (x_t - sqrt(ᾱ_t) x̂_0) / sqrt(1 - ᾱ_t)

    def level_log_posterior(self, logits: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                            levels: torch.Tensor) -> torch.Tensor:
        """log p(x_0 = ℓ_k | x_t) of each pixel (B, C, L, H, W) from the network's logits (B, C·L, H, W)
        over the L values ``levels`` the data takes: the logits plus the exact log-likelihood of the
        pixel's own x_t under each level, which alone decides x_0 once the noise is small."""
        b, c = x_t.shape[:2]
        logits = logits.reshape(b, c, len(levels), *x_t.shape[2:])
        shape = (1, 1, -1) + (1,) * (x_t.dim() - 2)
        a, s = _at(self.sqrt_alphas_cumprod, t, x_t).unsqueeze(2), _at(self.sqrt_one_minus_alphas_cumprod, t, x_t).unsqueeze(2)
        # Bayes per pixel: log p(x_0 = ℓ | x_t) = f_θ(x_t, t)_ℓ + log q(x_t | x_0 = ℓ) + const,  q = N(sqrt(ᾱ_t) ℓ, 1 - ᾱ_t)
        log_likelihood = -(x_t.unsqueeze(2) - a * levels.view(shape)).square() / (2 * s.square())
        return torch.log_softmax(logits + log_likelihood, dim=2)

    @staticmethod
    def level_mean(log_posterior: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """x̂_0 (B, C, H, W) from ``level_log_posterior``'s (B, C, L, H, W)."""
        # x̂_0 = E[x_0 | x_t] = Σ_ℓ ℓ p(x_0 = ℓ | x_t)
        return (log_posterior.exp() * levels.view(1, 1, -1, *([1] * (log_posterior.dim() - 3)))).sum(2)

    def posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # posterior q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I),  μ̃_t = coef_x0 · x_0 + coef_xt · x_t
        mean = _at(self.posterior_coef_x0, t, x_t) * x0 + _at(self.posterior_coef_xt, t, x_t) * x_t
        return mean, _at(self.posterior_variance, t, x_t)
