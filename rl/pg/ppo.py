"""Proximal Policy Optimization (PPO; Schulman et al. 2017), clipped-surrogate version, over N vector envs.

The step from A2C: the same rollout (``rl.pg.common.collect_rollout``) and the same GAE(lambda), but
instead of one gradient step per rollout, ``n_epochs`` passes over shuffled minibatches of it, with the
policy kept near the one that acted by the clipped surrogate:

    ratio       rho_t = pi(a_t|s_t) / pi_old(a_t|s_t)            (pi_old's log-probs recorded when acting)
    policy      - mean_t[min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)]   A_t normalised per minibatch
    value       mean_t[(V(s_t) - G_t)^2], G_t = A_t + V_old(s_t), optionally clipped near V_old  times ``vf_coef``
    entropy     - mean_t[H(pi(.|s_t))]                                         times ``ent_coef``

Adam (eps 1e-5), global gradient-norm clipping, the learning rate (and optionally eps) annealed linearly
to 0, an optional early stop of the epochs once the approximate KL passes ``target_kl``; orthogonal init;
separate 64-64 tanh MLPs for vectors, a shared Nature CNN for Atari frames. Unset fields take the preset
of the env (lab/presets/ppo.toml, each value's source named).

    lab train ppo                                  CartPole-v1 with RL Zoo's tuned values (100k steps)
    lab train ppo --env-id Pendulum-v1             diagonal Gaussian, state-independent log-std
    lab train ppo --env-id ALE/Breakout-v5         Nature CNN, the Atari pipeline (10M steps)
    lab eval RUN_DIR --episodes 20 --video
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from lab.config import in_range, non_negative, positive, require
from lab.presets import fill_unset, matching
from lab.runtime import Runtime
from rl.pg.common import EvalOptions, RolloutAgent, collect_rollout, env_setup, episode_metrics
from rl.pg.losses import clipped_surrogate_pg_loss, clipped_value_loss, entropy_bonus, value_loss
from rl.pg.policies import ActionEvaluator, ActorCritic

__all__ = ["Config", "Algorithm", "EvalOptions"]

@dataclass(frozen=True)
class Config:
    """Proximal Policy Optimization with the clipped surrogate. Unset fields take the env's preset in
    lab/presets/ppo.toml (CartPole-v1, Acrobot-v1, Pendulum-v1, ALE/*; other envs: CleanRL ppo.py's)."""

    env_id: str = "CartPole-v1"
    """Gymnasium id with Discrete or bounded 1-D Box actions, or an Atari id (ALE/Breakout-v5)."""
    total_steps: int | None = None
    """Environment steps to train for, summed over all envs; filled in from the preset when the config is
    made [CartPole/Acrobot/Pendulum/Atari/other: 100k/1M/100k/10M/500k]."""
    num_envs: int | None = None
    """Environments stepped together (N) [CartPole/Acrobot/Pendulum/Atari/other: 8/16/4/8/4]."""
    n_steps: int | None = None
    """Steps per env in each rollout (n); an update learns from N x n steps [32/256/1024/128/128]."""
    minibatch_size: int | None = None
    """Steps per minibatch; must divide N x n [256/64/64/256/128]."""
    n_epochs: int | None = None
    """Passes over each rollout [20/4/10/4/4]."""
    lr: float | None = None
    """Adam learning rate (eps 1e-5) [1e-3/3e-4/1e-3/2.5e-4/2.5e-4]."""
    anneal_lr: bool | None = None
    """Anneal the learning rate linearly to 0 over total_steps [True/False/False/True/True]."""
    clip_range: float | None = None
    """epsilon of the clipped surrogate [0.2/0.2/0.2/0.1/0.2]."""
    anneal_clip_range: bool | None = None
    """Anneal epsilon linearly to 0 over total_steps [True/False/False/True/False]."""
    clip_value_loss: bool | None = None
    """Clip the value prediction to within epsilon of the acting critic's [False/False/False/False/True]."""
    gamma: float | None = None
    """Discount factor [0.98/0.99/0.9/0.99/0.99]."""
    gae_lambda: float | None = None
    """lambda of GAE(lambda) [0.8/0.94/0.95/0.95/0.95]."""
    ent_coef: float | None = None
    """Weight of the entropy bonus [0/0/0/0.01/0.01]."""
    vf_coef: float | None = None
    """Weight of the value loss (mean squared error) [0.5/0.5/0.5/0.5/0.25]."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this value (0: no clipping)."""
    normalize_advantage: bool = True
    """Standardise the advantages of each minibatch."""
    target_kl: float | None = None
    """Stop an update's epochs once the approximate KL(pi_old || pi) of an epoch's last minibatch passes this."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the policy and value MLPs (vector observations)."""
    init_log_std: float = 0.0
    """Initial log standard deviation of Gaussian policies (Box actions; state-independent)."""
    eval_episodes: int = 10
    """Episodes per evaluation during training (``lab eval --episodes`` sets it afterwards)."""
    capture_video: bool = False
    """Record one episode as a video at each evaluation during training (videos/, and TensorBoard with
    the tb extra and moviepy), as CleanRL's --capture-video."""

    def run_label(self) -> str | None:
        """What the run folder is named after (runs/<algo>-<label>-<time>-s<seed>): the env."""
        return self.env_id

    def __post_init__(self):
        require(isinstance(self.env_id, str) and self.env_id != "", "--env-id must name an environment.")
        if self.total_steps is None:      # the trainer reads total_steps: fill it now (the rest stays None)
            object.__setattr__(self, "total_steps", matching("ppo", self.env_id)["total_steps"])
        r = self.resolved()
        positive(r, "total_steps", "num_envs", "n_steps", "minibatch_size", "n_epochs", "lr", "clip_range",
                 "eval_episodes")
        non_negative(r, "ent_coef", "vf_coef", "max_grad_norm")
        in_range(r, "gamma", 0.0, 1.0)
        in_range(r, "gae_lambda", 0.0, 1.0)
        require(self.target_kl is None or self.target_kl > 0, f"--target-kl must be > 0, got {self.target_kl}.")
        require(all(h > 0 for h in self.hidden), f"--hidden sizes must be > 0, got {self.hidden}.")
        batch = r.num_envs * r.n_steps
        require(r.minibatch_size <= batch and batch % r.minibatch_size == 0,
                f"--minibatch-size {r.minibatch_size} must divide the {batch} steps of a rollout "
                f"(--num-envs {r.num_envs} x --n-steps {r.n_steps}).")

    def resolved(self) -> Config:
        """A copy with every unset field taken from the env's preset."""
        return fill_unset(self, "ppo", self.env_id)


def linear_schedule(initial: float, step: int, total_steps: int) -> float:
    """A value annealed linearly from ``initial`` at step 0 to 0 at ``total_steps``."""
    return initial * max(0.0, 1.0 - step / total_steps)


def explained_variance(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Var[target - prediction] / Var[target]: 1 is a perfect critic, 0 no better than a constant."""
    return 1.0 - (target - prediction).var() / target.var()


class Algorithm(RolloutAgent):
    """PPO on ``num_envs`` envs; evaluation and checkpoints as A2C's (``RolloutAgent``). The learning-rate
    and clip-range schedules are functions of the trainer's step, so a resumed run continues them exactly."""

    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        config = config.resolved()   # what the session hands over already; a Config built by hand gets the same
        self.config, self.rt, self.training = config, runtime, training
        minibatch_here = runtime.shard(config.minibatch_size)
        self.minibatch_size = minibatch_here.stop - minibatch_here.start
        self.step_size = config.num_envs * config.n_steps
        self.envs, self.obs, obs_space, action_space = env_setup(config.env_id, config.num_envs, runtime, training)
        self.net = ActorCritic(obs_space, action_space, config.hidden,
                               "state-independent", config.init_log_std, trunks="auto").to(runtime.device)
        self.updates = 0
        if not training:
            self.net.eval()
            return
        self.train_net = runtime.wrap(ActionEvaluator(self.net))   # log pi(a|s), H, V(s) with gradients
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr, eps=1e-5, fused=True)

    def train_step(self, step: int) -> dict:
        cfg = self.config
        lr = linear_schedule(cfg.lr, step, cfg.total_steps) if cfg.anneal_lr else cfg.lr
        clip_range = linear_schedule(cfg.clip_range, step, cfg.total_steps) if cfg.anneal_clip_range else cfg.clip_range
        for group in self.optimizer.param_groups:
            group["lr"] = lr

        rollout, self.obs = collect_rollout(self.net, self.envs, self.obs, cfg.n_steps, self.rt.device)
        advantages = rollout.advantages(cfg.gamma, cfg.gae_lambda)
        returns = advantages + rollout.values
        batch = {"obs": rollout.obs.flatten(0, 1), "actions": rollout.actions.flatten(0, 1),
                 "log_probs": rollout.log_probs.flatten(), "values": rollout.values.flatten(),
                 "advantages": advantages.flatten(), "returns": returns.flatten()}

        stats: dict[str, list] = {key: [] for key in ("policy_loss", "value_loss", "entropy", "approx_kl",
                                                      "clip_fraction", "grad_norm")}
        epochs = 0
        size = len(batch["returns"])
        for epochs in range(1, cfg.n_epochs + 1):
            order = torch.randperm(size, device=self.rt.device)
            shuffled = {key: value[order] for key, value in batch.items()}
            for start in range(0, size, self.minibatch_size):
                minibatch = {key: value[start:start + self.minibatch_size] for key, value in shuffled.items()}
                for key, value in self.update(minibatch, clip_range).items():
                    stats[key].append(value)
            if cfg.target_kl is not None and stats["approx_kl"][-1] > cfg.target_kl:
                break                                          # one host sync per epoch, only with target_kl
        self.updates += 1

        metrics = {f"train/{key}": torch.stack(values).mean() for key, values in stats.items() if values}
        metrics.update({"train/explained_variance": explained_variance(batch["values"], batch["returns"]),
                        "train/epochs": float(epochs), "train/lr": lr, "train/clip_range": clip_range,
                        **episode_metrics(rollout.episodes)})
        return metrics

    def update(self, mb: dict[str, torch.Tensor], clip_range: float) -> dict[str, torch.Tensor]:
        """One optimizer step on a minibatch; its losses and diagnostics as 0-d tensors (no host sync)."""
        cfg = self.config
        with self.rt.autocast():
            log_prob, entropy, values = self.train_net(mb["obs"], mb["actions"])
        log_ratio = log_prob.float() - mb["log_probs"]
        ratio = log_ratio.exp()
        advantages = mb["advantages"]
        if cfg.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        pg_loss = clipped_surrogate_pg_loss(ratio, advantages, clip_range)
        values = values.float()
        if cfg.clip_value_loss:
            v_loss = clipped_value_loss(values, mb["values"], mb["returns"], clip_range)
        else:
            v_loss = value_loss(values, mb["returns"])
        entropy = entropy_bonus(entropy.float())
        loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
        grad_norm = self.rt.optimize(loss, self.optimizer, cfg.max_grad_norm or None)
        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - log_ratio).mean()     # KL(pi_old || pi) estimate k3 (Schulman's blog)
            clip_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
        out = {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(), "entropy": entropy.detach(),
               "approx_kl": approx_kl, "clip_fraction": clip_fraction}
        if grad_norm is not None:
            out["grad_norm"] = grad_norm
        return out
