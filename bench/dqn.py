"""Our DQN against Stable-Baselines3's DQN, side by side in one process, same hyperparameters.

    lab bench dqn                         defaults sized for a shared 2-core CPU (~8 minutes)
    lab bench dqn --pong-steps 50000      the full Pong measurement (50k steps after learning starts)
    lab bench dqn --seeds 5 --device cuda

1. CartPole-v1 with our classic-control defaults (SB3 gets the same numbers: learning rate, buffer,
   batch, train frequency, gradient steps, target period, epsilon schedule, net, Huber loss, gradient
   clipping): environment steps per second, and the training time and steps until a greedy evaluation
   (20 episodes, the same evaluation code for both, its time not counted) first reaches 475, checked
   every 2,500 steps from 10,000 on, for at most 50,000 steps. Seeds alternate ours / SB3.
2. Pong (ALE/Pong-v5, no sticky actions) with the Atari defaults except a small buffer and
   ``--pong-learning-starts`` random steps (the timing starts when learning starts): end-to-end steps
   per second (acting + learning) over ``--pong-steps`` steps. The default is 1,000 steps on this CPU,
   where one Nature-CNN gradient step takes tens of milliseconds; ``--pong-steps 50000`` is the full size.
3. Replay memory for 1,000,000 Atari transitions: bytes per transition of our frame-deduplicated
   buffer against SB3's buffers (measured on allocated arrays and scaled) and a naive one.

Speeds are reported from wall-clock time and from process CPU time (both are single-threaded here:
the CPU-time ratio is the fairer one on a machine shared with other jobs). Ours is trained by the lab's
trainer (``lab.session``): its clocks (``train_seconds``, ``train_cpu_seconds``) leave evaluations out and
include its own work per step (metric windows, a log line every 1/100 of the run), which the loop this
benchmark had before did not do. On CartPole it evaluates every 2,500 steps from the start (the
evaluations before 10,000 are played, untimed, but do not count); on Pong it pauses when learning
starts (``fit(until=...)``) and is timed from there, and ends with one untimed evaluation episode.
Writes runs/bench/dqn-<time>.json, or --out (bench/results/dqn.json holds the committed one).
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from lab.benchmark import ResultsPath, parse, results_path
from lab.runtime import RunOptions, derive_seed
from lab.session import in_memory_trainer, train_in_memory
from rl.dqn.algo import Config, EvalOptions
from rl.replay import ReplayBuffer
from rl.evaluation import run_episodes

SOLVED = 475.0


@dataclass(frozen=True)
class Options:
    """The lab's DQN against Stable-Baselines3's: CartPole returns and speed, Pong speed, replay memory."""

    seeds: int = 3
    """CartPole seeds per implementation."""
    cartpole_steps: int = 50_000
    """CartPole step budget."""
    pong_steps: int = 1_000
    """Pong steps timed after learning starts (1,000 suits a CPU; the full size is 50,000)."""
    pong_learning_starts: int = 1_000
    """Random Pong steps before learning starts."""
    pong_buffer: int = 10_000
    """Pong replay capacity."""
    skip_pong: bool = False
    """Only CartPole and the memory measurement."""
    device: str = "cpu"
    """Torch device of both implementations."""
    out: ResultsPath = None


class Clock:
    """Wall and CPU time of SB3's timed sections only (evaluations are excluded)."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self._start = None

    def start(self):
        self._start = (time.perf_counter(), time.process_time())

    def stop(self):
        wall, cpu = self._start
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu


def greedy_return(policy, seed: int) -> float:
    return float(run_episodes(policy, "CartPole-v1", 20, seed=derive_seed(seed, "eval")).mean())


# ---------------------------------------------------------------------------- CartPole
def ours_cartpole(seed: int, budget: int, device: str) -> dict:
    """Our DQN in the trainer, greedy evaluation every 2,500 steps, stopped at the first >= 475 from 10,000 on."""
    trainer = train_in_memory("dqn", Config(env_id="CartPole-v1", total_steps=budget),
                              RunOptions(device=device, seed=seed, eval_every=2_500),
                              eval_options=EvalOptions(episodes=20, epsilon=0.0),
                              stop_when=lambda step, results: step >= 10_000 and results["eval/ep_return"] >= SOLVED)
    return {"steps": trainer.step, "wall_s": trainer.train_seconds, "cpu_s": trainer.train_cpu_seconds,
            "solved_at": trainer.step if trainer.stopped_early else None}


