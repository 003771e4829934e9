"""The one long DQN test: CartPole-v1 learned from scratch with the default hyperparameters."""
from __future__ import annotations

from lab.runtime import RunOptions, Runtime
from rl.dqn.algo import Algorithm, Config, EvalOptions


def test_cartpole_greedy_return_reaches_475_within_50k_steps():
    runtime = Runtime(RunOptions(device="cpu", seed=0))
    agent = Algorithm(Config(env_id="CartPole-v1", total_steps=50_000), runtime)
    scores, step = [], 0
    try:
        while step < 50_000:
            agent.train_step(step)
            step += agent.step_size
            if step >= 10_000 and step % 2_500 == 0:     # greedy evaluation over 20 episodes
                with runtime.isolated_rng():
                    scores.append(agent.evaluate(EvalOptions(episodes=20, epsilon=0.0))["eval/ep_return"])
                if scores[-1] >= 475:
                    break
    finally:
        agent.close()
    assert max(scores) >= 475, f"greedy returns every 2,500 steps from 10k: {scores}"
