"""Twin Delayed DDPG (TD3; Fujimoto et al. 2018), CleanRL-style.

A deterministic actor mu(s) in [-1, 1]^A explores with Gaussian noise. Each gradient step, on a minibatch
(s, a, r, s') from the replay buffer, as Stable-Baselines3 orders it:

    smoothing    a' = clip(mu_target(s') + clip(eps, -c, c), -1, 1),  eps ~ N(0, sigma_target^2)
    critics      y = r + gamma (1 - d) min_j Q_target_j(s', a'),   J(Q) = sum_j (Q_j(s, a) - y)^2
    every d-th   J(mu) = -E[Q_1(s, mu(s))], then all three targets  theta' <- tau theta + (1 - tau) theta'

Actions reach the env rescaled to its Box bounds. Unset fields take the env's preset (lab/presets/td3.toml).

    lab train td3                                   Pendulum-v1, RL Zoo's values (20k steps)
    lab train td3 --env-id Hopper-v5                MuJoCo (the mujoco extra), 1M steps
    lab eval RUN_DIR --episodes 10 --video
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from lab.config import non_negative, positive
from rl.nets import mlp
from rl.offpolicy import EvalOptions, OffPolicyAgent, OffPolicyConfig, QNetwork, frozen_copy, polyak
from rl.replay import Batch, weighted_mean

__all__ = ["Config", "Algorithm", "EvalOptions"]


@dataclass(frozen=True)
class Config(OffPolicyConfig):
    """Twin Delayed DDPG. Unset fields take the env's preset in lab/presets/td3.toml (Pendulum-v1,
    MountainCarContinuous-v0, LunarLanderContinuous-v3, HalfCheetah-v5, Hopper-v5; other envs: SB3's defaults)."""

    PRESETS = "td3"

    exploration_noise: float | None = None
    """Standard deviation of the Gaussian noise added to mu(s) when acting, in units of half the action range."""
    policy_delay: int = 2
    """d: the actor and the targets are updated once every d critic updates."""
    target_policy_noise: float = 0.2
    """Standard deviation of the target policy smoothing noise (half-range units)."""
    target_noise_clip: float = 0.5
    """c: the smoothing noise is clipped to [-c, c]."""

    def __post_init__(self):
        super().__post_init__()
        positive(self, "policy_delay")
        non_negative(self, "target_policy_noise", "target_noise_clip")
        non_negative(self.resolved(), "exploration_noise")


# ---------------------------------------------------------------------------- the maths
def smoothed_target_action(mu_t: torch.Tensor, noise: torch.Tensor, noise_clip: float) -> torch.Tensor:
    # target policy smoothing: a' = clip(mu_target(s') + clip(eps, -c, c), -1, 1)
    return (mu_t + noise.clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)


def td3_target(r_t: torch.Tensor, discount_t: torch.Tensor, q1_t: torch.Tensor, q2_t: torch.Tensor) -> torch.Tensor:
    # clipped double-Q target: y = r + gamma (1 - d) min(Q_target_1, Q_target_2)(s', a')
    return r_t + discount_t * torch.minimum(q1_t, q2_t)


class DeterministicActor(nn.Module):
    """mu(s) = tanh(MLP(s)) in [-1, 1]^A."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp(obs_dim, action_dim, hidden)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))


# ---------------------------------------------------------------------------- the agent
class Algorithm(OffPolicyAgent):
    name = "TD3"

    def build(self, obs_space: gym.Space, action_space: gym.Space) -> None:
        self.actor = DeterministicActor(self.obs_dim, self.action_dim, self.config.hidden).to(self.device)

    def build_training(self) -> None:
        cfg, rt = self.config, self.rt
        self.q1, self.q2 = (QNetwork(self.obs_dim, self.action_dim, cfg.hidden).to(self.device) for _ in range(2))
        self.actor_target, self.q1_target, self.q2_target = (frozen_copy(m) for m in (self.actor, self.q1, self.q2))
        self.train_actor, self.train_q1, self.train_q2 = rt.wrap(self.actor), rt.wrap(self.q1), rt.wrap(self.q2)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, fused=True)
        self.q_optimizer = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=cfg.lr, fused=True)
        self.learner = ("q1", "q2", "actor_target", "q1_target", "q2_target", "actor_optimizer", "q_optimizer")

    def policy(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """mu(s), whether or not ``deterministic``: exploration noise belongs to training (``explore``)."""
        return self.actor(obs.float())

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> np.ndarray:
        """mu(s) + N(0, sigma^2) noise, clipped to [-1, 1]."""
        mu = self.policy(torch.as_tensor(obs, device=self.device), deterministic=True).cpu().numpy()
        noise = self.act_rng.normal(0.0, self.config.exploration_noise, mu.shape)
        return np.clip(mu + noise, -1.0, 1.0).astype(np.float32)

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, rt = self.config, self.rt
        with torch.no_grad():
            noise = torch.randn_like(batch.actions) * cfg.target_policy_noise
            next_action = smoothed_target_action(self.actor_target(batch.next_obs), noise, cfg.target_noise_clip)
            y = td3_target(batch.returns, batch.discounts, self.q1_target(batch.next_obs, next_action),
                           self.q2_target(batch.next_obs, next_action))
        with rt.autocast():
            q1, q2 = self.train_q1(batch.obs, batch.actions).float(), self.train_q2(batch.obs, batch.actions).float()
        q_loss = weighted_mean((q1 - y) ** 2, batch.weights) + weighted_mean((q2 - y) ** 2, batch.weights)
        rt.optimize(q_loss, self.q_optimizer)
        metrics = {"q_loss": q_loss.detach(), "q": q1.detach().mean()}
        if (self.updates + 1) % cfg.policy_delay == 0:      # the d-th, 2d-th, ... critic update
            with rt.autocast():
                pi_loss = -self.train_q1(batch.obs, self.train_actor(batch.obs)).float().mean()
            rt.optimize(pi_loss, self.actor_optimizer)
            for target, online in ((self.actor_target, self.actor), (self.q1_target, self.q1), (self.q2_target, self.q2)):
                polyak(target, online, cfg.tau)
            metrics["actor_loss"] = pi_loss.detach()
        return metrics
