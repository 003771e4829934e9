"""Actor-critic with a TD-learned Q (the notes' first variant): the critic learns Q^pi(s, a) by
SARSA-style TD(0), and the actor follows the policy gradient weighted by it:

    critic   Q(s_t, a_t) <- r_t + gamma * Q(s_{t+1}, a_{t+1}),  a_{t+1} ~ pi(.|s_{t+1})   (TD target for Q^pi)
    actor    grad J = E[grad log pi(a_t|s_t) * Q(s_t, a_t)]                          (rl.pg.losses)

Each train step plays ``n_steps`` steps in ``num_envs`` envs and makes one update of each. Terminations
are not bootstrapped; time-limit truncations are, from infos["final_obs"]. Q has one output per action
for Discrete actions and takes (s, a) as input for Box actions (vector observations only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from lab.config import in_range, non_negative, one_of, positive
from lab.errors import LabError
from lab.runtime import Runtime
from rl.nets import is_image_space, orthogonal_init, trunk_for
from rl.pg.common import (EvalOptions, env_setup, episode_metrics, evaluate_policy, final_observations,
                          finished_episodes, predict_actions, to_env, to_tensor)
from rl.pg.losses import entropy_bonus, policy_gradient_loss, value_loss
from rl.pg.policies import ActorCritic, LogStd

__all__ = ["Config", "Algorithm", "EvalOptions", "QCritic"]


@dataclass(frozen=True)
class Config:
    """Actor-critic whose critic is a TD-learned action value Q(s, a)."""

    env_id: str = "CartPole-v1"
    """Gymnasium env id."""
    num_envs: int = 8
    """Environments stepped together."""
    n_steps: int = 5
    """Steps per env between updates."""
    gamma: float = 0.99
    """Discount factor."""
    actor_lr: float = 1e-4
    """Adam learning rate of the policy."""
    critic_lr: float = 1e-3
    """Adam learning rate of Q."""
    ent_coef: float = 0.01
    """Weight of the entropy bonus (Q-weighted updates collapse the policy early without it)."""
    max_grad_norm: float = 0.5
    """Clip each network's gradient norm to this value (0: no clipping)."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the MLP trunks."""
    log_std: LogStd = "state-independent"
    """Gaussian policies (Box actions): log-std a free parameter or an output of the network."""
    init_log_std: float = 0.0
    """Initial log standard deviation of Gaussian policies."""
    total_steps: int = 300_000
    """Environment steps to train for, summed over all envs."""
    eval_episodes: int = 10
    """Episodes per evaluation during training (``lab eval --episodes`` sets it afterwards)."""
    capture_video: bool = False
    """Record one episode as a video at each evaluation during training (videos/, and TensorBoard with
    the tb extra and moviepy), as CleanRL's --capture-video."""

    def run_label(self) -> str | None:
        """What the run folder is named after (runs/<algo>-<label>-<time>-s<seed>): the env."""
        return self.env_id

    def __post_init__(self):
        positive(self, "num_envs", "n_steps", "actor_lr", "critic_lr", "total_steps", "eval_episodes")
        non_negative(self, "ent_coef", "max_grad_norm")
        in_range(self, "gamma", 0.0, 1.0)
        one_of(self, "log_std", ["state-independent", "state-dependent"])