def sb3_cartpole(seed: int, budget: int, device: str) -> dict:
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    c = Config(env_id="CartPole-v1", total_steps=budget).resolved()
    clock, result = Clock(), {"solved_at": None}

    class Checkpoints(BaseCallback):
        def _on_step(self) -> bool:
            n = self.num_timesteps
            if n >= 10_000 and n % 2_500 == 0:
                clock.stop()
                score = greedy_return(lambda obs: self.model.predict(obs, deterministic=True)[0], seed)
                if score >= SOLVED:
                    result["solved_at"] = n
                    return False
                clock.start()
            return True

    model = DQN("MlpPolicy", gym.make("CartPole-v1"), learning_rate=c.lr, buffer_size=c.buffer_size,
                learning_starts=c.learning_starts, batch_size=c.batch_size, tau=c.tau, gamma=c.gamma,
                train_freq=c.train_freq, gradient_steps=c.gradient_steps, target_update_interval=c.target_period,
                exploration_fraction=c.exploration_fraction, exploration_initial_eps=c.epsilon_start,
                exploration_final_eps=c.epsilon_end, max_grad_norm=c.max_grad_norm,
                policy_kwargs={"net_arch": list(c.hidden)}, seed=seed, device=device, verbose=0)
    clock.start()
    model.learn(total_timesteps=budget, callback=Checkpoints())
    if result["solved_at"] is None:
        clock.stop()
    model.env.close()
    return {"steps": int(model.num_timesteps), "wall_s": clock.wall, "cpu_s": clock.cpu, **result}


# ---------------------------------------------------------------------------- Pong
def pong_config(args) -> Config:
    return Config(env_id="ALE/Pong-v5", total_steps=args.pong_learning_starts + args.pong_steps,
                  buffer_size=args.pong_buffer, learning_starts=args.pong_learning_starts, buffer_device="cpu")


def ours_pong(args) -> dict:
    """Our DQN in the trainer, paused when learning starts: only the steps after it are timed."""
    config = pong_config(args)
    options = RunOptions(device=args.device, seed=0, eval_every=config.total_steps)
    with in_memory_trainer("dqn", config, options, eval_options=EvalOptions(episodes=1)) as trainer:
        trainer.fit(until=config.learning_starts)
        wall, cpu = trainer.train_seconds, trainer.train_cpu_seconds
        trainer.fit()
    return {"steps": args.pong_steps, "wall_s": trainer.train_seconds - wall, "cpu_s": trainer.train_cpu_seconds - cpu}


