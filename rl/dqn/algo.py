"""Deep Q-learning (Mnih et al. 2015): an epsilon-greedy policy gathers experience into a replay
buffer; random minibatches regress Q(s, a) onto r + gamma max_a' Q_target(s', a'), where Q_target
is a frozen copy of Q refreshed every ``target_period`` steps (or Polyak-averaged with ``tau`` < 1).

Options beyond the notes' DQN, off by default: Double DQN (van Hasselt et al. 2016), the dueling network
(Wang et al. 2016), prioritized replay (Schaul et al. 2016; ``rl.prioritized``) and n-step returns. One
``train_step`` steps all N environments once (N env steps), stores the transitions, then runs the gradient
steps that are due (``gradient_steps`` every ``train_freq`` env steps).

    lab train dqn --env-id CartPole-v1                     classic-control defaults (50k steps)
    lab train dqn --env-id ALE/Pong-v5 --total-steps 10000000   the published Atari defaults
    lab train dqn --env-id ALE/Pong-v5 --preset rainbow-lite    Double + dueling + prioritized + 3-step
    lab eval RUN_DIR --episodes 30 --epsilon 0.05 --video
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from envs.make import env_spaces, finished_episodes, is_atari, make_vector_env
from lab.config import in_range, non_negative, one_of, positive, require
from lab.errors import LabError
from lab.runtime import Runtime
from lab.presets import fill_unset
from rl.evaluation import record_video, run_episodes
from rl.nets import trunk_for
from rl.offpolicy import step_and_store
from rl.pg.common import episode_metrics
from rl.prioritized import PrioritizedReplayBuffer
from rl.replay import ReplayBuffer, buffer_device, buffer_layout, make_replay_buffer, resume_replay, weighted_mean

@dataclass(frozen=True)
class Config:
    """Deep Q-learning with a replay buffer and a target network. Fields left unset take the preset of
    their env family (lab/presets/dqn.toml): classic control (CartPole-v1, ...) or Atari (ALE/*)."""

    env_id: str = "CartPole-v1"
    """Gymnasium id (CartPole-v1, Acrobot-v1, ...) or Atari id (ALE/Pong-v5) with discrete actions."""
    total_steps: int = 50_000
    """Environment steps to train for, summed over all envs (an Atari step is 4 frames; the published
    Atari runs take 10,000,000)."""
    num_envs: int | None = None
    """Environments stepped together, epsilon-greedy each [classic: 1; Atari: 1]."""
    buffer_size: int | None = None
    """Replay capacity in transitions [classic: 100,000; Atari: 1,000,000, ~7.1 GB of frames]."""
    learning_starts: int | None = None
    """Environment steps of experience gathered before the first gradient step [classic: 1,000; Atari: 80,000]."""
    batch_size: int | None = None
    """Transitions per gradient step [classic: 64; Atari: 32]."""
    lr: float | None = None
    """Adam learning rate [classic: 2.3e-3; Atari: 1e-4]."""
    train_freq: int | None = None
    """Run ``gradient_steps`` gradient steps every this many environment steps [classic: 64; Atari: 4]."""
    gradient_steps: int | None = None
    """Gradient steps per training round [classic: 32; Atari: 1]."""
    target_period: int | None = None
    """Update the target network every this many environment steps [classic: 10; Atari: 1,000]."""
    tau: float = 1.0
    """Target update: theta_target <- tau theta + (1 - tau) theta_target (1: hard copy; < 1: Polyak)."""
    gamma: float = 0.99
    """Discount factor."""
    epsilon_start: float = 1.0
    """Exploration rate at step 0."""
    epsilon_end: float | None = None
    """Exploration rate after the linear decay [classic: 0.04; Atari: 0.01]."""
    exploration_fraction: float | None = None
    """Fraction of ``total_steps`` over which epsilon decays linearly [classic: 0.16; Atari: 0.10]."""
    loss: Literal["huber", "mse"] = "huber"
    """TD loss: Huber (smooth L1, the clipped error of the Nature paper) or squared error."""
    max_grad_norm: float = 10.0
    """Clip the gradient norm to this (0: no clipping)."""
    double_q: bool = False
    """Double DQN: the online network picks the next action, the target network values it."""
    n_step: int = 1
    """Bootstrap after n rewards: sum_k gamma^k r_(t+k) + gamma^n max_a Q_target(s_(t+n), a)."""
    dueling: bool = False
    """Dueling network: Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a'), two linear heads on the shared features."""
    prioritized: bool = False
    """Prioritized replay (proportional): transitions drawn in proportion to (|TD error| + eps)^alpha, the loss
    weighted by importance weights with beta annealed to 1 over ``total_steps``."""
    priority_alpha: float = 0.6
    """alpha of prioritized replay: 0 is uniform, 1 fully proportional (Schaul et al. 2016: 0.6)."""
    priority_beta: float = 0.4
    """Initial beta of the importance weights, annealed linearly to 1 (Schaul et al. 2016: 0.4)."""
    priority_eps: float = 1e-6
    """eps added to |TD error| so that no transition gets priority 0."""
    hidden: tuple[int, ...] | None = None
    """Hidden layer sizes of the MLP Q-network [classic: 128 128; Atari: unused, images go through
    the Nature CNN (3 conv + 512)]."""
    sticky_actions: bool = False
    """Atari only: repeat the previous action with probability 0.25 (Machado et al. 2018)."""
    buffer_device: Literal["auto", "cpu", "train"] = "auto"
    """Where the replay buffer lives: auto puts it on the training GPU when the GPU has room for it
    plus 2 GiB (sampling then needs no host-to-device copy), else in host memory."""
    save_buffer: bool = False
    """Save the replay buffer in every checkpoint, so ``lab resume`` continues with the same buffer
    (a 1M Atari buffer adds ~7 GB per checkpoint). Without it a resumed run refills
    ``learning_starts`` transitions before learning again."""
    eval_episodes: int = 10
    """Episodes per evaluation during training (``lab eval --episodes`` sets it afterwards)."""
    capture_video: bool = False
    """Record one episode as a video at each evaluation during training (videos/, and TensorBoard with
    the tb extra and moviepy), as CleanRL's --capture-video."""
    eval_epsilon: float | None = None
    """Exploration rate during evaluation [classic: 0 (greedy); Atari: 0.05 as in Mnih et al. 2015]."""

    def run_label(self) -> str | None:
        """What the run folder is named after (runs/<algo>-<label>-<time>-s<seed>): the env."""
        return self.env_id

    def __post_init__(self):
        require(isinstance(self.env_id, str) and self.env_id != "", "--env-id must name an environment.")
        positive(self, "total_steps", "gamma", "tau", "n_step", "eval_episodes")
        non_negative(self, "max_grad_norm", "epsilon_start")
        in_range(self, "gamma", 0.0, 1.0)
        in_range(self, "tau", 0.0, 1.0)
        in_range(self, "epsilon_start", 0.0, 1.0)
        in_range(self, "priority_alpha", 0.0, 1.0)
        in_range(self, "priority_beta", 0.0, 1.0)
        positive(self, "priority_eps")
        one_of(self, "loss", ("huber", "mse"))
        one_of(self, "buffer_device", ("auto", "cpu", "train"))
        require(not self.sticky_actions or is_atari(self.env_id),
                f"--sticky-actions is an Atari option; {self.env_id} is not an ALE/ env.")
        r = self.resolved()
        require(all(h > 0 for h in r.hidden), f"--hidden sizes must be > 0, got {r.hidden}.")
        positive(r, "num_envs", "buffer_size", "batch_size", "lr", "train_freq", "gradient_steps", "target_period")
        non_negative(r, "learning_starts")
        for name in ("epsilon_end", "exploration_fraction", "eval_epsilon"):
            in_range(r, name, 0.0, 1.0)
        require(r.batch_size <= min(r.learning_starts, r.buffer_size),
                f"--batch-size {r.batch_size} is larger than the {min(r.learning_starts, r.buffer_size)} "
                "transitions the buffer holds when learning starts; raise --learning-starts (and --buffer-size) "
                "or lower --batch-size.")

    def resolved(self) -> Config:
        """A copy with every unset field taken from the preset of its env family."""
        return fill_unset(self, "dqn", self.env_id)


@dataclass(frozen=True)
class EvalOptions:
    """Options of ``lab eval`` for a DQN run."""

    episodes: int = 30
    """Full-game episodes to play; the mean and std of their returns are reported."""
    epsilon: float | None = None
    """Exploration rate while playing (default: the run's eval epsilon, 0 classic / 0.05 Atari)."""
    video: bool = False
    """Also record one episode as a video in the run folder (videos/)."""


# ---------------------------------------------------------------------------- the maths
def td_target(r_t: torch.Tensor, discount_t: torch.Tensor, q_t: torch.Tensor) -> torch.Tensor:
    # Bellman optimality target (Q-learning): y = r + gamma^n (1 - terminal) max_a' Q_target(s', a')
    return r_t + discount_t * q_t.max(dim=-1).values


def double_q_target(r_t: torch.Tensor, discount_t: torch.Tensor, q_t_target: torch.Tensor,
                    q_t_selector: torch.Tensor) -> torch.Tensor:
    # Double DQN target: y = r + gamma^n (1 - terminal) Q_target(s', argmax_a' Q_online(s', a'))
    best = q_t_selector.argmax(dim=-1, keepdim=True)
    return r_t + discount_t * q_t_target.gather(-1, best).squeeze(-1)


def linear_epsilon(step: int, start: float, end: float, decay_steps: float) -> float:
    """Epsilon decays linearly from ``start`` to ``end`` over ``decay_steps`` steps, then stays."""
    if decay_steps <= 0:
        return end
    return start + (end - start) * min(1.0, step / decay_steps)


def dueling_q(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    # dueling aggregation (Wang et al. 2016, eq. 9): Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a')
    return v + a - a.mean(dim=-1, keepdim=True)


class DuelingHead(nn.Module):
    """A value stream V(s) and an advantage stream A(s, .) on the same features, combined by ``dueling_q``."""

    def __init__(self, features: int, num_actions: int):
        super().__init__()
        self.value, self.advantage = nn.Linear(features, 1), nn.Linear(features, num_actions)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return dueling_q(self.value(h), self.advantage(h))


class QNetwork(nn.Module):
    """Q(s, .) for every discrete action: an MLP on vectors, the Nature CNN on 4x84x84 uint8 frames; one linear
    head, or the dueling head."""

    def __init__(self, observation_space: gym.Space, num_actions: int, hidden: tuple[int, ...], dueling: bool = False):
        super().__init__()
        self.trunk, features = trunk_for(observation_space, hidden)
        self.head = DuelingHead(features, num_actions) if dueling else nn.Linear(features, num_actions)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(obs))


# ---------------------------------------------------------------------------- the agent
class Algorithm:
    best_metric = ("eval/ep_return", "max")

    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        """``training=False`` builds what acting needs (the Q-network in eval mode): no environments,
        replay buffer, target network or optimizer."""
        config = config.resolved()   # what the session hands over already; a Config built by hand gets the same
        self.config, self.rt, self.training = config, runtime, training
        self.device = runtime.device
        self.env_options = {"repeat_action_probability": 0.25} if config.sticky_actions else {}
        self.step_size = config.num_envs
        self.env_steps = 0                       # environment steps taken (all envs)
        self.learning_from = config.learning_starts  # no gradient step before this many env steps
        self.act_rng = np.random.default_rng(runtime.derive_seed("explore"))   # exploration coin flips
        if not training:
            obs_space, action_space = env_spaces(config.env_id, **self.env_options)
            self._build_q(obs_space, action_space)
            self.q.eval()
            return
        self.envs = make_vector_env(config.env_id, config.num_envs, for_training=True, **self.env_options)
        try:
            obs_space = self.envs.single_observation_space
            self._build_q(obs_space, self.envs.single_action_space)
            self.q_target = copy.deepcopy(self.q).requires_grad_(False)
            self.train_q = runtime.wrap(self.q)
            self.optimizer = torch.optim.Adam(self.q.parameters(), lr=config.lr, fused=True)
            self.replay = self._make_replay(obs_space, self.envs.single_action_space)
        except BaseException:
            self.envs.close()
            raise
        self.obs, _ = self.envs.reset(seed=runtime.derive_seed("envs/0"))

    def _build_q(self, obs_space: gym.Space, action_space: gym.Space) -> None:
        if not isinstance(action_space, gym.spaces.Discrete):
            raise LabError(f"DQN needs a discrete action space, but {self.config.env_id} has {action_space}; "
                           "pick an env with Discrete actions (a policy-gradient algorithm handles continuous ones).")
        self.observation_space, self.action_space = obs_space, action_space
        self.num_actions = int(action_space.n)
        self.q = QNetwork(obs_space, self.num_actions, self.config.hidden, self.config.dueling).to(self.device)

    def _make_replay(self, obs_space: gym.Space, action_space: gym.Space) -> ReplayBuffer:
        cfg, layout = self.config, buffer_layout(obs_space, action_space)
        frame_shape = layout["obs_shape"][1:] if layout["frame_stack"] > 1 else layout["obs_shape"]
        device = buffer_device(cfg.buffer_device, self.device,
                               ReplayBuffer.nbytes_for(cfg.buffer_size, cfg.num_envs, frame_shape, layout["obs_dtype"]))
        seed = self.rt.derive_seed("replay")
        prioritized = dict(cls=PrioritizedReplayBuffer, alpha=cfg.priority_alpha, eps=cfg.priority_eps, seed=seed)
        return make_replay_buffer(obs_space, action_space, cfg.buffer_size, cfg.num_envs, device, n_step=cfg.n_step,
                                  gamma=cfg.gamma, generator=torch.Generator(device).manual_seed(seed),
                                  **(prioritized if cfg.prioritized else {}))

    # ------------------------------------------------------------------ acting
    def epsilon(self, step: int) -> float:
        cfg = self.config
        return linear_epsilon(step, cfg.epsilon_start, cfg.epsilon_end, cfg.exploration_fraction * cfg.total_steps)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """Epsilon-greedy actions for a batch of observations: one forward pass for all envs."""
        explore = rng.random(len(obs)) < epsilon
        actions = rng.integers(self.num_actions, size=len(obs))
        if not explore.all():
            obs = torch.as_tensor(obs, device=self.device)
            greedy = self.q(obs.float() if obs.is_floating_point() else obs).argmax(dim=-1).cpu().numpy()
            actions = np.where(explore, actions, greedy)
        return actions

    def predict(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        """Greedy actions, or ε-greedy with the final exploration rate (as SB3's DQN.predict)."""
        return self.act(obs, 0.0 if deterministic else self.config.epsilon_end, self.act_rng)

    # ------------------------------------------------------------------ learning
    def beta(self) -> float:
        """beta of the importance weights: from ``priority_beta`` at step 0 linearly to 1 at ``total_steps``."""
        cfg = self.config
        return cfg.priority_beta + (1.0 - cfg.priority_beta) * min(1.0, self.env_steps / cfg.total_steps)

    def update(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient step on a minibatch from the replay buffer; returns (loss, mean Q)."""
        cfg = self.config
        batch = self.replay.sample(cfg.batch_size, self.beta()) if cfg.prioritized else self.replay.sample(cfg.batch_size)
        if self.replay.device != self.device:
            batch = type(batch)(*(t.to(self.device, non_blocking=True) for t in batch))
        with torch.no_grad():
            q_next = self.q_target(batch.next_obs).float()
            if self.config.double_q:
                target = double_q_target(batch.returns, batch.discounts, q_next, self.q(batch.next_obs).float())
            else:
                target = td_target(batch.returns, batch.discounts, q_next)
        with self.rt.autocast():
            q_all = self.train_q(batch.obs)
        q_taken = q_all.float().gather(1, batch.actions[:, None]).squeeze(1)
        if self.config.loss == "huber":
            errors = F.smooth_l1_loss(q_taken, target, reduction="none")
        else:
            errors = F.mse_loss(q_taken, target, reduction="none")
        loss = weighted_mean(errors, batch.weights)
        self.rt.optimize(loss, self.optimizer, self.config.max_grad_norm or None)
        if cfg.prioritized:
            self.replay.update_priorities(batch.indices, q_taken.detach() - target)
        return loss.detach(), q_taken.detach().mean()

    @torch.no_grad()
    def update_target(self) -> None:
        """theta_target <- tau theta + (1 - tau) theta_target (a hard copy when tau = 1)."""
        online, target = list(self.q.parameters()), list(self.q_target.parameters())
        if self.config.tau == 1.0:
            torch._foreach_copy_(target, online)
        else:
            torch._foreach_lerp_(target, online, self.config.tau)

    def train_step(self, step: int) -> dict:
        cfg = self.config
        epsilon = self.epsilon(step)
        actions = self.act(self.obs, epsilon, self.act_rng)
        self.obs, infos = step_and_store(self.envs, self.replay, self.obs, actions, actions)
        before, after = self.env_steps, self.env_steps + cfg.num_envs
        self.env_steps = after
        metrics: dict = {"train/epsilon": epsilon, **episode_metrics(finished_episodes(infos))}
        if after >= self.learning_from:
            rounds = after // cfg.train_freq - before // cfg.train_freq
            losses, qs = [], []
            for _ in range(rounds * cfg.gradient_steps):
                loss, q = self.update()
                losses.append(loss)
                qs.append(q)
            if losses:
                metrics["train/loss"] = torch.stack(losses).mean()
                metrics["train/q"] = torch.stack(qs).mean()
            if after // cfg.target_period > before // cfg.target_period:
                self.update_target()
        return metrics

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, options: EvalOptions | None = None, *, during_training: bool = False) -> dict:
        options = options or EvalOptions(episodes=self.config.eval_episodes, video=self.config.capture_video)
        epsilon = self.config.eval_epsilon if options.epsilon is None else options.epsilon
        require(0.0 <= epsilon <= 1.0, f"--epsilon must be in [0, 1], got {epsilon}.")
        require(options.episodes > 0, f"--episodes must be > 0, got {options.episodes}.")
        generator = np.random.default_rng(self.rt.derive_seed("eval/explore", per_rank=False))

        def policy(obs: np.ndarray) -> np.ndarray:
            return self.act(obs, epsilon, generator)

        eval_seed = self.rt.derive_seed("eval", per_rank=False)
        returns = run_episodes(policy, self.config.env_id, options.episodes, seed=eval_seed, **self.env_options)
        results = {"eval/ep_return": float(returns.mean()), "eval/ep_return_std": float(returns.std()),
                   "eval/episodes": float(len(returns))}
        if options.video:
            video, total = record_video(policy, self.config.env_id, seed=eval_seed, **self.env_options)
            results["videos/episode"] = video
            results["eval/video_return"] = total
        return results

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"q": self.q.state_dict(), "q_target": self.q_target.state_dict(),
                "optimizer": self.optimizer.state_dict(), "act_rng": self.act_rng.bit_generator.state,
                "env_steps": self.env_steps, "learning_from": self.learning_from,
                "replay": self.replay.state_dict() if self.config.save_buffer else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore the agent (and the buffer when it was saved). The environments cannot be saved:
        they restart with a seed derived from the step, and the buffer closes the episodes they were in.
        Without training, only the Q-network is restored."""
        self.q.load_state_dict(state["q"])
        self.env_steps = state["env_steps"]
        if not self.training:
            return
        self.q_target.load_state_dict(state["q_target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.act_rng.bit_generator.state = state["act_rng"]
        self.learning_from = resume_replay(self.replay, state, self.env_steps, self.config.learning_starts)
        self.obs, _ = self.envs.reset(seed=self.rt.derive_seed(f"envs/{self.env_steps}"))

    def close(self) -> None:
        if self.training:
            self.envs.close()
