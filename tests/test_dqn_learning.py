"""The one long DQN test: CartPole-v1 learned from scratch with the default hyperparameters, driven by
the trainer (greedy evaluation over 20 episodes every 2,500 steps, stopping at the target)."""
from __future__ import annotations

from lab.runtime import RunOptions
from lab.session import train_in_memory
from rl.dqn.algo import Config, EvalOptions


def test_cartpole_greedy_return_reaches_475_within_50k_steps():
    trainer = train_in_memory(
        "dqn", Config(env_id="CartPole-v1", total_steps=50_000), RunOptions(device="cpu", seed=0, eval_every=2_500),
        eval_options=EvalOptions(episodes=20, epsilon=0.0),
        stop_when=lambda step, results: step >= 10_000 and results["eval/ep_return"] >= 475)
    scores = [results["eval/ep_return"] for _, results in trainer.history]
    assert trainer.stopped_early, f"greedy returns every 2,500 steps: {scores}"
