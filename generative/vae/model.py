"""The VAE: an encoder for q(z|x) = N(μ(x), diag σ²(x)), the prior p(z) = N(0, I), a decoder and a
likelihood for p(x|z); and the test-set bounds on log p(x) that ``lab eval`` reports.
"""
from __future__ import annotations

import torch
from torch import nn

from generative.vae.bound import (diagonal_gaussian_log_prob, gaussian_kl, gaussian_kl_per_dim, log_mean_exp,
                                  reparameterize, standard_normal_log_prob)


class VAE(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: nn.Module, latent_dim: int):
        super().__init__()
        self.encoder, self.decoder, self.likelihood = encoder, decoder, likelihood
        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One reparameterized sample z = mu + sigma * eps ~ q(z|x) per example, eps ~ N(0, I) of shape
        (batch, latent_dim): (log p(x|z) per example, KL per latent dim)."""
        mu, log_var = self.encoder(x)
        z = reparameterize(mu, log_var, eps)
        return self.log_likelihood(z, x), gaussian_kl_per_dim(mu, log_var)

    def log_likelihood(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example, in float32 whatever the autocast precision of the decoder."""
        return self.likelihood.log_prob(self.decoder(z).float(), x)

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        """The image a latent stands for: the mean of p(x|z)."""
        return self.likelihood.mean(self.decoder(z).float())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images drawn by ancestral sampling z ~ p(z), shown as the mean of p(x|z)."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)
        return self.decode_mean(z)


@torch.no_grad()
def log_likelihood_bounds(model: VAE, images: torch.Tensor, k: int, batch_size: int = 32768,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Per-image bounds on log p(x) in nats, from K samples z_k ~ q(z|x) per image:

        reconstruction  (1/K) Σ_k log p(x|z_k)            (a K-sample estimate of E_q[log p(x|z)])
        kl              KL(q(z|x) || p(z)) in closed form
        elbo            reconstruction − kl
        iw              log (1/K) Σ_k p(x, z_k) / q(z_k|x)  (the importance-weighted bound, Burda et al.)

    ``batch_size`` bounds the (image, sample) pairs decoded at once; log-weights are combined with
    log-sum-exp, so K can be as large as wanted.
    """
    images_per_pass = max(1, min(len(images), batch_size // k))
    samples_per_pass = max(1, min(k, batch_size // images_per_pass))
    parts: dict[str, list[torch.Tensor]] = {"reconstruction": [], "kl": [], "iw": []}
    for x in images.split(images_per_pass):
        mu, log_var = model.encoder(x)
        log_px_z, log_w = [], []
        for start in range(0, k, samples_per_pass):
            m = min(samples_per_pass, k - start)
            eps = torch.randn((m, *mu.shape), generator=generator, device=mu.device)
            z = reparameterize(mu, log_var, eps)                                        # (m, B, D)
            log_lik = model.log_likelihood(z.flatten(0, 1), x.repeat(m, *[1] * (x.dim() - 1))).view(m, -1)
            log_px_z.append(log_lik)
            log_w.append(log_lik + standard_normal_log_prob(z) - diagonal_gaussian_log_prob(z, mu, log_var))
        parts["reconstruction"].append(torch.cat(log_px_z).mean(0))
        parts["kl"].append(gaussian_kl(mu, log_var))
        parts["iw"].append(log_mean_exp(torch.cat(log_w), dim=0))
    out = {name: torch.cat(values) for name, values in parts.items()}
    out["elbo"] = out["reconstruction"] - out["kl"]
    return out
