"""The project's SAC and TD3 against Stable-Baselines3's, side by side in one process, and the cost of prioritized
replay at a million transitions: `lab bench offpolicy`.

    lab bench offpolicy                              3 seeds of each, Pendulum-v1, 20,000-step budget
    lab bench offpolicy --seeds 1 --budget 3000      a smoke run
    lab bench offpolicy --skip-peers                 ours only (and the replay timing)

1. Pendulum-v1 with our preset (RL Zoo's values; SB3 gets the same numbers: learning rate, buffer, learning
   starts, batch, tau, gamma, train frequency, gradient steps, network sizes; SAC's learned temperature, TD3's
   delay, smoothing noise and Gaussian exploration noise): environment steps and training wall-clock time
   until a greedy evaluation (20 episodes, the same episodes and evaluation code for both, not timed), run
   every ``--eval-every`` steps, first reaches ``--target``; steps per second of the same runs. Seeds
   alternate ours / SB3; medians over seeds.
2. Prioritized replay at ``--per-capacity`` transitions: milliseconds per batch of 32 to sample (with its
   importance weights) and to update the priorities, over 1,000 batches.

Ours runs through ``lab.session.train_in_memory`` (the trainer of ``lab train``); SB3 through ``learn`` with a
callback that evaluates at the same steps. Stable-Baselines3 is a benchmark-only peer: pip install
stable-baselines3. Writes runs/bench/offpolicy-<time>.json, or --out.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from bench.a2c import EVAL_EPISODES, Clock, GreedyEvaluation
from lab import registry
from lab.benchmark import ResultsPath, parse, results_path
from lab.runtime import RunOptions
from lab.session import train_in_memory
from rl.prioritized import PrioritizedReplayBuffer
from rl.replay import make_replay_buffer

ENV_ID = "Pendulum-v1"


@dataclass(frozen=True)
class Options:
    """SAC and TD3 against Stable-Baselines3's on Pendulum-v1, and prioritized replay's cost per batch."""

    seeds: int = 3
    """Seeds per implementation and algorithm."""
    budget: int = 20_000
    """Step budget of each run (a run that reaches it first is not solved)."""
    target: float = -200.0
    """Greedy mean return that counts as solved."""
    eval_every: int = 1_000
    """Evaluate every this many steps."""
    algos: tuple[str, ...] = ("sac", "td3")
    """Which algorithms to compare."""
    skip_peers: bool = False
    """Only ours (no Stable-Baselines3 runs)."""
    per_capacity: int = 1_000_000
    """Transitions in the prioritized buffer whose sampling and update are timed (0: skip)."""
    out: ResultsPath = None


def config_of(algo: str, budget: int):
    _, module = registry.get(algo)
    return module, module.Config(env_id=ENV_ID, total_steps=budget).resolved()


def ours(algo: str, seed: int, args: Options) -> dict:
    module, config = config_of(algo, args.budget)
    trainer = train_in_memory(algo, config, RunOptions(device="cpu", seed=seed, eval_every=args.eval_every),
                              eval_options=module.EvalOptions(episodes=EVAL_EPISODES),
                              stop_when=lambda step, results: results["eval/ep_return"] >= args.target)
    return {"solved_at": trainer.step if trainer.stopped_early else None, "steps": trainer.step,
            "wall_s": trainer.train_seconds, "cpu_s": trainer.train_cpu_seconds,
            "last_eval": trainer.history[-1][1]["eval/ep_return"]}


def sb3_model(algo: str, config, seed: int):
    """SB3's SAC / TD3 with the hyperparameters of our resolved config."""
    from stable_baselines3 import SAC, TD3
    from stable_baselines3.common.noise import NormalActionNoise

    c = config
    kwargs = dict(learning_rate=c.lr, buffer_size=c.buffer_size, learning_starts=c.learning_starts,
                  batch_size=c.batch_size, tau=c.tau, gamma=c.gamma, train_freq=c.train_freq,
                  gradient_steps=c.gradient_steps, policy_kwargs={"net_arch": list(c.hidden)}, seed=seed, device="cpu")
    env = gym.make(ENV_ID)
    if algo == "sac":
        return SAC("MlpPolicy", env, ent_coef="auto" if c.alpha is None else c.alpha, **kwargs)
    dim = env.action_space.shape[0]
    return TD3("MlpPolicy", env, action_noise=NormalActionNoise(np.zeros(dim), c.exploration_noise * np.ones(dim)),
               policy_delay=c.policy_delay, target_policy_noise=c.target_policy_noise,
               target_noise_clip=c.target_noise_clip, **kwargs)


