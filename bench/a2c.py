"""The project's A2C against Stable-Baselines3's A2C, side by side in one process: `lab bench a2c`.

Same hyperparameters on both sides (SB3's A2C defaults: RMSprop 7e-4 alpha 0.99 eps 1e-5, n_steps 5,
gamma 0.99, GAE lambda 1, vf_coef 0.5, ent_coef 0, grad-norm clip 0.5, separate 64-64 tanh MLPs,
orthogonal init; Atari: shared Nature CNN, ent_coef 0.01, vf_coef 0.25), 8 envs.

1. CartPole-v1 steps per second (interleaved repeats, medians), wall-clock and process CPU time.
2. CartPole-v1 steps and training wall-clock until a greedy evaluation (20 episodes, the same episodes
   for both, every 10,000 steps, not timed) reaches a mean of 475, for 3 seeds.
3. ALE/Breakout-v5 steps per second for a reduced number of steps (a CPU cannot do 100,000 quickly).

Ours runs through ``lab.session.train_in_memory`` (the trainer of ``lab train``): its clocks
(``train_seconds``, ``train_cpu_seconds``) leave evaluation out and include the trainer's own work per step
(metric windows, a log line every 1/100 of the run), which the loop this benchmark had before did not
do. A throughput run ends with one untimed evaluation episode (the trainer always evaluates at the end).
SB3 through ``learn``, with a callback that plays the same evaluation; each side also evaluates at its
last step (the trainer always does).

Stable-Baselines3 is a benchmark-only peer: pip install stable-baselines3.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import torch

from lab.benchmark import ResultsPath, parse, results_path
from lab.runtime import RunOptions, derive_seed
from lab.session import train_in_memory
from rl.evaluation import run_episodes
from rl.pg import a2c
from rl.pg.common import EvalOptions

SOLVED = 475.0
EVAL_EPISODES = 20


class Clock:
    """Wall-clock and process CPU seconds of the timed sections only."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


class GreedyEvaluation:
    """Mixed into an SB3 callback (before ``BaseCallback``): our greedy evaluation of its model on the
    episodes our ``Algorithm.evaluate`` plays, timed apart (``eval_wall``), and the step at which it first
    reached ``target``."""

    def __init__(self, env_id: str, seed: int, target: float):
        super().__init__()
        self.env_id, self.eval_seed, self.target = env_id, derive_seed(seed, "eval"), target
        self.score, self.solved_at, self.eval_wall, self.evaluated_at = float("nan"), None, 0.0, 0

    def evaluate(self) -> None:
        started = time.perf_counter()
        policy = lambda obs: self.model.predict(obs, deterministic=True)[0]
        self.score = float(run_episodes(policy, self.env_id, EVAL_EPISODES, seed=self.eval_seed).mean())
        self.eval_wall += time.perf_counter() - started
        self.evaluated_at = self.num_timesteps
        if self.score >= self.target:
            self.solved_at = self.num_timesteps

    def evaluate_at_end(self) -> None:
        """The trainer always evaluates at the last step; so do we."""
        if self.solved_at is None and self.evaluated_at < self.num_timesteps:
            self.evaluate()


def our_config(env_id: str, total_steps: int) -> a2c.Config:
    if env_id.startswith("ALE/"):
        return a2c.Config(env_id=env_id, num_envs=8, ent_coef=0.01, vf_coef=0.25, total_steps=total_steps)
    return a2c.Config(env_id=env_id, num_envs=8, total_steps=total_steps)


def sb3_model(env_id: str, seed: int):
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    if env_id.startswith("ALE/"):
        import ale_py
        import gymnasium as gym
        gym.register_envs(ale_py)
        envs = VecFrameStack(make_atari_env(env_id, n_envs=8, seed=seed,
                                            env_kwargs={"frameskip": 1, "repeat_action_probability": 0.0}), 4)
        return A2C("CnnPolicy", envs, ent_coef=0.01, vf_coef=0.25, seed=seed, device="cpu")
    return A2C("MlpPolicy", make_vec_env(env_id, n_envs=8, seed=seed), seed=seed, device="cpu")


