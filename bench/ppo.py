"""The project's PPO against Stable-Baselines3's PPO, side by side in one process: `lab bench ppo`.

Both sides get the same hyperparameters: our preset of each env (``lab/presets/ppo.toml``; RL Zoo's tuned
values) passed to SB3's PPO, whose default policy is the same network (separate 64-64 tanh MLPs, orthogonal
init, state-independent log-std at 0; Atari: the shared Nature CNN) and whose Adam has the same eps 1e-5.

1. Steps and training wall-clock until a greedy evaluation (20 episodes, the same episodes for both,
   not timed) reaches the target, for each seed: CartPole-v1 >= 475, Acrobot-v1 >= -100,
   Pendulum-v1 >= -250; a run that reaches the preset's budget first is not solved. Steps per second
   are those of the same runs (steps / training wall-clock). Medians over seeds.
2. ALE/Breakout-v5 steps per second for a reduced number of steps (CPU).

Ours runs through ``lab.session.train_in_memory`` (the trainer of ``lab train``); SB3 through ``learn``
with a callback that evaluates after each update that crosses an evaluation step, as the trainer does.
Stable-Baselines3 is a benchmark-only peer: pip install stable-baselines3.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from bench.a2c import Clock
from lab.benchmark import ResultsPath, parse, results_path
from lab.runtime import RunOptions, derive_seed
from lab.session import train_in_memory
from rl.evaluation import run_episodes
from rl.pg import ppo
from rl.pg.common import EvalOptions

EVAL_EPISODES = 20
TASKS = {                   # env id: (target greedy mean return, evaluate every this many steps)
    "CartPole-v1": (475.0, 10_240),
    "Acrobot-v1": (-100.0, 16_384),
    "Pendulum-v1": (-250.0, 8_192),
}


def sb3_model(config: ppo.Config, seed: int):
    """SB3's PPO with the hyperparameters of our resolved config (linear schedules where ours anneals)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    c = config.resolved()
    require_sb3_compatible(c)
    linear = lambda initial: (lambda progress_remaining: initial * progress_remaining)
    kwargs = dict(learning_rate=linear(c.lr) if c.anneal_lr else c.lr, n_steps=c.n_steps,
                  batch_size=c.minibatch_size, n_epochs=c.n_epochs, gamma=c.gamma, gae_lambda=c.gae_lambda,
                  clip_range=linear(c.clip_range) if c.anneal_clip_range else c.clip_range,
                  normalize_advantage=c.normalize_advantage, ent_coef=c.ent_coef, vf_coef=c.vf_coef,
                  max_grad_norm=c.max_grad_norm, target_kl=c.target_kl, seed=seed, device="cpu")
    if c.env_id.startswith("ALE/"):
        import ale_py
        import gymnasium as gym
        gym.register_envs(ale_py)
        envs = VecFrameStack(make_atari_env(c.env_id, n_envs=c.num_envs, seed=seed,
                                            env_kwargs={"frameskip": 1, "repeat_action_probability": 0.0}), 4)
        return PPO("CnnPolicy", envs, **kwargs)
    return PPO("MlpPolicy", make_vec_env(c.env_id, n_envs=c.num_envs, seed=seed), **kwargs)


def require_sb3_compatible(c: ppo.Config) -> None:
    """SB3 clips the value prediction without taking the larger error; refuse to compare different losses."""
    if c.clip_value_loss:
        raise SystemExit(f"{c.env_id}: --clip-value-loss has no SB3 equivalent; benchmark with it off.")


# ------------------------------------------------------------------ steps to solve
def ours_to_solve(env_id: str, seed: int, target: float, eval_every: int) -> dict:
    config = ppo.Config(env_id=env_id)
    trainer = train_in_memory("ppo", config, RunOptions(device="cpu", seed=seed, eval_every=eval_every),
                              eval_options=EvalOptions(episodes=EVAL_EPISODES, deterministic=True),
                              stop_when=lambda step, results: results["eval/ep_return"] >= target)
    return {"solved": trainer.stopped_early, "steps": trainer.step, "wall_s": trainer.train_seconds,
            "last_eval": trainer.history[-1][1]["eval/ep_return"], "budget": config.total_steps}


def sb3_to_solve(env_id: str, seed: int, target: float, eval_every: int) -> dict:
    from stable_baselines3.common.callbacks import BaseCallback

    class EvaluateAfterUpdates(BaseCallback):
        """After each update that crosses a multiple of ``eval_every`` steps: our greedy evaluation (same
        episodes, not timed); stop at the next step once it reaches the target."""

        def __init__(self):
            super().__init__()
            self.score, self.solved_at, self.eval_wall, self.evaluated_at = float("nan"), None, 0.0, 0

        def _on_rollout_start(self) -> None:          # called after every update (and before the first rollout)
            if self.num_timesteps // eval_every > self.evaluated_at // eval_every:
                self.evaluate()

        def evaluate(self) -> None:
            started = time.perf_counter()
            policy = lambda obs: self.model.predict(obs, deterministic=True)[0]
            self.score = float(run_episodes(policy, env_id, EVAL_EPISODES, seed=derive_seed(seed, "eval")).mean())
            self.eval_wall += time.perf_counter() - started
            self.evaluated_at = self.num_timesteps
            if self.score >= target:
                self.solved_at = self.num_timesteps

        def _on_step(self) -> bool:
            return self.solved_at is None

    config = ppo.Config(env_id=env_id)
    model, callback = sb3_model(config, seed), EvaluateAfterUpdates()
    with Clock() as clock:
        model.learn(config.total_steps, callback=callback)
    model.get_env().close()
    if callback.solved_at is None and callback.evaluated_at < model.num_timesteps:
        callback.evaluate()                           # the trainer always evaluates at the end; so do we
    solved_at = callback.solved_at
    return {"solved": solved_at is not None, "steps": solved_at or model.num_timesteps,
            "wall_s": clock.wall - callback.eval_wall, "last_eval": callback.score, "budget": config.total_steps}