class QCritic(nn.Module):
    """Q(s, a): a trunk with one output per action (Discrete), or an MLP on [s, a] (Box actions)."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, hidden: tuple[int, ...]):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.discrete:
            self.trunk, features = trunk_for(observation_space, hidden, nn.Tanh)
            out = int(action_space.n)
        else:
            if is_image_space(observation_space):
                raise LabError(f"Q(s, a) for Box actions takes vector observations, not images {observation_space.shape}; "
                               "use a2c, whose critic is V(s).")
            joint = gym.spaces.Box(-np.inf, np.inf, (observation_space.shape[0] + action_space.shape[0],), np.float32)
            self.trunk, features = trunk_for(joint, hidden, nn.Tanh)
            out = 1
        orthogonal_init(self.trunk, math.sqrt(2))
        self.out = orthogonal_init(nn.Linear(features, out), gain=1.0)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return self.out(self.trunk(obs)).gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
        return self.out(self.trunk(torch.cat([obs.flatten(1).float(), action], -1))).squeeze(-1)


class Algorithm:
    best_metric = ("eval/ep_return", "max")

    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        self.config, self.rt, self.training = config, runtime, training
        self.step_size = config.num_envs * config.n_steps
        self.envs, self.obs, obs_space, action_space = env_setup(config.env_id, config.num_envs, runtime, training)
        self.actor = ActorCritic(obs_space, action_space, config.hidden, config.log_std, config.init_log_std,
                                 with_value=False).to(runtime.device)
        self.updates = 0
        if not training:
            self.actor.eval()
            return
        self.critic = QCritic(obs_space, action_space, config.hidden).to(runtime.device)
        self.train_actor, self.train_critic = runtime.wrap(self.actor), runtime.wrap(self.critic)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr)

    def _rollout(self) -> dict:
        """n_steps transitions (s_t, a_t, r_t, s_{t+1}, terminated_t) from every env, flattened."""
        device, space = self.rt.device, self.envs.single_action_space
        obs, actions, rewards, next_obs, terminated, episodes = [], [], [], [], [], []
        for _ in range(self.config.n_steps):
            obs_t = to_tensor(self.obs, device)
            with torch.no_grad():
                action = self.actor.act(obs_t)
            self.obs, reward, term, trunc, infos = self.envs.step(to_env(action, space))
            obs.append(obs_t)
            actions.append(action)
            rewards.append(reward)
            next_obs.append(final_observations(self.obs, infos))
            terminated.append(term)
            episodes += finished_episodes(infos)
        as_float = lambda rows: torch.as_tensor(np.concatenate(rows), dtype=torch.float32, device=device)
        return {"obs": torch.cat(obs), "actions": torch.cat(actions), "r_t": as_float(rewards),
                "next_obs": to_tensor(np.concatenate(next_obs), device), "terminated_t": as_float(terminated),
                "episodes": episodes}

    def train_step(self, step: int) -> dict:
        cfg = self.config
        batch = self._rollout()
        with torch.no_grad():
            next_action = self.actor.act(batch["next_obs"])
            q_tp1 = self.critic(batch["next_obs"], next_action)
            target = batch["r_t"] + cfg.gamma * (1.0 - batch["terminated_t"]) * q_tp1   # TD target for Q^pi (SARSA)
        with self.rt.autocast():
            q_t = self.train_critic(batch["obs"], batch["actions"]).float()
        critic_loss = value_loss(q_t, target)
        self.rt.optimize(critic_loss, self.critic_optimizer, cfg.max_grad_norm or None)

        with self.rt.autocast():
            dist, _ = self.train_actor(batch["obs"])
        entropy = entropy_bonus(dist.entropy())
        actor_loss = policy_gradient_loss(dist.log_prob(batch["actions"]).float(), q_t) - cfg.ent_coef * entropy
        self.rt.optimize(actor_loss, self.actor_optimizer, cfg.max_grad_norm or None)
        self.updates += 1
        return {"train/critic_loss": critic_loss.detach(), "train/actor_loss": actor_loss.detach(),
                "train/q": q_t.detach().mean(), "train/entropy": entropy.detach(), **episode_metrics(batch["episodes"])}

    def evaluate(self, options: EvalOptions | None = None, *, during_training: bool = False) -> dict:
        return evaluate_policy(self.actor, self.config, options, device=self.rt.device,
                               seed=self.rt.derive_seed("eval", per_rank=False))

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "actor_optimizer": self.actor_optimizer.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Networks, optimizers and update count; the envs restart fresh episodes seeded by the update count."""
        self.actor.load_state_dict(state["actor"])
        self.updates = state["updates"]
        if not self.training:
            return
        self.critic.load_state_dict(state["critic"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.obs, _ = self.envs.reset(seed=self.rt.derive_seed(f"envs/{self.updates}"))

    def predict(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        return predict_actions(self.actor, obs, deterministic, self.rt.device)

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()