def sb3(algo: str, seed: int, args: Options) -> dict:
    from stable_baselines3.common.callbacks import BaseCallback

    _, config = config_of(algo, args.budget)
    clock = Clock()

    class Evaluate(GreedyEvaluation, BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % args.eval_every:
                return True
            clock.__exit__()
            self.evaluate()
            clock.__enter__()
            return self.solved_at is None

    callback = Evaluate(ENV_ID, seed, args.target)
    model = sb3_model(algo, config, seed)
    with clock:
        model.learn(total_timesteps=args.budget, callback=callback)
    model.env.close()
    return {"solved_at": callback.solved_at, "steps": int(model.num_timesteps), "wall_s": clock.wall,
            "cpu_s": clock.cpu, "last_eval": callback.score}


def prioritized_cost(capacity: int, batch_size: int = 32, batches: int = 1_000) -> dict:
    """Milliseconds per batch to sample and to update priorities in a full buffer of ``capacity``."""
    space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    buffer = make_replay_buffer(space, gym.spaces.Discrete(2), capacity, 1, torch.device("cpu"),
                                cls=PrioritizedReplayBuffer, seed=0)
    rows = np.arange(buffer.slots - 1)                  # a full ring: every slot but the newest holds a transition
    buffer.valid.view(-1)[rows] = True
    buffer.count[:], buffer.head[:] = buffer.slots, buffer.slots - 1
    buffer._set(rows, np.random.default_rng(0).random(len(rows)) + 1e-6)
    sample = update = 0.0
    for _ in range(batches):
        started = time.perf_counter()
        batch = buffer.sample(batch_size, 0.5)
        sample += time.perf_counter() - started
        started = time.perf_counter()
        buffer.update_priorities(batch.indices, torch.randn(batch_size))
        update += time.perf_counter() - started
    return {"capacity": capacity, "batch_size": batch_size, "sample_ms": 1e3 * sample / batches,
            "update_ms": 1e3 * update / batches}


def summary(rows: list[dict]) -> str:
    hits = [r for r in rows if r["solved_at"] is not None]
    if not hits:
        return f"never (0/{len(rows)})"
    return (f"{statistics.median(r['wall_s'] for r in hits):.0f} s, {statistics.median(r['solved_at'] for r in hits):,.0f}"
            f" steps ({len(hits)}/{len(rows)})")


def main(argv=None) -> int:
    args = parse(Options, argv, "offpolicy")
    torch.set_num_threads(1)
    results: dict = {"env_id": ENV_ID, "target": args.target, "budget": args.budget}
    try:
        import stable_baselines3
        results["sb3_version"] = stable_baselines3.__version__
    except ImportError:
        if not args.skip_peers:
            print("stable-baselines3 is not installed (pip install stable-baselines3), or pass --skip-peers.")
            return 1
    print(f"\n| {ENV_ID} to {args.target:g} (median over solved seeds) | ours | SB3 | ours steps/s | SB3 steps/s |")
    print("|---|---|---|---|---|")
    for algo in args.algos:
        runs: dict[str, list] = {"ours": [], "sb3": []}
        for seed in range(args.seeds):
            runs["ours"].append(ours(algo, seed, args))
            if not args.skip_peers:
                runs["sb3"].append(sb3(algo, seed, args))
            print(f"  {algo} seed {seed}: ours {runs['ours'][-1]}, SB3 {runs['sb3'][-1] if runs['sb3'] else '-'}", flush=True)
        results[algo] = runs
        rate = lambda rows: f"{statistics.median(r['steps'] / r['wall_s'] for r in rows):,.0f}" if rows else "-"
        print(f"| {algo} | {summary(runs['ours'])} | {summary(runs['sb3']) if runs['sb3'] else '-'} | "
              f"{rate(runs['ours'])} | {rate(runs['sb3'])} |")
    if args.per_capacity:
        results["prioritized"] = cost = prioritized_cost(args.per_capacity)
        print(f"\nprioritized replay, {cost['capacity']:,} transitions, batch {cost['batch_size']}: "
              f"sample {cost['sample_ms']:.3f} ms, update {cost['update_ms']:.3f} ms per batch")
    out = results_path(args.out, "offpolicy")
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return 0
