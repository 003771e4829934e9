"""The long DQN tests: CartPole-v1 learned from scratch with the default hyperparameters, and with the dueling
network and prioritized replay on top, driven by the trainer (greedy evaluation over 20 episodes every 2,500
steps, stopping at the target from 10,000 steps on)."""
from __future__ import annotations

import pytest

from lab.runtime import RunOptions
from lab.session import train_in_memory
from rl.dqn.algo import Config, EvalOptions


def solve_cartpole(seed: int = 0, **options):
    trainer = train_in_memory(
        "dqn", Config(env_id="CartPole-v1", total_steps=50_000, **options),
        RunOptions(device="cpu", seed=seed, eval_every=2_500), eval_options=EvalOptions(episodes=20, epsilon=0.0),
        stop_when=lambda step, results: step >= 10_000 and results["eval/ep_return"] >= 475)
    scores = [results["eval/ep_return"] for _, results in trainer.history]
    assert trainer.stopped_early, f"greedy returns every 2,500 steps: {scores}"


def test_cartpole_greedy_return_reaches_475_within_50k_steps():
    solve_cartpole()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_dueling_prioritized_dqn_solves_cartpole_within_the_plain_budget(seed):
    """Measured: seed 0 solved at 10,000 steps (the first evaluation that counts), seed 1 at 15,000."""
    solve_cartpole(seed, dueling=True, prioritized=True)
