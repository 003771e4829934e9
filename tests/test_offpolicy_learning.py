"""SAC and TD3 learn Pendulum-v1 from scratch with their presets (RL Zoo's values), two seeds each, driven by the
trainer: a greedy evaluation (10 episodes) every 1,000 steps, stopping at the first mean >= -250. Budgets are
about twice the measured solve step, within the 20,000 steps the issue allows."""
from __future__ import annotations

import pytest

from lab.runtime import RunOptions
from lab.session import train_in_memory
from rl import sac, td3

TARGET = -250.0
BUDGETS = {"sac": 8_000, "td3": 20_000}
"""Measured solve steps (first evaluation >= -250): SAC seed 0 at 4,000, seed 1 at 3,000 (budget 2x the larger);
TD3, whose preset plays 10,000 steps of random actions first (RL Zoo's learning_starts), seed 0 at 16,000 and seed 1
at 14,000: 2x would pass the issue's 20,000, so its budget is 20,000."""


@pytest.mark.slow
@pytest.mark.timeout(2_400)     # TD3 seed 0 ran past the suite's 900 s limit on the busy 2-core machine
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("module", [sac, td3], ids=["sac", "td3"])
def test_pendulum_greedy_return_reaches_minus_250(module, seed):
    algo = module.__name__.split(".")[-1]
    trainer = train_in_memory(algo, module.Config(env_id="Pendulum-v1", total_steps=BUDGETS[algo]),
                              RunOptions(device="cpu", seed=seed, eval_every=1_000),
                              eval_options=module.EvalOptions(episodes=10),
                              stop_when=lambda step, results: results["eval/ep_return"] >= TARGET)
    scores = [round(results["eval/ep_return"]) for _, results in trainer.history]
    assert trainer.stopped_early, f"greedy returns every 1,000 steps: {scores}"
