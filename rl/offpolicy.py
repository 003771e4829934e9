"""What the off-policy actor-critics (SAC, TD3) share around their update: the config fields of the replay
loop, the continuous action space checked and rescaled, the critics Q(s, a), Polyak averaging, and an agent
base class that steps the envs, fills the replay buffer, runs the gradient steps that are due, evaluates
greedily and saves everything an exact resume needs.

Actors act in [-1, 1]^A; the buffer stores those actions and the env gets them rescaled to its Box bounds
(as Stable-Baselines3 does): a = low + (a' + 1) (high - low) / 2.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from envs.make import env_spaces, finished_episodes, make_vector_env
from lab.config import in_range, non_negative, one_of, positive, require
from lab.errors import LabError
from lab.presets import fill_unset, matching
from lab.runtime import Runtime
from rl.evaluation import record_video, run_episodes
from rl.nets import mlp
from rl.pg.common import episode_metrics, final_observations, to_tensor
from rl.replay import ReplayBuffer, buffer_device, make_replay_buffer, resume_replay


@dataclass(frozen=True)
class OffPolicyConfig:
    """The fields SAC and TD3 share. Unset fields take the env's preset in lab/presets/<algo>.toml (RL Zoo's
    values, each cited there; other envs: the "*" table, Stable-Baselines3's defaults)."""

    PRESETS: ClassVar[str] = ""
    """The preset file of the algorithm (lab/presets/<PRESETS>.toml)."""

    env_id: str = "Pendulum-v1"
    """Gymnasium id with a bounded 1-D Box action space and vector observations."""
    total_steps: int | None = None
    """Environment steps to train for, summed over all envs; filled in from the preset when the config is made."""
    num_envs: int = 1
    """Environments stepped together (each one step per ``train_step``)."""
    buffer_size: int | None = None
    """Replay capacity in transitions."""
    learning_starts: int | None = None
    """Environment steps of uniformly random actions before the first gradient step."""
    batch_size: int | None = None
    """Transitions per gradient step."""
    lr: float | None = None
    """Adam learning rate of every network (and of SAC's temperature)."""
    gamma: float | None = None
    """Discount factor."""
    tau: float | None = None
    """Polyak averaging of the targets: theta_target <- tau theta + (1 - tau) theta_target, in (0, 1]."""
    train_freq: int | None = None
    """Run ``gradient_steps`` gradient steps every this many environment steps."""
    gradient_steps: int | None = None
    """Gradient steps per training round."""
    hidden: tuple[int, ...] | None = None
    """Hidden layer sizes of the actor and of each critic (ReLU MLPs)."""
    buffer_device: Literal["auto", "cpu", "train"] = "auto"
    """Where the replay buffer lives: auto puts it on the training GPU when it has room plus 2 GiB, else host memory."""
    save_buffer: bool = False
    """Save the replay buffer in every checkpoint, so ``lab resume`` continues with the same buffer. Without it
    a resumed run gathers ``learning_starts`` transitions again before learning."""
    eval_episodes: int = 10
    """Episodes per evaluation during training (``lab eval --episodes`` sets it afterwards)."""
    capture_video: bool = False
    """Record one episode as a video at each evaluation during training (videos/), as CleanRL's --capture-video."""

    def run_label(self) -> str | None:
        """What the run folder is named after (runs/<algo>-<label>-<time>-s<seed>): the env."""
        return self.env_id

    def __post_init__(self):
        require(isinstance(self.env_id, str) and self.env_id != "", "--env-id must name an environment.")
        if self.total_steps is None:      # the trainer reads total_steps: fill it now (the rest stays None)
            object.__setattr__(self, "total_steps", matching(self.PRESETS, self.env_id)["total_steps"])
        r = self.resolved()
        positive(r, "total_steps", "num_envs", "buffer_size", "batch_size", "lr", "train_freq", "gradient_steps",
                 "tau", "eval_episodes")
        non_negative(r, "learning_starts")
        in_range(r, "gamma", 0.0, 1.0)
        in_range(r, "tau", 0.0, 1.0)
        one_of(r, "buffer_device", ("auto", "cpu", "train"))
        require(all(h > 0 for h in r.hidden), f"--hidden sizes must be > 0, got {r.hidden}.")
        require(r.batch_size <= r.buffer_size,
                f"--batch-size {r.batch_size} is larger than the --buffer-size {r.buffer_size}; lower it or raise the buffer.")

    def resolved(self):
        """A copy with every unset field taken from the env's preset."""
        return fill_unset(self, self.PRESETS, self.env_id)


