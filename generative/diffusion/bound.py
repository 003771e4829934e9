"""The variational bound of DDPM on -log p(x_0) (Ho et al., 2020, eq. 5 and §3.3), term by term.

    L = L_T + Σ_{t>1} L_{t-1} + L_0
    L_T     = KL(q(x_T | x_0) || N(0, I))                         (no parameters)
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_θ(x_{t-1} | x_t))    (two Gaussians: closed form)
    L_0     = -log p_θ(x_0 | x_1)                                  (the discretized Gaussian decoder)

The reverse step p_θ(x_{t-1} | x_t) = N(μ̃_t(x_t, x̂_0), σ_t²) takes its mean from the network's
prediction and its variance from the schedule (β̃_t or β_t) or, learned, by interpolating between
the two (Nichol & Dhariwal, 2021). Timesteps are 0-based, as in schedule.py: t = 0 is the paper's t = 1.
No network lives here: the reverse process is a callable.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from generative.diffusion.schedule import NoiseSchedule, _at

Reverse = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""(x_t, t) -> (mean, log variance) of p_θ(x_{t-1} | x_t)."""
DecoderNLL = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_0, mean, log variance) -> -log p(x_0 | x_1) per pixel."""


def normal_kl(mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor, log_var2: torch.Tensor) -> torch.Tensor:
    # KL(N(μ₁, σ₁²) || N(μ₂, σ₂²)) = ½ (log σ₂²/σ₁² + (σ₁² + (μ₁ - μ₂)²) / σ₂² - 1), elementwise
    return 0.5 * (log_var2 - log_var1 + (log_var1.exp() + (mean1 - mean2).square()) * torch.exp(-log_var2) - 1.0)


def reverse_log_variance(schedule: NoiseSchedule, t: torch.Tensor, like: torch.Tensor,
                         v: torch.Tensor | None = None) -> torch.Tensor:
    """log σ_t² of p_θ(x_{t-1} | x_t): log β̃_t when v is None, else learned from the network's v."""
    low = _at(schedule.posterior_log_variance, t, like)
    if v is None:
        return low.expand_as(like)
    high = _at(schedule.log_betas, t, like)
    fraction = (v + 1) / 2   # v in [-1, 1] roughly; not clamped (Nichol & Dhariwal)
    # learned variance: log Σ_θ = v log β_t + (1 - v) log β̃_t
    return fraction * high + (1 - fraction) * low


def reverse_step(schedule: NoiseSchedule, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prediction: str,
                 v: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, log variance) of p_θ(x_{t-1} | x_t) from the network's output, x̂_0 clipped to [-1, 1]."""
    x0, _ = schedule.x0_and_eps(output, x_t, t, prediction, clip=1.0)
    mean, _ = schedule.posterior(x0, x_t, t)
    return mean, reverse_log_variance(schedule, t, x_t, v)


def prior_term(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T per image: KL(q(x_T | x_0) || N(0, I)), q(x_T | x_0) = N(sqrt(ᾱ_T) x_0, (1 - ᾱ_T) I)."""
    last = torch.full((len(x0),), schedule.num_steps - 1, device=x0.device)
    mean = _at(schedule.sqrt_alphas_cumprod, last, x0) * x0
    log_var = _at(schedule.sqrt_one_minus_alphas_cumprod, last, x0).square().log().expand_as(x0)
    zero = torch.zeros_like(x0)
    return normal_kl(mean, log_var, zero, zero).flatten(1).sum(1)


def step_term(schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, mean: torch.Tensor,
              log_var: torch.Tensor, decoder_nll: DecoderNLL) -> torch.Tensor:
    """Per image: L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_θ(x_{t-1} | x_t)) where t > 0, L_0 where t = 0."""
    true_mean, _ = schedule.posterior(x0, x_t, t)
    kl = normal_kl(true_mean, _at(schedule.posterior_log_variance, t, x0).expand_as(x0), mean, log_var)
    first = (t == 0).view(-1, *([1] * (x0.dim() - 1)))
    return torch.where(first, decoder_nll(x0, mean, log_var), kl).flatten(1).sum(1)


@torch.no_grad()
def variational_bound(reverse: Reverse, schedule: NoiseSchedule, x0: torch.Tensor, decoder_nll: DecoderNLL,
                      generator: torch.Generator | None = None, progress=None) -> dict[str, torch.Tensor]:
    """The bound on -log p(x_0) of each image (nats), every term of the sum computed with one draw
    x_t ~ q(x_t | x_0): {"prior": L_T, "diffusion": Σ_{t>1} L_{t-1}, "decoder": L_0, "total": L, and
    "steps": (images, T) with L_0 in column 0 and L_{t-1} in column t-1, to see where the bound is spent}.
    ``progress(done, total)`` is called after each timestep."""
    T = schedule.num_steps
    steps = torch.zeros(len(x0), T, dtype=torch.float64, device=x0.device)
    for step in range(T - 1, -1, -1):
        t = torch.full((len(x0),), step, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = schedule.add_noise(x0, t, noise)
        mean, log_var = reverse(x_t, t)
        steps[:, step] = step_term(schedule, x0, x_t, t, mean, log_var, decoder_nll).double()
        if progress is not None:
            progress(T - step, T)
    prior, diffusion, decoder = prior_term(schedule, x0).double(), steps[:, 1:].sum(1), steps[:, 0]
    # the variational bound: L = L_T + Σ_{t>1} L_{t-1} + L_0  >=  -log p(x_0)
    return {"prior": prior, "diffusion": diffusion, "decoder": decoder, "total": prior + diffusion + decoder,
            "steps": steps}
