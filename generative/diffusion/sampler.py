"""Reverse-process samplers: ancestral DDPM and DDIM, with classifier-free guidance. No network here.

Both run over a descending sequence of timesteps (all T of them, or an evenly spaced subset). The
per-step coefficients are computed once in float64 from ᾱ and cast once; the loop itself is pure
tensor work on the device (timesteps indexed from a device tensor by Python ints: no host sync).
"""
from __future__ import annotations

from typing import Literal, get_args
from collections.abc import Callable

import torch

from generative.diffusion.schedule import NoiseSchedule
from lab.progress import Progress

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_t, t) -> the network's raw output (ε̂, v̂ or x̂_0, whichever it was trained to predict)."""

Variance = Literal["beta_tilde", "beta"]
SamplerName = Literal["ddpm", "ddim"]
VARIANCES, SAMPLERS = get_args(Variance), get_args(SamplerName)


def timesteps_for(num_steps: int, steps: int) -> torch.Tensor:
    """``steps`` timesteps evenly spaced from T-1 down to 0 (all T when steps == T)."""
    if not 1 <= steps <= num_steps:
        raise ValueError(f"steps must be in [1, {num_steps}], got {steps}")
    if steps == 1:
        return torch.tensor([num_steps - 1])
    return torch.linspace(num_steps - 1, 0, steps, dtype=torch.float64).round().long()


def _pairs(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ᾱ_t, ᾱ_prev) in float64 for each step t -> prev of the sequence; ᾱ_prev = 1 after the last step."""
    ab_t = alphas_cumprod[timesteps]
    ab_prev = torch.cat([alphas_cumprod[timesteps[1:]], torch.ones(1, dtype=torch.float64)])
    return ab_t, ab_prev


def ancestral_coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor,
                           variance: str = "beta_tilde") -> dict[str, torch.Tensor]:
    """Posterior coefficients of each step of an ancestral sampler, in float64.

    On a subsequence the step's own β is 1 - ᾱ_t / ᾱ_prev (Nichol & Dhariwal's respacing); on the
    full sequence that is exactly β_t. σ² is β̃ (the posterior variance) or β; no noise on the last step.
    """
    ab_t, ab_prev = _pairs(alphas_cumprod, timesteps)
    alpha = ab_t / ab_prev
    beta = 1 - alpha
    beta_tilde = beta * (1 - ab_prev) / (1 - ab_t)
    var = (beta_tilde if variance == "beta_tilde" else beta).clone()
    var[-1] = 0.0
    return {"coef_x0": ab_prev.sqrt() * beta / (1 - ab_t),
            "coef_xt": alpha.sqrt() * (1 - ab_prev) / (1 - ab_t),
            "std": var.sqrt()}


def ddim_coefficients(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, eta: float = 0.0) -> dict[str, torch.Tensor]:
    """Coefficients of each DDIM step (Song et al., 2021, eq. 12 and 16), in float64."""
    ab_t, ab_prev = _pairs(alphas_cumprod, timesteps)
    # σ_t(η) = η sqrt((1 - ᾱ_prev) / (1 - ᾱ_t)) sqrt(1 - ᾱ_t / ᾱ_prev)
    sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()
    return {"coef_x0": ab_prev.sqrt(), "coef_eps": (1 - ab_prev - sigma**2).clamp(min=0).sqrt(), "std": sigma}


def _frame_indices(steps: int, frames: int) -> set[int]:
    if frames <= 0:
        return set()
    return set(torch.linspace(0, steps - 1, min(frames, steps)).round().long().tolist())


def _run(denoiser: Denoiser, schedule: NoiseSchedule, x: torch.Tensor, timesteps: torch.Tensor,
         coefficients: dict[str, torch.Tensor], update, prediction: str, clip: float | None,
         generator: torch.Generator | None, frames: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    device, batch = x.device, x.shape[0]
    c = {k: v.to(device=device, dtype=x.dtype) for k, v in coefficients.items()}   # cast once
    ts = timesteps.to(device)
    keep = _frame_indices(len(timesteps), frames)
    recorded = [x[:1].clone()] if frames > 0 else []
    with Progress(len(timesteps), f"sampling {batch}", unit="step", leave=False) as progress:
        for i in range(len(timesteps)):
            t = ts[i].expand(batch)
            x0, eps = schedule.x0_and_eps(denoiser(x, t), x, t, prediction, clip)
            noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
            x = update(x, x0, eps, noise, {k: v[i] for k, v in c.items()})
            if i in keep:
                recorded.append(x[:1].clone())
            progress.update(1)
    return x, (torch.cat(recorded) if recorded else None)


@torch.no_grad()
def ddpm_sample(denoiser: Denoiser, schedule: NoiseSchedule, x_T: torch.Tensor, *, steps: int | None = None,
                variance: str = "beta_tilde", prediction: str = "eps", clip: float | None = None,
                generator: torch.Generator | None = None, frames: int = 0):
    """Ancestral sampling from x_T; returns (x_0, frames of sample 0 from x_T to x_0 or None)."""
    timesteps = timesteps_for(schedule.num_steps, steps or schedule.num_steps)

    def update(x, x0, eps, noise, c):
        # reverse step p(x_{t-1} | x_t) = N(μ̃_t(x_t, x̂_0), σ_t² I),  μ̃_t = coef_x0 · x̂_0 + coef_xt · x_t
        return c["coef_x0"] * x0 + c["coef_xt"] * x + c["std"] * noise

    coefficients = ancestral_coefficients(schedule.alphas_cumprod64, timesteps, variance)
    return _run(denoiser, schedule, x_T, timesteps, coefficients, update, prediction, clip, generator, frames)


@torch.no_grad()
def ddim_sample(denoiser: Denoiser, schedule: NoiseSchedule, x_T: torch.Tensor, *, steps: int = 50,
                eta: float = 0.0, prediction: str = "eps", clip: float | None = None,
                generator: torch.Generator | None = None, frames: int = 0):
    """DDIM sampling from x_T over ``steps`` steps (η = 0: deterministic; η = 1: DDPM-like)."""
    timesteps = timesteps_for(schedule.num_steps, steps)

    def update(x, x0, eps, noise, c):
        # DDIM step: x_prev = sqrt(ᾱ_prev) x̂_0 + sqrt(1 - ᾱ_prev - σ²) ε̂ + σ z
        return c["coef_x0"] * x0 + c["coef_eps"] * eps + c["std"] * noise

    coefficients = ddim_coefficients(schedule.alphas_cumprod64, timesteps, eta)
    return _run(denoiser, schedule, x_T, timesteps, coefficients, update, prediction, clip, generator, frames)


def guided(model: Callable, labels: torch.Tensor | None, scale: float, null_label: int | None) -> Denoiser:
    """The denoiser (x_t, t) -> output of a (possibly class-conditional) model.

    With labels and scale != 1, classifier-free guidance runs the conditional and unconditional
    passes as one batch of 2B. scale = 1 is the plain conditional model, 0 the unconditional one.
    """
    if labels is None or scale == 1.0:
        return lambda x, t: model(x, t, labels)
    both = torch.cat([labels, torch.full_like(labels, null_label)])

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        conditional, unconditional = model(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
        # classifier-free guidance (Ho & Salimans, 2021): ε̂ = ε̂_∅ + w (ε̂_y - ε̂_∅)
        return unconditional + scale * (conditional - unconditional)

    return denoise
