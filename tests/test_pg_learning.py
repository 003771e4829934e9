"""Short learning tests with fixed seeds, driven by the trainer: each trains until a greedy evaluation
(the one `lab eval` runs) reaches the target, and fails if the step budget of the issue runs out first."""
from lab.runtime import RunOptions
from lab.session import train_in_memory
from rl.pg import a2c, reinforce
from rl.pg.common import EvalOptions

CARTPOLE_SOLVED = 475.0


def train_until(algo: str, config, target: float, eval_every: int, episodes: int = 20):
    """The trainer, evaluating every ``eval_every`` steps and stopping at the first mean >= target."""
    return train_in_memory(algo, config, RunOptions(device="cpu", seed=0, eval_every=eval_every),
                           eval_options=EvalOptions(episodes=episodes),
                           stop_when=lambda step, results: results["eval/ep_return"] >= target)


def last_return(trainer) -> float:
    return trainer.history[-1][1]["eval/ep_return"]


def test_reinforce_with_baseline_solves_cartpole_within_300k_steps():
    config = reinforce.Config(env_id="CartPole-v1", weighting="reward-to-go-baseline", total_steps=300_000)
    trainer = train_until("reinforce", config, CARTPOLE_SOLVED, eval_every=20_000)
    assert trainer.stopped_early, f"mean return {last_return(trainer):.1f} < {CARTPOLE_SOLVED} after 300k steps"


def test_a2c_with_8_envs_solves_cartpole_within_200k_steps():
    config = a2c.Config(env_id="CartPole-v1", num_envs=8, total_steps=200_000)
    trainer = train_until("a2c", config, CARTPOLE_SOLVED, eval_every=10_000)
    assert trainer.stopped_early, f"mean return {last_return(trainer):.1f} < {CARTPOLE_SOLVED} after 200k steps"


def test_a2c_gaussian_policy_learns_to_reach_targets():
    """Reach1D: random actions score about -32, heading straight for the target about -1.5."""
    config = a2c.Config(env_id="lab/Reach1D-v0", optimizer="adam", lr=1e-3, n_steps=16, gae_lambda=0.95,
                        total_steps=40_000)
    trainer = train_until("a2c", config, target=-3.0, eval_every=8_192)
    assert trainer.stopped_early, f"mean return {last_return(trainer):.2f} < -3 after 40k steps"
