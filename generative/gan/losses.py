"""The GAN objectives as small pure functions of discriminator outputs.

The discriminator returns a logit ``l`` (a real number); for the probabilistic losses
``D(x) = sigmoid(l)``, so ``log D = -softplus(-l)`` and ``log(1 - D) = -softplus(l)`` (stable forms).
For the Wasserstein and hinge losses the same number is the critic's score.

``real`` are the outputs on data, ``fake`` those on generated samples; every loss is a mean over the
batch and is *minimized* by its player.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------- Goodfellow et al. 2014
def d_loss_minimax(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # max_D E[log D(x)] + E[log(1 - D(G(z)))]  (the discriminator's side of the minimax game)
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_loss_minimax(fake: torch.Tensor) -> torch.Tensor:
    # min_G E[log(1 - D(G(z)))]  (saturates: no gradient when D confidently rejects G's samples)
    return -F.softplus(fake).mean()


def g_loss_non_saturating(fake: torch.Tensor) -> torch.Tensor:
    # max_G E[log D(G(z))]  (same fixed point, strong gradient early in training)
    return F.softplus(-fake).mean()


# ---------------------------------------------------------------- Gulrajani et al. 2017 (WGAN-GP)
def d_loss_wasserstein(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # max_{D 1-Lipschitz} E[D(x)] - E[D(G(z))]  (Kantorovich-Rubinstein dual of W1)
    return fake.mean() - real.mean()


def g_loss_wasserstein(fake: torch.Tensor) -> torch.Tensor:
    # min_G -E[D(G(z))]
    return -fake.mean()


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     epsilon: torch.Tensor) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = eps x + (1 - eps) x_fake, eps ~ U[0, 1] per sample.

    ``epsilon`` has shape (N,) and is drawn by the caller (so tests can fix it). The graph is kept
    (create_graph) so the penalty trains the critic; multiply by lambda outside.
    """
    eps = epsilon.view(-1, *([1] * (real.dim() - 1)))
    x_hat = (eps * real + (1 - eps) * fake).detach().requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    grad_norm = grad.flatten(1).norm(2, dim=1)
    # lambda * E[(||grad D(x_hat)|| - 1)^2]  (the two-sided penalty of WGAN-GP, without lambda)
    return ((grad_norm - 1) ** 2).mean()


# ---------------------------------------------------------------- Mescheder et al. 2018 (R1)
def r1_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor) -> torch.Tensor:
    """E_x[||grad_x D(x)||_2^2] on real data only (the R1 regulariser; multiply by gamma / 2 outside).

    Penalising D's slope where the data lie makes the game converge locally instead of circling the
    equilibrium (Mescheder et al. 2018, "Which Training Methods for GANs do actually Converge?").
    The graph is kept (create_graph) so the penalty trains the discriminator.
    """
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    # R1(D) = E_{x ~ p_data}[||grad_x D(x)||^2]
    return grad.flatten(1).pow(2).sum(1).mean()


# ---------------------------------------------------------------- Lim & Ye 2017; Miyato et al. 2018 (SN-GAN)
def d_loss_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # min_D E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def g_loss_hinge(fake: torch.Tensor) -> torch.Tensor:
    # min_G -E[D(G(z))]
    return -fake.mean()


# loss name -> (discriminator loss, generator loss)
LOSSES: dict[str, tuple[Callable, Callable]] = {
    "minimax": (d_loss_minimax, g_loss_minimax),
    "non-saturating": (d_loss_minimax, g_loss_non_saturating),
    "wgan-gp": (d_loss_wasserstein, g_loss_wasserstein),
    "hinge": (d_loss_hinge, g_loss_hinge),
}