# ------------------------------------------------------------------ throughput
def ours_throughput(env_id: str, steps: int, seed: int) -> tuple[float, float]:
    """(wall, CPU) seconds of ``steps`` training steps in the trainer (its one evaluation, one episode at
    the end, not counted)."""
    trainer = train_in_memory("a2c", our_config(env_id, steps), RunOptions(seed=seed, device="cpu", eval_every=steps),
                              eval_options=EvalOptions(episodes=1))
    return trainer.train_seconds, trainer.train_cpu_seconds


def sb3_throughput(env_id: str, steps: int, seed: int) -> tuple[float, float]:
    model = sb3_model(env_id, seed)
    with Clock() as clock:
        model.learn(steps)
    model.get_env().close()
    return clock.wall, clock.cpu


def throughput(env_id: str, steps: int, repeats: int) -> dict:
    """Median steps/s of each side over interleaved repeats, and the ratio ours / SB3."""
    runs = {"ours": [], "sb3": []}
    for r in range(repeats):
        for side, fn in (("ours", ours_throughput), ("sb3", sb3_throughput)):
            wall, cpu = fn(env_id, steps, seed=r)
            runs[side].append({"wall_sps": steps / wall, "cpu_sps": steps / cpu})
            print(f"  {env_id} {side:<4} repeat {r}: {steps / wall:8.0f} steps/s wall, "
                  f"{steps / cpu:8.0f} per CPU-second", flush=True)
    out = {"steps": steps, "repeats": repeats, "runs": runs}
    for key in ("wall_sps", "cpu_sps"):
        ours = statistics.median(x[key] for x in runs["ours"])
        sb3 = statistics.median(x[key] for x in runs["sb3"])
        out[key] = {"ours": ours, "sb3": sb3, "ratio": ours / sb3}
    return out


# ------------------------------------------------------------------ steps to solve
def ours_to_solve(env_id: str, seed: int, max_steps: int, eval_every: int) -> dict:
    trainer = train_in_memory("a2c", our_config(env_id, max_steps),
                              RunOptions(seed=seed, device="cpu", eval_every=eval_every),
                              eval_options=EvalOptions(episodes=EVAL_EPISODES, deterministic=True),
                              stop_when=lambda step, results: results["eval/ep_return"] >= SOLVED)
    return {"solved": trainer.stopped_early, "steps": trainer.step, "wall_s": trainer.train_seconds,
            "last_eval": trainer.history[-1][1]["eval/ep_return"]}


def sb3_to_solve(env_id: str, seed: int, max_steps: int, eval_every: int) -> dict:
    from stable_baselines3.common.callbacks import BaseCallback

    class EvaluateAndStop(GreedyEvaluation, BaseCallback):
        """Same greedy evaluation as ours every ``eval_every`` steps; stops training once solved."""

        previous = 0

        def _on_step(self) -> bool:
            step = self.num_timesteps
            if step // eval_every > self.previous // eval_every:
                self.evaluate()
            self.previous = step
            return self.solved_at is None

    model, callback = sb3_model(env_id, seed), EvaluateAndStop(env_id, seed, SOLVED)
    with Clock() as clock:
        model.learn(max_steps, callback=callback)
    model.get_env().close()
    callback.evaluate_at_end()
    return {"solved": callback.solved_at is not None, "steps": callback.solved_at or model.num_timesteps,
            "wall_s": clock.wall - callback.eval_wall, "last_eval": callback.score}


