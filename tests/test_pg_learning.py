"""Short learning tests with fixed seeds: each trains until a greedy evaluation (the one `lab eval`
runs) reaches the target, and fails if the step budget of the issue runs out first."""
import math

from lab.runtime import RunOptions, Runtime
from rl.pg import a2c, reinforce
from rl.pg.common import EvalOptions

CARTPOLE_SOLVED = 475.0


def steps_to_reach(module, config, target: float, eval_every: int, episodes: int = 20, seed: int = 0):
    """(steps trained, last evaluation): training stops at the first evaluation whose mean >= target."""
    runtime = Runtime(RunOptions(seed=seed, device="cpu"))
    algorithm = module.Algorithm(config, runtime)
    try:
        step, result = 0, {"eval/ep_return": -math.inf}
        while step < config.total_steps:
            algorithm.train_step(step)
            previous, step = step, step + algorithm.step_size
            if step // eval_every > previous // eval_every or step >= config.total_steps:
                with runtime.isolated_rng():
                    result = algorithm.evaluate(EvalOptions(episodes=episodes))
                if result["eval/ep_return"] >= target:
                    return step, result
        return None, result
    finally:
        algorithm.close()
        runtime.close()


def test_reinforce_with_baseline_solves_cartpole_within_300k_steps():
    config = reinforce.Config(env_id="CartPole-v1", weighting="reward-to-go-baseline", total_steps=300_000)
    step, result = steps_to_reach(reinforce, config, CARTPOLE_SOLVED, eval_every=20_000)
    assert step is not None, f"mean return {result['eval/ep_return']:.1f} < {CARTPOLE_SOLVED} after 300k steps"


def test_a2c_with_8_envs_solves_cartpole_within_200k_steps():
    config = a2c.Config(env_id="CartPole-v1", num_envs=8, total_steps=200_000)
    step, result = steps_to_reach(a2c, config, CARTPOLE_SOLVED, eval_every=10_000)
    assert step is not None, f"mean return {result['eval/ep_return']:.1f} < {CARTPOLE_SOLVED} after 200k steps"


def test_a2c_gaussian_policy_learns_to_reach_targets():
    """Reach1D: random actions score about -32, heading straight for the target about -1.5."""
    config = a2c.Config(env_id="lab/Reach1D-v0", optimizer="adam", lr=1e-3, n_steps=16, gae_lambda=0.95,
                        total_steps=40_000)
    step, result = steps_to_reach(a2c, config, target=-3.0, eval_every=8_192)
    assert step is not None, f"mean return {result['eval/ep_return']:.2f} < -3 after 40k steps"
