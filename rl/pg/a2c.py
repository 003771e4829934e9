"""Advantage actor-critic (A2C; Mnih et al. 2016, synchronous version) over N vector environments.

Each train step plays ``n_steps`` steps in every env with the current policy, then makes one update:

    advantage   A_t = GAE(lambda) over the rollout (lambda = 1: n-step returns minus V(s_t))
    policy      - mean_t[log pi(a_t|s_t) * A_t]          (the policy-gradient estimator, rl.pg.losses)
    value       mean_t[(V(s_t) - (A_t + V(s_t)))^2]     times ``vf_coef``
    entropy     - mean_t[H(pi(.|s_t))]                    times ``ent_coef``

Terminations are not bootstrapped; time-limit truncations are, with V of infos["final_obs"].
Defaults are Stable-Baselines3's A2C (RMSprop 7e-4, alpha 0.99, eps 1e-5; n_steps 5; clip 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lab.config import in_range, non_negative, one_of, positive
from lab.runtime import Runtime
from rl.pg.common import (EvalOptions, env_setup, episode_metrics, evaluate_policy, finished_episodes,
                          predict_actions, to_env, to_tensor)
from rl.pg.losses import entropy_bonus, policy_gradient_loss, value_loss
from rl.pg.policies import ActorCritic, LogStd, Trunks
from rl.pg.returns import gae

__all__ = ["Config", "Algorithm", "EvalOptions"]


@dataclass(frozen=True)
class Config:
    """Synchronous advantage actor-critic."""

    env_id: str = "CartPole-v1"
    """Gymnasium env id (ALE/<Game>-v5 uses the Atari pipeline and the Nature CNN)."""
    num_envs: int = 8
    """Environments stepped together."""
    n_steps: int = 5
    """Steps per env between updates (the n of n-step returns)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """lambda of GAE(lambda); 1.0 gives plain n-step returns, 0.0 one-step TD errors."""
    lr: float = 7e-4
    """Learning rate."""
    optimizer: str = "rmsprop"
    """rmsprop (alpha 0.99, eps 1e-5, as in A3C and Stable-Baselines3) or adam."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus (0.01 is usual for Atari)."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this value (0: no clipping)."""
    normalize_advantage: bool = False
    """Standardize the advantages of each rollout before the policy loss."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the MLP trunks (vector observations)."""
    trunks: Trunks = "auto"
    """shared: one trunk for policy and value; separate: two; auto: shared CNN for images, separate MLPs."""
    log_std: LogStd = "state-independent"
    """Gaussian policies (Box actions): log-std a free parameter or an output of the network."""
    init_log_std: float = 0.0
    """Initial log standard deviation of Gaussian policies."""
    total_steps: int = 500_000
    """Environment steps to train for, summed over all envs (Atari: agent steps, 4 frames each)."""

    def __post_init__(self):
        positive(self, "num_envs", "n_steps", "lr", "total_steps")
        non_negative(self, "vf_coef", "ent_coef", "max_grad_norm")
        in_range(self, "gamma", 0.0, 1.0)
        in_range(self, "gae_lambda", 0.0, 1.0)
        one_of(self, "optimizer", ["rmsprop", "adam"])
        one_of(self, "trunks", ["auto", "shared", "separate"])
        one_of(self, "log_std", ["state-independent", "state-dependent"])


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-5, foreach=True)
    return torch.optim.Adam(params, lr=lr, eps=1e-5, foreach=True)


