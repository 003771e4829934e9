"""Soft Actor-Critic (Haarnoja et al. 2018, with the learned temperature of Haarnoja et al. 2019), CleanRL-style.

The policy maximises reward plus entropy. Each gradient step, on a minibatch (s, a, r, s') from the replay
buffer, in Stable-Baselines3's order:

    temperature  J(alpha) = E[-log alpha (log pi(a~|s) + H_target)],   H_target = -dim(A)  (or --alpha fixed)
    critics      y = r + gamma (1 - d) [min_j Q_target_j(s', a') - alpha log pi(a'|s')],  a' ~ pi(.|s')
                 J(Q) = 1/2 sum_j (Q_j(s, a) - y)^2
    actor        J(pi) = E[alpha log pi(a~|s) - min_j Q_j(s, a~)],  a~ = tanh(mu + sigma eps) (reparameterised)
    targets      theta_target_j <- tau theta_j + (1 - tau) theta_target_j

The policy is a tanh-squashed diagonal Gaussian with a state-dependent log-std; actions live in [-1, 1] and
reach the env rescaled to its Box bounds. Unset fields take the env's preset (lab/presets/sac.toml).

    lab train sac                                   Pendulum-v1, RL Zoo's values (20k steps)
    lab train sac --env-id HalfCheetah-v5           MuJoCo (the mujoco extra), 1M steps
    lab eval RUN_DIR --episodes 10 --video
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lab.config import require
from rl.nets import trunk_for
from rl.offpolicy import EvalOptions, OffPolicyAgent, OffPolicyConfig, QNetwork, frozen_copy, polyak
from rl.pg.policies import HALF_LOG_2PI
from rl.replay import Batch, weighted_mean

__all__ = ["Config", "Algorithm", "EvalOptions"]

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0     # Stable-Baselines3's clamp of the policy's log-std
LOG_2 = math.log(2.0)


@dataclass(frozen=True)
class Config(OffPolicyConfig):
    """Soft Actor-Critic. Unset fields take the env's preset in lab/presets/sac.toml (Pendulum-v1,
    MountainCarContinuous-v0, LunarLanderContinuous-v3, HalfCheetah-v5, Hopper-v5; other envs: SB3's defaults)."""

    PRESETS = "sac"

    alpha: float | None = None
    """Fixed temperature alpha (the entropy bonus's weight); None learns it towards an entropy of -dim(A)."""

    def __post_init__(self):
        super().__post_init__()
        alpha = self.resolved().alpha
        require(alpha is None or (math.isfinite(alpha) and alpha > 0), f"--alpha must be > 0, got {alpha}.")


# ---------------------------------------------------------------------------- the maths
def squashed_gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    # log pi(a|s) = sum_i [log N(u_i; mu_i, sigma_i) - log(1 - tanh(u_i)^2)],  a = tanh(u),
    # with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) (stable for large |u|)
    gaussian = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - HALF_LOG_2PI
    return (gaussian - 2.0 * (LOG_2 - u - F.softplus(-2.0 * u))).sum(-1)


