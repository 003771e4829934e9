"""Returns and advantages, as small pure functions over time-major tensors (rlax-style names).

Conventions: index ``t`` runs over time (dimension 0); ``r_t`` is the reward after action ``a_t``;
``v_tp1`` is the value of the true next state s_{t+1} (the final observation when the episode ended
there); ``terminated_t`` says s_{t+1} is terminal (its value is 0, never bootstrapped); ``done_t`` says
the episode ended after step t for any reason (termination or time-limit truncation), which cuts the
sums. A truncated step is therefore bootstrapped with v_tp1 but does not leak into the next episode.
"""
from __future__ import annotations

import torch


def discounted_returns(r_t: torch.Tensor, done_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go G_t = r_t + gamma * G_{t+1}, restarted after every ``done_t`` (no bootstrapping)."""
    discount_t = gamma * (1.0 - done_t.float())
    returns = torch.empty_like(r_t)
    future = torch.zeros_like(r_t[0])
    for t in reversed(range(len(r_t))):
        future = r_t[t] + discount_t[t] * future
        returns[t] = future
    return returns


def episode_returns(r_t: torch.Tensor, done_t: torch.Tensor, gamma: float) -> torch.Tensor:
    """R(tau) = G_0 of each step's own episode, repeated over the episode's steps (1-D, whole episodes)."""
    g_t = discounted_returns(r_t, done_t, gamma)
    starts = torch.ones_like(done_t, dtype=torch.bool)
    starts[1:] = done_t[:-1].bool()
    episode_index = torch.cumsum(starts.long(), 0) - 1
    return g_t[starts][episode_index]


def gae(r_t: torch.Tensor, v_t: torch.Tensor, v_tp1: torch.Tensor, terminated_t: torch.Tensor,
        done_t: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalized advantage estimates A_t (Schulman et al. 2016); lam=1 gives n-step returns minus v_t.

    The last step of the rollout is bootstrapped with v_tp1 (the n-step return's tail value).
    """
    bootstrap = v_tp1 * (1.0 - terminated_t.float())
    delta_t = r_t + gamma * bootstrap - v_t                     # TD error: delta_t = r_t + gamma V(s_{t+1}) - V(s_t)
    trace_t = gamma * lam * (1.0 - done_t.float())
    advantages = torch.empty_like(delta_t)
    running = torch.zeros_like(delta_t[0])
    for t in reversed(range(len(delta_t))):
        running = delta_t[t] + trace_t[t] * running      # GAE: A_t = delta_t + gamma lam A_{t+1} (within an episode)
        advantages[t] = running
    return advantages
