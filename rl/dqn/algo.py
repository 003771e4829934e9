"""Deep Q-learning (Mnih et al. 2015): an epsilon-greedy policy gathers experience into a replay
buffer; random minibatches regress Q(s, a) onto r + gamma max_a' Q_target(s', a'), where Q_target
is a frozen copy of Q refreshed every ``target_period`` steps (or Polyak-averaged with ``tau`` < 1).

Options beyond the notes' DQN, off by default: Double DQN (van Hasselt et al. 2016) and n-step
returns. One ``train_step`` steps all N environments once (N env steps), stores the transitions,
then runs the gradient steps that are due (``gradient_steps`` every ``train_freq`` env steps).

    lab train dqn --env-id CartPole-v1                     classic-control defaults (50k steps)
    lab train dqn --env-id ALE/Pong-v5 --total-steps 10000000   the published Atari defaults
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
from lab.memory import available_memory
from lab.presets import fill_unset
from rl.dqn.replay import GiB, ReplayBuffer, make_replay_buffer
from rl.evaluation import record_video, run_episodes
from rl.nets import trunk_for

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


class QNetwork(nn.Module):
    """Q(s, .) for every discrete action: an MLP on vectors, the Nature CNN on 4x84x84 uint8 frames."""

    def __init__(self, observation_space: gym.Space, num_actions: int, hidden: tuple[int, ...]):
        super().__init__()
        self.trunk, features = trunk_for(observation_space, hidden)
        self.head = nn.Linear(features, num_actions)

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
            buffer_device = self._buffer_device(obs_space)
            self.replay = make_replay_buffer(
                obs_space, config.buffer_size, config.num_envs, buffer_device, n_step=config.n_step,
                gamma=config.gamma,
                generator=torch.Generator(buffer_device).manual_seed(runtime.derive_seed("replay")))
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
        self.q = QNetwork(obs_space, self.num_actions, self.config.hidden).to(self.device)

    def _buffer_device(self, obs_space: gym.Space) -> torch.device:
        cfg = self.config
        if cfg.buffer_device == "cpu" or self.device.type != "cuda":
            return torch.device("cpu")
        if cfg.buffer_device == "train":
            return self.device
        shape = obs_space.shape[1:] if len(obs_space.shape) == 3 else obs_space.shape
        dtype = torch.uint8 if len(obs_space.shape) == 3 else torch.float32
        needed = ReplayBuffer.nbytes_for(cfg.buffer_size, cfg.num_envs, shape, dtype)
        return self.device if needed + 2 * GiB < available_memory(self.device) else torch.device("cpu")

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
    def update(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient step on a minibatch from the replay buffer; returns (loss, mean Q)."""
        batch = self.replay.sample(self.config.batch_size)
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
        loss = (errors * batch.weights).sum() / batch.weights.sum().clamp(min=1.0)
        self.rt.optimize(loss, self.optimizer, self.config.max_grad_norm or None)
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
        next_obs, rewards, terminated, truncated, infos = self.envs.step(actions)
        reset = infos.get("_final_obs", np.zeros(cfg.num_envs, dtype=bool))
        real_next = next_obs
        if reset.any():                       # the episode's last observation, not the next one's first
            real_next = next_obs.copy()
            for i in np.flatnonzero(reset):
                real_next[i] = infos["final_obs"][i]
        self.replay.add(self.obs, actions, rewards, terminated, real_next, reset)
        self.obs = next_obs

        before, after = self.env_steps, self.env_steps + cfg.num_envs
        self.env_steps = after
        metrics: dict = {"train/epsilon": epsilon}
        episodes = finished_episodes(infos)
        if episodes:
            metrics["rollout/ep_return"] = float(np.mean([r for r, _ in episodes]))
            metrics["rollout/ep_length"] = float(np.mean([n for _, n in episodes]))
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
        if state["replay"] is not None:
            self.replay.load_state_dict(state["replay"])
            self.learning_from = state["learning_from"]
        else:   # an empty buffer: gather learning_starts transitions again before learning
            self.learning_from = max(state["learning_from"], self.env_steps + self.config.learning_starts)
        self.obs, _ = self.envs.reset(seed=self.rt.derive_seed(f"envs/{self.env_steps}"))

    def close(self) -> None:
        if self.training:
            self.envs.close()