class Algorithm:
    best_metric = ("eval/ep_return", "max")

    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        self.config, self.rt, self.training = config, runtime, training
        self.step_size = config.num_envs * config.n_steps
        self.envs, self.obs, obs_space, action_space = env_setup(config.env_id, config.num_envs, runtime.rank_seed,
                                                                 training)
        self.net = ActorCritic(obs_space, action_space, config.hidden,
                               config.log_std, config.init_log_std, config.trunks).to(runtime.device)
        self.updates = 0
        if not training:
            self.net.eval()
            return
        self.train_net = runtime.wrap(self.net)
        self.optimizer = make_optimizer(config.optimizer, self.net.parameters(), config.lr)

    def _rollout(self) -> dict:
        """Play n_steps in every env; time-major tensors of what the update needs."""
        cfg, device, space = self.config, self.rt.device, self.envs.single_action_space
        obs, actions, episodes = [], [], []
        r_t, terminated_t, done_t = (np.zeros((cfg.n_steps, cfg.num_envs), np.float32) for _ in range(3))
        truncated_at: list[tuple[int, int, object]] = []   # (t, env, final obs) where a time limit cut an episode
        for t in range(cfg.n_steps):
            obs_t = to_tensor(self.obs, device)
            with torch.no_grad():
                action = self.net.act(obs_t)
            self.obs, r_t[t], terminated, truncated, infos = self.envs.step(to_env(action, space))
            terminated_t[t], done_t[t] = terminated, terminated | truncated
            if truncated.any():
                truncated_at += [(t, int(i), infos["final_obs"][i]) for i in np.flatnonzero(truncated & ~terminated)]
            obs.append(obs_t)
            actions.append(action)
            episodes += finished_episodes(infos)
        as_tensor = lambda rows: torch.from_numpy(rows).to(device)
        return {"obs": torch.stack(obs), "actions": torch.stack(actions), "r_t": as_tensor(r_t),
                "terminated_t": as_tensor(terminated_t), "done_t": as_tensor(done_t), "truncated_at": truncated_at,
                "episodes": episodes}

    def train_step(self, step: int) -> dict:
        cfg, device = self.config, self.rt.device
        batch = self._rollout()
        T, N = batch["r_t"].shape
        with self.rt.autocast():
            dist, values = self.train_net(batch["obs"].flatten(0, 1))
        log_prob, entropy, v_t = dist.log_prob(batch["actions"].flatten(0, 1)), dist.entropy(), values.float().view(T, N)

        # V(s_{t+1}): the next row of v_t, V of the last observation, and V(final obs) where a time limit cut an episode
        with torch.no_grad():
            v_tp1 = torch.cat([v_t[1:].detach(), self.net.value(to_tensor(self.obs, device))[None]])
            if batch["truncated_at"]:
                t_idx, env_idx, final = zip(*batch["truncated_at"])
                v_tp1[list(t_idx), list(env_idx)] = self.net.value(to_tensor(np.stack(final), device))
            advantages = gae(batch["r_t"], v_t.detach(), v_tp1, batch["terminated_t"], batch["done_t"],
                             cfg.gamma, cfg.gae_lambda)
            returns = advantages + v_t.detach()
            weights = advantages
            if cfg.normalize_advantage:
                weights = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        pg_loss = policy_gradient_loss(log_prob, weights.flatten())
        v_loss = value_loss(v_t.flatten(), returns.flatten())
        entropy_mean = entropy_bonus(entropy)
        loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy_mean
        grad_norm = self.rt.optimize(loss, self.optimizer, cfg.max_grad_norm or None)
        self.updates += 1
        metrics = {"train/policy_loss": pg_loss.detach(), "train/value_loss": v_loss.detach(),
                   "train/entropy": entropy_mean.detach(), **episode_metrics(batch["episodes"])}
        if grad_norm is not None:
            metrics["train/grad_norm"] = grad_norm
        return metrics

    def evaluate(self, options: EvalOptions | None = None) -> dict:
        return evaluate_policy(self.net, self.config.env_id, options, seed=self.rt.seed + 10_000, device=self.rt.device)

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Networks, optimizer and update count; the envs restart fresh episodes seeded by the update count."""
        self.net.load_state_dict(state["net"])
        self.updates = state["updates"]
        if not self.training:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs, _ = self.envs.reset(seed=self.rt.rank_seed + self.updates)

    def predict(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        return predict_actions(self.net, obs, deterministic, self.rt.device)

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()
