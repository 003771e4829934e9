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