def sb3_pong(args) -> dict:
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import DQN
    from stable_baselines3.common.atari_wrappers import AtariWrapper
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    c = pong_config(args).resolved()
    clock = Clock()

    class StartAtLearning(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps == c.learning_starts:
                clock.start()
            return True

    env = make_vec_env(lambda: AtariWrapper(gym.make("ALE/Pong-v5", frameskip=1, repeat_action_probability=0.0)),
                       n_envs=1, seed=0)
    env = VecFrameStack(env, 4)
    model = DQN("CnnPolicy", env, learning_rate=c.lr, buffer_size=c.buffer_size, learning_starts=c.learning_starts,
                batch_size=c.batch_size, tau=c.tau, gamma=c.gamma, train_freq=c.train_freq,
                gradient_steps=c.gradient_steps, target_update_interval=c.target_period,
                exploration_fraction=c.exploration_fraction, exploration_final_eps=c.epsilon_end,
                max_grad_norm=c.max_grad_norm, seed=0, device=args.device, verbose=0)
    model.learn(total_timesteps=c.total_steps, callback=StartAtLearning())
    clock.stop()
    env.close()
    return {"steps": args.pong_steps, "wall_s": clock.wall, "cpu_s": clock.cpu}


# ---------------------------------------------------------------------------- memory
def replay_bytes() -> dict:
    ours = ReplayBuffer.nbytes_for(1_000_000, 1, (84, 84), torch.uint8) / 1_000_000
    frame, naive = 84 * 84, 2 * 4 * 84 * 84 + 4 + 4 + 1   # obs + next_obs stacks, action, reward, done
    out = {"ours": ours, "naive": naive}
    try:
        import gymnasium as gym
        from stable_baselines3.common.buffers import ReplayBuffer as SB3Buffer
        space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
        for name, optimize in (("sb3", False), ("sb3_optimize_memory_usage", True)):
            buffer = SB3Buffer(1_000, space, gym.spaces.Discrete(6), device="cpu", optimize_memory_usage=optimize,
                                handle_timeout_termination=not optimize)
            arrays = [buffer.observations, buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts]
            arrays = [a for a in arrays if a is not None]
            if getattr(buffer, "next_observations", None) is not None:
                arrays.append(buffer.next_observations)
            out[name] = sum(a.nbytes for a in arrays) / 1_000
    except ImportError:
        pass
    out["frame"] = frame
    return out


# ---------------------------------------------------------------------------- report
def rate(rows: list[dict], key: str) -> float:
    return statistics.median(r["steps"] / r[key] for r in rows)


def main(argv=None) -> int:
    args = parse(Options, argv, "dqn")
    torch.set_num_threads(1)
    try:
        import stable_baselines3
    except ImportError:
        print("stable-baselines3 is not installed; the peer of this benchmark is missing. "
              "Install it with: pip install stable-baselines3 (and opencv-python-headless for Pong).")
        return 1
    print(f"DQN vs Stable-Baselines3 {stable_baselines3.__version__} on {platform.processor() or platform.machine()}, "
          f"device {args.device}, torch threads 1")
    results: dict = {"device": args.device, "sb3_version": stable_baselines3.__version__, "cartpole": {}, "pong": {}}

    ours, theirs = [], []
    for seed in range(args.seeds):
        ours.append(ours_cartpole(seed, args.cartpole_steps, args.device))
        print(f"  CartPole seed {seed}  ours {ours[-1]}", flush=True)
        theirs.append(sb3_cartpole(seed, args.cartpole_steps, args.device))
        print(f"  CartPole seed {seed}  SB3  {theirs[-1]}", flush=True)
    results["cartpole"] = {"ours": ours, "sb3": theirs}

    if not args.skip_pong:
        try:
            import cv2  # noqa: F401  (SB3's Atari wrappers resize with OpenCV)
            pong_sb3 = sb3_pong(args)
        except ImportError:
            pong_sb3 = None
            print("  SB3 Pong skipped: SB3's AtariWrapper needs opencv-python-headless.")
        pong_ours = ours_pong(args)
        results["pong"] = {"ours": pong_ours, "sb3": pong_sb3, "steps_after_learning_starts": args.pong_steps}
        print(f"  Pong ours {pong_ours}\n  Pong SB3  {pong_sb3}", flush=True)

    memory = replay_bytes()
    results["replay_bytes_per_transition"] = memory

    def solved(rows):
        hits = [r for r in rows if r["solved_at"] is not None]
        if not hits:
            return f"never (0/{len(rows)})"
        return (f"{statistics.median(r['wall_s'] for r in hits):.0f} s wall, "
                f"{statistics.median(r['solved_at'] for r in hits):,.0f} steps ({len(hits)}/{len(rows)} seeds)")

    print("\n| measurement | ours | SB3 | ours / SB3 |\n|---|---|---|---|")
    for key, label in (("wall_s", "wall"), ("cpu_s", "CPU time")):
        a, b = rate(ours, key), rate(theirs, key)
        print(f"| CartPole steps/s ({label}, median of {args.seeds} seeds) | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |")
    print(f"| CartPole time to greedy 475 (median over solved seeds) | {solved(ours)} | {solved(theirs)} | |")
    if results["pong"] and results["pong"]["sb3"]:
        for key, label in (("wall_s", "wall"), ("cpu_s", "CPU time")):
            a = results["pong"]["ours"]["steps"] / results["pong"]["ours"][key]
            b = results["pong"]["sb3"]["steps"] / results["pong"]["sb3"][key]
            print(f"| Pong steps/s after learning starts ({label}, {args.pong_steps:,} steps) | {a:,.1f} | {b:,.1f} "
                  f"| {a / b:.2f}x |")
    sb3_bytes = memory.get("sb3")
    print(f"| Replay bytes per Atari transition | {memory['ours']:,.0f} | "
          f"{sb3_bytes:,.0f} (optimize_memory_usage: {memory.get('sb3_optimize_memory_usage', 0):,.0f}) | "
          f"naive {memory['naive']:,} |" if sb3_bytes else
          f"| Replay bytes per Atari transition | {memory['ours']:,.0f} | n/a | naive {memory['naive']:,} |")
    print(f"| 1M Atari transitions | {memory['ours'] * 1e6 / 1e9:.2f} GB | "
          f"{(sb3_bytes or memory['naive']) * 1e6 / 1e9:.2f} GB | |")
    out = results_path(args.out, "dqn")
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {out}")
    return 0