def steps_to_solve(env_id: str, seeds: int) -> dict:
    target, eval_every = TASKS[env_id]
    out: dict = {"target": target, "eval_every": eval_every, "ours": [], "sb3": []}
    for seed in range(seeds):
        for side, fn in (("ours", ours_to_solve), ("sb3", sb3_to_solve)):
            result = fn(env_id, seed, target, eval_every)
            out[side].append(result)
            print(f"  {env_id} {side:<4} seed {seed}: {'solved' if result['solved'] else 'NOT solved'} at "
                  f"{result['steps']} steps, {result['wall_s']:.1f} s (last eval {result['last_eval']:.1f})", flush=True)
    for side in ("ours", "sb3"):
        runs = out[side]
        out[side + "_median_steps"] = statistics.median(r["steps"] for r in runs)
        out[side + "_median_wall_s"] = statistics.median(r["wall_s"] for r in runs)
        out[side + "_median_sps"] = statistics.median(r["steps"] / r["wall_s"] for r in runs)
        out[side + "_solved"] = sum(r["solved"] for r in runs)
    return out


# ------------------------------------------------------------------ Atari throughput
def atari_throughput(env_id: str, steps: int) -> dict:
    """Steps per second of each side over ``steps`` steps (no evaluation; one seed)."""
    config = ppo.Config(env_id=env_id, total_steps=steps)
    trainer = train_in_memory("ppo", config, RunOptions(device="cpu", seed=0, eval_every=10 * steps))
    ours = steps / trainer.train_seconds
    model = sb3_model(config, seed=0)
    with Clock() as clock:
        model.learn(steps)
    model.get_env().close()
    sb3 = model.num_timesteps / clock.wall
    print(f"  {env_id}: ours {ours:.0f} steps/s, SB3 {sb3:.0f} steps/s", flush=True)
    return {"steps": steps, "ours_sps": ours, "sb3_sps": sb3, "ratio": ours / sb3}


def report(result: dict) -> str:
    lines = ["| task | steps to solve, ours | SB3 | wall-clock to solve, ours | SB3 | SB3 / ours (speed-up) "
             "| steps/s ours | SB3 | solved ours | SB3 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for env_id, s in result["solve"].items():
        n = len(s["ours"])
        lines.append(f"| {env_id} (>= {s['target']:g}) | {s['ours_median_steps']:,.0f} | {s['sb3_median_steps']:,.0f} | "
                     f"{s['ours_median_wall_s']:.1f} s | {s['sb3_median_wall_s']:.1f} s | "
                     f"{s['sb3_median_wall_s'] / s['ours_median_wall_s']:.2f}x | {s['ours_median_sps']:,.0f} | "
                     f"{s['sb3_median_sps']:,.0f} | {s['ours_solved']}/{n} | {s['sb3_solved']}/{n} |")
    t = result.get("atari")
    if t:
        lines.append(f"| ALE/Breakout-v5 throughput, {t['steps']:,} steps | | | | | {t['ratio']:.2f}x | "
                     f"{t['ours_sps']:.0f} | {t['sb3_sps']:.0f} | | |")
    return "\n".join(lines)


def load_average() -> str:
    return Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "n/a"


Task = Literal[tuple(TASKS)]


@dataclass(frozen=True)
class Options:
    """The lab's PPO against Stable-Baselines3's: steps to solve classic tasks, Breakout throughput."""

    envs: tuple[Task, ...] = tuple(TASKS)
    """Classic tasks to solve."""
    seeds: int = 3
    """Seeds per task (medians are reported)."""
    atari_steps: int = 2_048
    """Breakout steps for the throughput run (0 skips Atari)."""
    out: ResultsPath = None


def main(argv: list[str] | None = None) -> int:
    args = parse(Options, argv, "ppo")
    out = results_path(args.out, "ppo")
    try:
        import stable_baselines3
    except ImportError:
        print("lab bench ppo compares against Stable-Baselines3, which is not installed: pip install stable-baselines3")
        return 1
    torch.set_num_threads(1)
    result = {"sb3_version": stable_baselines3.__version__, "torch_threads": torch.get_num_threads(), "device": "cpu",
              "args": {k: str(v) for k, v in vars(args).items()}, "loadavg_before": load_average(), "solve": {}}
    for env_id in args.envs:
        print(f"{env_id}: steps to {TASKS[env_id][0]:g}", flush=True)
        result["solve"][env_id] = steps_to_solve(env_id, args.seeds)
        out.write_text(json.dumps(result, indent=2, default=float))     # what is done survives a failure
    if args.atari_steps:
        print(f"ALE/Breakout-v5 throughput ({args.atari_steps} steps, reduced for a CPU)", flush=True)
        result["atari"] = atari_throughput("ALE/Breakout-v5", args.atari_steps)
    result["loadavg_after"] = load_average()
    print(report(result))
    print(f"load average before: {result['loadavg_before']}; after: {result['loadavg_after']}")
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
