"""The losses of the policy-gradient family. The policy-gradient estimator is written here, once."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def policy_gradient_loss(log_prob: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Minus the surrogate whose gradient is the estimator mean_t[grad log pi(a_t|s_t) * Psi_t].

    ``weight`` is Psi_t: R(tau), the reward-to-go, the reward-to-go minus a baseline, Q(s,a) or the
    advantage. It is treated as a constant (no gradient flows through it).
    """
    return -(log_prob * weight.detach()).mean()       # policy gradient: grad J = E[grad log pi(a|s) * Psi]


def value_loss(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of a value prediction against a fixed target (no gradient into the target)."""
    return F.mse_loss(value, target.detach())


def entropy_bonus(entropy: torch.Tensor) -> torch.Tensor:
    """The mean policy entropy (added with a coefficient to keep exploring)."""
    return entropy.mean()


def clipped_surrogate_pg_loss(ratio_t: torch.Tensor, adv_t: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Minus PPO's clipped surrogate objective (Schulman et al. 2017) for ratios rho_t = pi(a|s) / pi_old(a|s).

    The min takes the clipped term where it is the smaller one, so a ratio already past 1 + epsilon (positive
    advantage) or below 1 - epsilon (negative advantage) gets no gradient; elsewhere it is rho_t A_t's.
    """
    clipped_ratio_t = ratio_t.clamp(1.0 - epsilon, 1.0 + epsilon)
    return -torch.min(ratio_t * adv_t, clipped_ratio_t * adv_t).mean()   # L^CLIP = E[min(rho A, clip(rho, 1-eps, 1+eps) A)]


def clipped_value_loss(v_t: torch.Tensor, old_v_t: torch.Tensor, target_t: torch.Tensor,
                       epsilon: float) -> torch.Tensor:
    """PPO's value loss with the prediction kept within epsilon of the acting critic's (as in OpenAI baselines)."""
    v_clipped_t = old_v_t + (v_t - old_v_t).clamp(-epsilon, epsilon)
    # clipped value loss: E[max((V - G)^2, (V_old + clip(V - V_old, -eps, eps) - G)^2)]
    return torch.max((v_t - target_t) ** 2, (v_clipped_t - target_t) ** 2).mean()
