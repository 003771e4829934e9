"""REINFORCE (Williams 1992): the Monte-Carlo policy gradient from whole episodes.

    grad J(theta) = E_tau[ sum_t grad log pi(a_t|s_t) * Psi_t ]

with one of three weightings Psi_t, from the derivation of the notes to its variance fixes:

    episode-return          Psi_t = R(tau) = sum_k gamma^k r_k           (the log-derivative trick as derived)
    reward-to-go            Psi_t = G_t = sum_{k>=t} gamma^(k-t) r_k      (actions do not affect past rewards)
    reward-to-go-baseline   Psi_t = G_t - V(s_t), V regressed on G_t     (a state baseline: same mean, less variance)

Each train step plays ``rollout_steps`` steps in each of ``num_envs`` envs and updates on the episodes
that ended in it; episodes still running carry over to the next step (their start was played by the
previous policy, a small staleness). Episodes are what was played: a time-limit cut is not bootstrapped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lab.config import in_range, non_negative, one_of, positive
from lab.runtime import Runtime
from rl.pg.common import (EvalOptions, RolloutAgent, env_setup, episode_metrics, finished_episodes, to_env,
                          to_tensor)
from rl.pg.losses import policy_gradient_loss, value_loss
from rl.pg.policies import ActorCritic, LogStd
from rl.pg.returns import discounted_returns, episode_returns

__all__ = ["Config", "Algorithm", "EvalOptions", "Weighting"]

Weighting = Literal["episode-return", "reward-to-go", "reward-to-go-baseline"]


@dataclass(frozen=True)
class Config:
    """REINFORCE with a selectable weighting of grad log pi."""

    env_id: str = "CartPole-v1"
    """Gymnasium env id."""
    weighting: Weighting = "reward-to-go-baseline"
    """Psi_t: episode-return R(tau), reward-to-go G_t, or reward-to-go-baseline G_t - V(s_t)."""
    num_envs: int = 8
    """Environments played together."""
    rollout_steps: int = 128
    """Steps per env between updates; the update uses the episodes that ended in them."""
    gamma: float = 0.99
    """Discount factor."""
    lr: float = 1e-3
    """Adam learning rate of the policy."""
    value_lr: float = 1e-3
    """Adam learning rate of the baseline V (reward-to-go-baseline only)."""
    normalize_weights: bool = False
    """Standardize Psi over each batch (a common variance fix; it rescales the step size per batch)."""
    max_grad_norm: float = 0.0
    """Clip the global gradient norm to this value (0: no clipping)."""
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
        positive(self, "num_envs", "rollout_steps", "lr", "value_lr", "total_steps", "eval_episodes")
        non_negative(self, "max_grad_norm")
        in_range(self, "gamma", 0.0, 1.0)
        one_of(self, "weighting", ["episode-return", "reward-to-go", "reward-to-go-baseline"])
        one_of(self, "log_std", ["state-independent", "state-dependent"])


class Algorithm(RolloutAgent):
    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        self.config, self.rt, self.training = config, runtime, training
        self.step_size = config.num_envs * config.rollout_steps
        self.envs, self.obs, obs_space, action_space = env_setup(config.env_id, config.num_envs, runtime, training)
        self.baseline = config.weighting == "reward-to-go-baseline"
        self.net = ActorCritic(obs_space, action_space, config.hidden,
                               config.log_std, config.init_log_std, trunks="separate",
                               with_value=self.baseline).to(runtime.device)
        self.updates = 0
        if not training:
            self.net.eval()
            return
        self.train_net = runtime.wrap(self.net)
        groups = [{"params": [*self.net.policy_trunk.parameters(), *self.net.head.parameters()], "lr": config.lr}]
        if self.baseline:
            groups.append({"params": [*self.net.value_trunk.parameters(), *self.net.value_out.parameters()],
                           "lr": config.value_lr})
        self.optimizer = torch.optim.Adam(groups)
        self._new_episodes()

    def _new_episodes(self) -> None:
        """Per-env lists of the running episode's observations, actions and rewards."""
        n = self.envs.num_envs
        self.running = {"obs": [[] for _ in range(n)], "actions": [[] for _ in range(n)],
                        "rewards": [[] for _ in range(n)]}

    def _play(self, steps: int) -> tuple[list[dict], list]:
        """Play ``steps`` steps in every env; the whole episodes that ended, and their logged stats."""
        device, space = self.rt.device, self.envs.single_action_space
        complete, stats = [], []
        for _ in range(steps):
            obs_t = to_tensor(self.obs, device)
            with torch.no_grad():
                action = self.net.act(obs_t)
            next_obs, reward, terminated, truncated, infos = self.envs.step(to_env(action, space))
            for i in range(self.envs.num_envs):
                self.running["obs"][i].append(obs_t[i])
                self.running["actions"][i].append(action[i])
                self.running["rewards"][i].append(float(reward[i]))
                if terminated[i] or truncated[i]:
                    complete.append({key: lists[i] for key, lists in self.running.items()})
                    for lists in self.running.values():
                        lists[i] = []
            stats += finished_episodes(infos)
            self.obs = next_obs
        return complete, stats

    def train_step(self, step: int) -> dict:
        cfg, device = self.config, self.rt.device
        steps = min(cfg.rollout_steps, -(-(cfg.total_steps - step) // cfg.num_envs))   # the last one stops at the budget
        self.step_size = cfg.num_envs * steps
        episodes, stats = self._play(steps)
        metrics = episode_metrics(stats)
        if not episodes:
            return metrics
        obs = torch.stack([o for ep in episodes for o in ep["obs"]])
        actions = torch.stack([a for ep in episodes for a in ep["actions"]])
        r_t = torch.tensor([r for ep in episodes for r in ep["rewards"]], dtype=torch.float32, device=device)
        done_t = torch.zeros_like(r_t)
        done_t[torch.tensor([len(ep["rewards"]) for ep in episodes], device=device).cumsum(0) - 1] = 1.0

        with self.rt.autocast():
            dist, v_t = self.train_net(obs)
        log_prob = dist.log_prob(actions).float()
        g_t = discounted_returns(r_t, done_t, cfg.gamma)
        if cfg.weighting == "episode-return":
            psi = episode_returns(r_t, done_t, cfg.gamma)
        elif cfg.weighting == "reward-to-go":
            psi = g_t
        else:
            psi = g_t - v_t.detach().float()
        if cfg.normalize_weights:
            psi = (psi - psi.mean()) / (psi.std() + 1e-8)

        loss = pg_loss = policy_gradient_loss(log_prob, psi)
        metrics.update({"train/policy_loss": pg_loss.detach(), "train/entropy": dist.entropy().mean().detach(),
                        "train/episodes": float(len(episodes))})
        if self.baseline:
            v_loss = value_loss(v_t.float(), g_t)
            loss = loss + v_loss
            metrics["train/value_loss"] = v_loss.detach()
        grad_norm = self.rt.optimize(loss, self.optimizer, cfg.max_grad_norm or None)
        if grad_norm is not None:
            metrics["train/grad_norm"] = grad_norm
        self.updates += 1
        return metrics

    def load_state_dict(self, state: dict) -> None:
        """RolloutAgent's restore, and the running episodes start empty."""
        super().load_state_dict(state)
        if self.training:
            self._new_episodes()
