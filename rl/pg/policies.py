"""Policy heads (categorical; diagonal Gaussian with state-independent or state-dependent log-std) and
the actor-critic network that puts a trunk (MLP or Nature CNN) under them.

Gaussian actions are sampled unbounded and clipped to the Box bounds only when sent to the env, so the
log-probability is that of the sampled action (as in Stable-Baselines3 and CleanRL).
"""
from __future__ import annotations

import math
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

from lab.errors import LabError
from rl.nets import is_image_space, orthogonal_init, trunk_for

LogStd = Literal["state-independent", "state-dependent"]
HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
Trunks = Literal["auto", "shared", "separate"]


class CategoricalHead(nn.Module):
    """Logits of a categorical distribution over ``n`` discrete actions."""

    def __init__(self, features: int, n: int):
        super().__init__()
        self.logits = orthogonal_init(nn.Linear(features, n), gain=0.01)

    def forward(self, h: torch.Tensor) -> Distribution:
        return Categorical(logits=self.logits(h), validate_args=False)

    def act(self, h: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """A sample (Gumbel-max: argmax of logits + Gumbel noise), or the argmax; no distribution object."""
        logits = self.logits(h)
        if deterministic:
            return logits.argmax(-1)
        return (logits - torch.empty_like(logits).exponential_().log()).argmax(-1)

    def sample(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A sampled action and its log-probability log pi(a|s), from one pass over the logits."""
        log_pi = self.logits(h).log_softmax(-1)
        action = (log_pi - torch.empty_like(log_pi).exponential_().log()).argmax(-1)
        return action, log_pi.gather(-1, action[..., None]).squeeze(-1)

    def log_prob_and_entropy(self, h: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) of given actions and H(pi(.|s)), without building a distribution object."""
        log_pi = self.logits(h).log_softmax(-1)
        entropy = -(log_pi.exp() * log_pi).sum(-1)        # H = -sum_a pi(a|s) log pi(a|s)
        return log_pi.gather(-1, actions.long()[..., None]).squeeze(-1), entropy


class GaussianHead(nn.Module):
    """A diagonal Gaussian: the mean from the features; log-std a free parameter (state-independent) or
    a second linear output (state-dependent, clamped to [-20, 2]). log pi(a|s) sums over action dims."""

    def __init__(self, features: int, action_dim: int, log_std: LogStd = "state-independent",
                 init_log_std: float = 0.0):
        super().__init__()
        self.mean = orthogonal_init(nn.Linear(features, action_dim), gain=0.01)
        self.state_dependent = log_std == "state-dependent"
        if self.state_dependent:
            self.log_std = orthogonal_init(nn.Linear(features, action_dim), gain=0.01)
            nn.init.constant_(self.log_std.bias, init_log_std)
        else:
            self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def forward(self, h: torch.Tensor) -> Distribution:
        mean = self.mean(h)
        log_std = self.log_std(h).clamp(-20.0, 2.0) if self.state_dependent else self.log_std.expand_as(mean)
        return Independent(Normal(mean, log_std.exp(), validate_args=False), 1, validate_args=False)

    def act(self, h: torch.Tensor, deterministic: bool) -> torch.Tensor:
        dist = self(h)
        return dist.mean if deterministic else dist.sample()

    def sample(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An unbounded sample a = mu + sigma * eps and its log-probability (clipping happens at the env)."""
        dist = self(h)
        action = dist.sample()
        return action, dist.log_prob(action)

    def log_prob_and_entropy(self, h: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) of given actions and H(pi(.|s)), in closed form (no distribution object)."""
        mean = self.mean(h)
        log_std = self.log_std(h).clamp(-20.0, 2.0) if self.state_dependent else self.log_std.expand_as(mean)
        # diagonal Gaussian: log pi(a|s) = sum_i [-((a_i - mu_i) / sigma_i)^2 / 2 - log sigma_i - log(2 pi) / 2]
        log_prob = (-0.5 * ((actions - mean) / log_std.exp()) ** 2 - log_std - HALF_LOG_2PI).sum(-1)
        entropy = (0.5 + HALF_LOG_2PI + log_std).sum(-1)  # H = sum_i [1/2 + log(2 pi)/2 + log sigma_i]
        return log_prob, entropy


def check_action_space(space: gym.Space) -> None:
    """Refuse action spaces the heads cannot serve, in one sentence."""
    if isinstance(space, gym.spaces.Discrete):
        return
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise LabError(f"action space {space} has infinite bounds, but Gaussian actions are clipped to the "
                           "bounds before they reach the env; wrap the env to give it finite bounds.")
        return
    raise LabError(f"action space {space} is not supported: the policies take Discrete (categorical) "
                   "or a 1-D Box (diagonal Gaussian).")


def make_head(action_space: gym.Space, features: int, log_std: LogStd, init_log_std: float) -> nn.Module:
    check_action_space(action_space)
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalHead(features, int(action_space.n))
    return GaussianHead(features, action_space.shape[0], log_std, init_log_std)


class ActorCritic(nn.Module):
    """pi(.|s) and, if ``with_value``, V(s), over one shared trunk or two separate ones.

    ``trunks="auto"`` shares the Nature CNN for image observations and keeps separate MLPs for vectors
    (the Stable-Baselines3 defaults).
    """

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, hidden: tuple[int, ...] = (64, 64),
                 log_std: LogStd = "state-independent", init_log_std: float = 0.0, trunks: Trunks = "auto",
                 with_value: bool = True):
        super().__init__()
        self.observation_space, self.action_space = observation_space, action_space
        shared = trunks == "shared" or (trunks == "auto" and is_image_space(observation_space))
        self.policy_trunk, features = trunk_for(observation_space, hidden, nn.Tanh)
        orthogonal_init(self.policy_trunk, math.sqrt(2))
        self.head = make_head(action_space, features, log_std, init_log_std)
        self.value_trunk = self.value_out = None
        if with_value:
            if shared:
                self.value_trunk = self.policy_trunk
            else:
                self.value_trunk, _ = trunk_for(observation_space, hidden, nn.Tanh)
                orthogonal_init(self.value_trunk, math.sqrt(2))
            self.value_out = orthogonal_init(nn.Linear(features, 1), gain=1.0)
        self.shared = shared and with_value

    def policy(self, obs: torch.Tensor) -> Distribution:
        return self.head(self.policy_trunk(obs))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_out(self.value_trunk(obs)).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor | None]:
        """pi(.|s) and V(s) (None without a value head), sharing the trunk's pass when it is shared."""
        h = self.policy_trunk(obs)
        if self.value_out is None:
            return self.head(h), None
        v_h = h if self.shared else self.value_trunk(obs)
        return self.head(h), self.value_out(v_h).squeeze(-1)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """An action per observation: sampled, or the distribution's mode when ``deterministic``."""
        return self.head.act(self.policy_trunk(obs), deterministic)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log pi(a|s), H(pi(.|s)), V(s)) of given actions: what an update on a stored rollout needs."""
        h = self.policy_trunk(obs)
        log_prob, entropy = self.head.log_prob_and_entropy(h, actions)
        v_h = h if self.shared else self.value_trunk(obs)
        return log_prob, entropy, self.value_out(v_h).squeeze(-1)

    def act_with_value(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a ~ pi(.|s), log pi(a|s), V(s)) in one forward pass: what a rollout records when acting."""
        h = self.policy_trunk(obs)
        action, log_prob = self.head.sample(h)
        v_h = h if self.shared else self.value_trunk(obs)
        return action, log_prob, self.value_out(v_h).squeeze(-1)


class ActionEvaluator(nn.Module):
    """``ActorCritic.evaluate_actions`` as a module's forward, so that DDP and torch.compile can wrap it."""

    def __init__(self, net: ActorCritic):
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.net.evaluate_actions(obs, actions)