def soft_q_target(r_t: torch.Tensor, discount_t: torch.Tensor, q1_t: torch.Tensor, q2_t: torch.Tensor,
                  log_pi_t: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    # soft Bellman target: y = r + gamma (1 - d) [min(Q_target_1, Q_target_2)(s', a') - alpha log pi(a'|s')]
    return r_t + discount_t * (torch.minimum(q1_t, q2_t) - alpha * log_pi_t)


def temperature_loss(log_alpha: torch.Tensor, log_pi: torch.Tensor, target_entropy: float) -> torch.Tensor:
    # J(alpha) = E[-log alpha (log pi(a|s) + H_target)]: alpha grows when the entropy -log pi is below H_target
    return -(log_alpha * (log_pi.detach() + target_entropy)).mean()


def actor_loss(log_pi: torch.Tensor, q1_pi: torch.Tensor, q2_pi: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    # J(pi) = E[alpha log pi(a~|s) - min_j Q_j(s, a~)]
    return (alpha * log_pi - torch.minimum(q1_pi, q2_pi)).mean()


class SquashedGaussianActor(nn.Module):
    """pi(.|s): u ~ N(mu(s), sigma(s)^2), a = tanh(u). ``forward`` returns a reparameterised sample and its
    log-probability (what the losses differentiate); ``act`` the squashed mean or a sample, without gradients."""

    def __init__(self, obs_space: gym.Space, action_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.trunk, features = trunk_for(obs_space, hidden)
        self.mean, self.log_std = nn.Linear(features, action_dim), nn.Linear(features, action_dim)

    def _gaussian(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs)
        return self.mean(h), self.log_std(h).clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self._gaussian(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        return torch.tanh(u), squashed_gaussian_log_prob(u, mean, log_std)

    def act(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        mean, log_std = self._gaussian(obs)
        return torch.tanh(mean if deterministic else mean + log_std.exp() * torch.randn_like(mean))


class Temperature(nn.Module):
    """log alpha as a module, so that ``rt.wrap`` all-reduces its gradient under torchrun."""

    def __init__(self):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.zeros(()))

    def forward(self) -> torch.Tensor:
        return self.log_alpha


# ---------------------------------------------------------------------------- the agent
class Algorithm(OffPolicyAgent):
    name = "SAC"

    def build(self, obs_space, action_space) -> None:
        self.actor = SquashedGaussianActor(obs_space, self.action_dim, self.config.hidden).to(self.device)

    def build_training(self) -> None:
        cfg, rt = self.config, self.rt
        self.q1, self.q2 = (QNetwork(self.obs_dim, self.action_dim, cfg.hidden).to(self.device) for _ in range(2))
        self.q1_target, self.q2_target = frozen_copy(self.q1), frozen_copy(self.q2)
        self.train_actor, self.train_q1, self.train_q2 = rt.wrap(self.actor), rt.wrap(self.q1), rt.wrap(self.q2)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, fused=True)
        self.q_optimizer = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=cfg.lr, fused=True)
        self.learner = ("q1", "q2", "q1_target", "q2_target", "actor_optimizer", "q_optimizer")
        self.target_entropy = -float(self.action_dim)
        if cfg.alpha is None:
            self.temperature = Temperature().to(self.device)
            self.train_temperature = rt.wrap(self.temperature)
            self.alpha_optimizer = torch.optim.Adam(self.temperature.parameters(), lr=cfg.lr, fused=True)
            self.learner += ("temperature", "alpha_optimizer")

    def policy(self, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.actor.act(obs.float(), deterministic)

    @torch.no_grad()
    def explore(self, obs: np.ndarray) -> np.ndarray:
        return self.policy(torch.as_tensor(obs, device=self.device), deterministic=False).cpu().numpy()

    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, rt = self.config, self.rt
        with rt.autocast():
            action_pi, log_pi = self.train_actor(batch.obs)
        log_pi = log_pi.float()
        metrics = {}
        if cfg.alpha is None:
            alpha = self.temperature.log_alpha.detach().exp()       # the value before this step's update
            alpha_loss = temperature_loss(self.train_temperature(), log_pi, self.target_entropy)
            rt.optimize(alpha_loss, self.alpha_optimizer)
            metrics["alpha_loss"] = alpha_loss.detach()
        else:
            alpha = cfg.alpha
        with torch.no_grad():
            next_action, next_log_pi = self.actor(batch.next_obs)
            y = soft_q_target(batch.returns, batch.discounts, self.q1_target(batch.next_obs, next_action),
                              self.q2_target(batch.next_obs, next_action), next_log_pi, alpha)
        with rt.autocast():
            q1, q2 = self.train_q1(batch.obs, batch.actions).float(), self.train_q2(batch.obs, batch.actions).float()
        q_loss = 0.5 * (weighted_mean((q1 - y) ** 2, batch.weights) + weighted_mean((q2 - y) ** 2, batch.weights))
        rt.optimize(q_loss, self.q_optimizer)
        with rt.autocast():
            q1_pi, q2_pi = self.train_q1(batch.obs, action_pi).float(), self.train_q2(batch.obs, action_pi).float()
        pi_loss = actor_loss(log_pi, q1_pi, q2_pi, alpha)
        rt.optimize(pi_loss, self.actor_optimizer)
        polyak(self.q1_target, self.q1, cfg.tau)
        polyak(self.q2_target, self.q2, cfg.tau)
        return {**metrics, "q_loss": q_loss.detach(), "actor_loss": pi_loss.detach(), "q": q1.detach().mean(),
                "entropy": -log_pi.detach().mean(), "alpha": torch.as_tensor(alpha, device=self.device).float()}