def steps_to_solve(env_id: str, seeds: int, max_steps: int, eval_every: int) -> dict:
    out = {"ours": [], "sb3": []}
    for seed in range(seeds):
        for side, fn in (("ours", ours_to_solve), ("sb3", sb3_to_solve)):
            result = fn(env_id, seed, max_steps, eval_every)
            out[side].append(result)
            print(f"  {env_id} {side:<4} seed {seed}: {'solved' if result['solved'] else 'NOT solved'} at "
                  f"{result['steps']} steps, {result['wall_s']:.0f} s (last eval {result['last_eval']:.1f})", flush=True)
    for side in ("ours", "sb3"):
        runs = out[side]
        # unsolved runs count as max_steps (a lower bound), and are flagged
        out[side + "_median_steps"] = statistics.median(r["steps"] for r in runs)
        out[side + "_median_wall_s"] = statistics.median(r["wall_s"] for r in runs)
        out[side + "_solved"] = sum(r["solved"] for r in runs)
    return out


def report(result: dict) -> str:
    lines = ["| measurement | ours | SB3 | ours / SB3 |", "|---|---|---|---|"]
    for env_id, key in (("CartPole-v1", "cartpole_throughput"), ("ALE/Breakout-v5", "breakout_throughput")):
        t = result.get(key)
        if t:
            for kind, label in (("wall_sps", "steps/s (wall)"), ("cpu_sps", "steps per CPU-second")):
                lines.append(f"| {env_id} {label}, {t['steps']} steps, median of {t['repeats']} | "
                             f"{t[kind]['ours']:.0f} | {t[kind]['sb3']:.0f} | {t[kind]['ratio']:.2f} |")
    s = result.get("cartpole_solve")
    if s:
        n = len(s["ours"])
        lines.append(f"| CartPole-v1 steps to 475, median of {n} seeds (solved) | {s['ours_median_steps']:.0f} "
                     f"({s['ours_solved']}/{n}) | {s['sb3_median_steps']:.0f} ({s['sb3_solved']}/{n}) | "
                     f"{s['ours_median_steps'] / s['sb3_median_steps']:.2f} |")
        lines.append(f"| CartPole-v1 training wall-clock to 475, median (s) | {s['ours_median_wall_s']:.1f} | "
                     f"{s['sb3_median_wall_s']:.1f} | {s['ours_median_wall_s'] / s['sb3_median_wall_s']:.2f} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Options:
    """The lab's A2C against Stable-Baselines3's: throughput on CartPole and Breakout, steps to solve CartPole."""

    cartpole_steps: int = 20_000
    """CartPole steps per throughput run."""
    repeats: int = 3
    """Interleaved throughput repeats (the median is reported)."""
    seeds: int = 3
    """Seeds of the steps-to-475 runs."""
    max_steps: int = 200_000
    """Give up solving CartPole after this many steps."""
    eval_every: int = 10_000
    """Steps between the greedy evaluations that decide when CartPole is solved."""
    atari_steps: int = 2_000
    """Breakout steps per throughput run (the issue's full size is 100,000; 0 skips Atari)."""
    atari_repeats: int = 1
    """Breakout throughput repeats."""
    out: ResultsPath = None


def main(argv: list[str] | None = None) -> int:
    args = parse(Options, argv, "a2c")
    try:
        import stable_baselines3
    except ImportError:
        print("lab bench a2c compares against Stable-Baselines3, which is not installed: pip install stable-baselines3")
        return 1
    torch.set_num_threads(1)
    result = {"sb3_version": stable_baselines3.__version__, "torch_threads": torch.get_num_threads(),
              "device": "cpu", "args": {k: str(v) for k, v in vars(args).items()}}
    print("CartPole-v1 throughput", flush=True)
    result["cartpole_throughput"] = throughput("CartPole-v1", args.cartpole_steps, args.repeats)
    print("CartPole-v1 steps to 475", flush=True)
    result["cartpole_solve"] = steps_to_solve("CartPole-v1", args.seeds, args.max_steps, args.eval_every)
    if args.atari_steps:
        print(f"ALE/Breakout-v5 throughput ({args.atari_steps} steps, reduced for a CPU)", flush=True)
        result["breakout_throughput"] = throughput("ALE/Breakout-v5", args.atari_steps, args.atari_repeats)
    print(report(result))
    out = results_path(args.out, "a2c")
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
