"""Policy-gradient methods: REINFORCE, actor-critic with a TD-learned Q, and A2C.

Shared pieces, written once: ``policies`` (categorical and diagonal-Gaussian heads, the actor-critic
network), ``returns`` (reward-to-go, GAE), ``losses`` (the policy-gradient estimator), ``rollout``
(acting in vector envs, evaluation and videos).
"""
