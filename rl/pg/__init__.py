"""Policy-gradient methods: REINFORCE, actor-critic with a TD-learned Q, A2C and PPO.

Shared pieces, written once: ``policies`` (categorical and diagonal-Gaussian heads, the actor-critic
network), ``returns`` (reward-to-go, GAE), ``losses`` (the policy-gradient estimator, PPO's clipped
surrogate and value clip), ``common`` (vector envs, the rollout A2C and PPO learn from, evaluation,
videos, and what REINFORCE, A2C and PPO share as agents).
"""