@dataclass(frozen=True)
class EvalOptions:
    """How `lab eval` plays the policy (its deterministic action: the mean, squashed or not)."""

    episodes: int = 10
    """Number of evaluation episodes."""
    video: bool = False
    """Also record one episode under videos/ (MP4 with imageio-ffmpeg, else GIF)."""

    def __post_init__(self):
        positive(self, "episodes")


def check_spaces(algo: str, env_id: str, obs_space: gym.Space, action_space: gym.Space) -> None:
    """Refuse, in one sentence, spaces these actor-critics cannot serve."""
    if isinstance(action_space, gym.spaces.Discrete):
        raise LabError(f"{algo} needs a continuous (Box) action space, but {env_id} has {action_space}; "
                       "use dqn (or a policy-gradient algorithm) for discrete actions.")
    if not (isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
        raise LabError(f"{algo} takes a 1-D Box action space; {env_id} has {action_space}.")
    if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
        raise LabError(f"{env_id}'s action space {action_space} is unbounded, but {algo} rescales actions from "
                       "[-1, 1] to the Box bounds; wrap the env to give it finite bounds.")
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise LabError(f"{algo} takes vector observations (a 1-D Box); {env_id} has {obs_space}.")


def to_bounds(action: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    # a = low + (a' + 1) (high - low) / 2, a' in [-1, 1]
    return (space.low + (action + 1.0) * 0.5 * (space.high - space.low)).astype(space.dtype)


class QNetwork(nn.Module):
    """Q(s, a): an MLP on the concatenated observation and action."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = mlp(obs_dim + action_dim, 1, hidden)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], dim=-1)).squeeze(-1)


@torch.no_grad()
def polyak(target: nn.Module, online: nn.Module, tau: float) -> None:
    """theta_target <- tau theta + (1 - tau) theta_target (a copy when tau = 1)."""
    torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A target network: a copy that takes no gradient (made before ``rt.wrap``, so it carries no DDP hooks)."""
    return copy.deepcopy(module).requires_grad_(False)


def step_and_store(envs: gym.vector.VectorEnv, replay: ReplayBuffer, obs: np.ndarray, actions: np.ndarray,
                   env_actions: np.ndarray) -> tuple[np.ndarray, dict]:
    """Step the envs with ``env_actions``, store (s, a, r, s') with the true final observation where an
    episode ended; the next observations and the infos."""
    next_obs, rewards, terminated, _, infos = envs.step(env_actions)
    reset = infos.get("_final_obs", np.zeros(envs.num_envs, dtype=bool))
    replay.add(obs, actions, rewards, terminated, final_observations(next_obs, infos), reset)
    return next_obs, infos


class OffPolicyAgent:
    """The loop of SAC and TD3. A subclass sets ``name`` and defines ``build(obs_space, action_space)`` (the
    networks inference needs, as ``self.actor``), ``build_training()`` (targets, wrappers, optimizers, and
    ``self.learner``: the names of the modules and optimizers a checkpoint holds besides the actor),
    ``policy(obs, deterministic)`` (actions in [-1, 1] as a tensor), ``explore(obs)`` (training actions, with
    any exploration noise, as a NumPy array) and ``update(batch)`` (one gradient step; its metrics as 0-d tensors)."""

    name = ""
    best_metric = ("eval/ep_return", "max")

    def __init__(self, config: OffPolicyConfig, runtime: Runtime, training: bool = True):
        config = config.resolved()   # what the session hands over already; a Config built by hand gets the same
        self.config, self.rt, self.training, self.device = config, runtime, training, runtime.device
        self.step_size = config.num_envs
        self.env_steps = 0                             # environment steps taken (all envs)
        self.learning_from = config.learning_starts    # no gradient step before this many env steps
        self.updates = 0                               # gradient steps made
        self.act_rng = np.random.default_rng(runtime.derive_seed("explore"))   # random actions, action noise
        self.envs = None
        if not training:
            self._build(*env_spaces(config.env_id))
            self.actor.eval()
            return
        self.envs = make_vector_env(config.env_id, config.num_envs, for_training=True)
        try:
            self._build(self.envs.single_observation_space, self.envs.single_action_space)
            self.build_training()
            self.replay = self._make_replay()
        except BaseException:
            self.envs.close()
            raise
        self.obs, _ = self.envs.reset(seed=runtime.derive_seed("envs/0"))

    def _build(self, obs_space: gym.Space, action_space: gym.Space) -> None:
        check_spaces(self.name, self.config.env_id, obs_space, action_space)
        self.observation_space, self.action_space = obs_space, action_space
        self.obs_dim, self.action_dim = obs_space.shape[0], action_space.shape[0]
        self.build(obs_space, action_space)

    def _make_replay(self) -> ReplayBuffer:
        cfg = self.config
        nbytes = ReplayBuffer.nbytes_for(cfg.buffer_size, cfg.num_envs, (self.obs_dim,), torch.float32, (self.action_dim,))
        device = buffer_device(cfg.buffer_device, self.device, nbytes)
        generator = torch.Generator(device).manual_seed(self.rt.derive_seed("replay"))
        return make_replay_buffer(self.observation_space, self.action_space, cfg.buffer_size, cfg.num_envs, device,
                                  gamma=cfg.gamma, generator=generator)

    @property
    def acting_network(self) -> nn.Module:
        """The network that picks actions (what ``lab.Agent.network`` returns)."""
        return self.actor

    def networks(self) -> dict[str, nn.Module]:
        """What inference needs, unwrapped: the actor."""
        return {"actor": self.actor}

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def predict(self, obs: np.ndarray, deterministic: bool) -> np.ndarray:
        """Actions in the env's bounds: the policy's deterministic action, or a sample of a stochastic policy
        (as SB3's ``predict``: no exploration noise)."""
        return to_bounds(self.policy(to_tensor(obs, self.device), deterministic).cpu().numpy(), self.action_space)

    def train_step(self, step: int) -> dict:
        cfg = self.config
        if self.env_steps < cfg.learning_starts:
            actions = self.act_rng.uniform(-1.0, 1.0, (cfg.num_envs, self.action_dim)).astype(np.float32)
        else:
            actions = self.explore(self.obs)
        self.obs, infos = step_and_store(self.envs, self.replay, self.obs, actions, to_bounds(actions, self.action_space))
        before, after = self.env_steps, self.env_steps + cfg.num_envs
        self.env_steps = after
        metrics = episode_metrics(finished_episodes(infos))
        if after >= self.learning_from:
            rounds = after // cfg.train_freq - before // cfg.train_freq
            logs: dict[str, list] = {}
            for _ in range(rounds * cfg.gradient_steps):
                batch = self.replay.sample(cfg.batch_size)
                if self.replay.device != self.device:
                    batch = type(batch)(*(t.to(self.device, non_blocking=True) for t in batch))
                for key, value in self.update(batch).items():
                    logs.setdefault(key, []).append(value)
                self.updates += 1
            metrics.update({f"train/{key}": torch.stack(values).mean() for key, values in logs.items()})
        return metrics

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, options: EvalOptions | None = None, *, during_training: bool = False) -> dict:
        options = options or EvalOptions(episodes=self.config.eval_episodes, video=self.config.capture_video)
        was_training = self.actor.training
        self.actor.eval()

        def policy(obs: np.ndarray) -> np.ndarray:
            return self.predict(obs, deterministic=True)

        eval_seed = self.rt.derive_seed("eval", per_rank=False)
        try:
            returns = run_episodes(policy, self.config.env_id, options.episodes, seed=eval_seed)
            results = {"eval/ep_return": float(returns.mean()), "eval/ep_return_std": float(returns.std()),
                       "eval/episodes": float(len(returns))}
            if options.video:
                results["videos/episode"], results["eval/video_return"] = record_video(policy, self.config.env_id,
                                                                                        seed=eval_seed)
        finally:
            self.actor.train(was_training)
        return results

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        learner = {name: getattr(self, name).state_dict() for name in self.learner}
        return {"actor": self.actor.state_dict(), **learner, "act_rng": self.act_rng.bit_generator.state,
                "env_steps": self.env_steps, "learning_from": self.learning_from, "updates": self.updates,
                "replay": self.replay.state_dict() if self.config.save_buffer else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore the agent (and the buffer when it was saved); the environments restart with a seed derived
        from the step, and the buffer closes the episodes they were in. Without training, the actor alone."""
        self.actor.load_state_dict(state["actor"])
        self.env_steps, self.updates = state["env_steps"], state["updates"]
        if not self.training:
            return
        for name in self.learner:
            getattr(self, name).load_state_dict(state[name])
        self.act_rng.bit_generator.state = state["act_rng"]
        self.learning_from = resume_replay(self.replay, state, self.env_steps, self.config.learning_starts)
        self.obs, _ = self.envs.reset(seed=self.rt.derive_seed(f"envs/{self.env_steps}"))

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()
