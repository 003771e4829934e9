"""Advantage actor-critic (A2C; Mnih et al. 2016, synchronous version) over N vector environments.

Each train step plays ``n_steps`` steps in every env with the current policy (``rl.pg.common.collect_rollout``,
shared with PPO), then makes one update:

    advantage   A_t = GAE(lambda) over the rollout (lambda = 1: n-step returns minus V(s_t))
    policy      - mean_t[log pi(a_t|s_t) * A_t]          (the policy-gradient estimator, rl.pg.losses)
    value       mean_t[(V(s_t) - (A_t + V(s_t)))^2]     times ``vf_coef``
    entropy     - mean_t[H(pi(.|s_t))]                    times ``ent_coef``

Terminations are not bootstrapped; time-limit truncations are, with V of infos["final_obs"].
Defaults are Stable-Baselines3's A2C (RMSprop 7e-4, alpha 0.99, eps 1e-5; n_steps 5; clip 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lab.config import in_range, non_negative, one_of, positive
from lab.runtime import Runtime
from rl.pg.common import EvalOptions, RolloutAgent, collect_rollout, env_setup, episode_metrics
from rl.pg.losses import entropy_bonus, policy_gradient_loss, value_loss
from rl.pg.policies import ActorCritic, LogStd, Trunks

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
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
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
    eval_episodes: int = 10
    """Episodes per evaluation during training (``lab eval --episodes`` sets it afterwards)."""
    capture_video: bool = False
    """Record one episode as a video at each evaluation during training (videos/, and TensorBoard with
    the tb extra and moviepy), as CleanRL's --capture-video."""

    def run_label(self) -> str | None:
        """What the run folder is named after (runs/<algo>-<label>-<time>-s<seed>): the env."""
        return self.env_id

    def __post_init__(self):
        positive(self, "num_envs", "n_steps", "lr", "total_steps", "eval_episodes")
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


class Algorithm(RolloutAgent):
    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        self.config, self.rt, self.training = config, runtime, training
        self.step_size = config.num_envs * config.n_steps
        self.envs, self.obs, obs_space, action_space = env_setup(config.env_id, config.num_envs, runtime, training)
        self.net = ActorCritic(obs_space, action_space, config.hidden,
                               config.log_std, config.init_log_std, config.trunks).to(runtime.device)
        self.updates = 0
        if not training:
            self.net.eval()
            return
        self.train_net = runtime.wrap(self.net)
        self.optimizer = make_optimizer(config.optimizer, self.net.parameters(), config.lr)

    def train_step(self, step: int) -> dict:
        cfg = self.config
        rollout, self.obs = collect_rollout(self.net, self.envs, self.obs, cfg.n_steps, self.rt.device)
        with self.rt.autocast():
            dist, values = self.train_net(rollout.obs.flatten(0, 1))
        log_prob, entropy, v_t = dist.log_prob(rollout.actions.flatten(0, 1)), dist.entropy(), values.float()

        advantages = rollout.advantages(cfg.gamma, cfg.gae_lambda)
        returns = advantages + rollout.values
        weights = advantages
        if cfg.normalize_advantage:
            weights = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        pg_loss = policy_gradient_loss(log_prob, weights.flatten())
        v_loss = value_loss(v_t, returns.flatten())
        entropy_mean = entropy_bonus(entropy)
        loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy_mean
        grad_norm = self.rt.optimize(loss, self.optimizer, cfg.max_grad_norm or None)
        self.updates += 1
        metrics = {"train/policy_loss": pg_loss.detach(), "train/value_loss": v_loss.detach(),
                   "train/entropy": entropy_mean.detach(), **episode_metrics(rollout.episodes)}
        if grad_norm is not None:
            metrics["train/grad_norm"] = grad_norm
        return metrics
