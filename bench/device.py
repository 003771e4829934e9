"""Device acceptance: one command a person with a CUDA GPU runs (`lab bench device`, under 8 minutes).

1. The device tests on the GPU (tests/test_device.py): every algorithm trains a few steps in fp32, bf16
   and compiled; the replay buffer on the GPU. With two or more GPUs, a 2-process NCCL job of the toy.
2. DQN on Pong, environment steps per second (1,000 random steps, then learning), ours against
   Stable-Baselines3 when it is installed, on the same GPU.
3. DDPM on 16x16 digits, training images per second, ours against diffusers' UNet2DModel (the same
   network, built from our export's config) when diffusers is installed, on the same GPU.
4. A Pong DQN run (`lab train dqn --env-id ALE/Pong-v5`) for the minutes that remain, stopped by SIGTERM
   (which checkpoints), and its score curve.

It prints one table and writes JSON (default runs/device-check-<time>.json). Without CUDA it says so in
one line and runs what makes sense on the CPU: the device tests and the two throughputs, shortened.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def parse(argv):
    p = argparse.ArgumentParser(prog="lab bench device", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=8.0, help="the whole check's budget (default 8)")
    p.add_argument("--pong-steps", type=int, default=5_000, help="Pong steps timed per side after 1,000 random ones")
    p.add_argument("--ddpm-steps", type=int, default=200, help="DDPM optimizer steps timed per side (batch 64)")
    p.add_argument("--out", type=Path, default=None, help="JSON to write (default runs/device-check-<time>.json)")
    return p.parse_args(argv)


def run(command: list[str], env: dict | None = None, timeout: float | None = None) -> tuple[int, str, float]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, (result.stdout + result.stderr)[-3000:], time.perf_counter() - started


def device_tests(device: str) -> dict:
    code, output, seconds = run([sys.executable, "-m", "pytest", "-n", "0", "-m", "device",
                                 "tests/test_device.py"], env={"LAB_TEST_DEVICE": device})
    summary = next((line for line in reversed(output.splitlines()) if "passed" in line or "failed" in line), output)
    return {"ok": code == 0, "summary": summary.strip(), "seconds": seconds}


def nccl_check() -> dict:
    args = ["toy", "--device", "cuda", "--total-steps", "60", "--batch-size", "64", "--run-dir",
            str(ROOT / "runs" / f"device-nccl-{time.time_ns()}")]
    code, output, seconds = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 "2", "-m", "lab", "train", *args])
    return {"ok": code == 0, "seconds": seconds, "tail": output[-500:]}


def ours_pong(device: str, steps: int) -> float:
    from lab.runtime import RunOptions
    from lab.session import train_in_memory
    from rl.dqn.algo import Config
    config = Config(env_id="ALE/Pong-v5", total_steps=1_000 + steps, learning_starts=1_000, buffer_size=100_000)
    trainer = train_in_memory("dqn", config, RunOptions(device=device, seed=0, eval_every=10**9),
                              eval_options=None)
    return trainer.step / trainer.train_seconds


def sb3_pong(device: str, steps: int) -> float | None:
    try:
        import ale_py
        import gymnasium as gym
        from stable_baselines3 import DQN
        from stable_baselines3.common.atari_wrappers import AtariWrapper
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecFrameStack
    except ImportError:
        return None
    from rl.dqn.algo import Config
    gym.register_envs(ale_py)
    c = Config(env_id="ALE/Pong-v5", total_steps=1_000 + steps, learning_starts=1_000, buffer_size=100_000).resolved()
    env = VecFrameStack(make_vec_env(lambda: AtariWrapper(gym.make("ALE/Pong-v5", frameskip=1,
                                                                   repeat_action_probability=0.0)), n_envs=1, seed=0), 4)
    model = DQN("CnnPolicy", env, learning_rate=c.lr, buffer_size=c.buffer_size, learning_starts=c.learning_starts,
                batch_size=c.batch_size, gamma=c.gamma, train_freq=c.train_freq, gradient_steps=c.gradient_steps,
                target_update_interval=c.target_period, exploration_fraction=c.exploration_fraction,
                exploration_final_eps=c.epsilon_end, max_grad_norm=c.max_grad_norm, seed=0, device=device)
    started = time.perf_counter()
    model.learn(total_timesteps=c.total_steps)
    seconds = time.perf_counter() - started
    env.close()
    return c.total_steps / seconds


DDPM = dict(data="digits", width=32, channel_mults=(1, 2, 2), attention_resolutions=(8,), batch_size=64)


def ours_ddpm(device: str, steps: int) -> float:
    from generative.diffusion.algo import Config
    from lab.runtime import RunOptions
    from lab.session import train_in_memory
    trainer = train_in_memory("ddpm", Config(**DDPM, total_steps=steps, eval_samples=8),
                              RunOptions(device=device, seed=0, eval_every=10**9))
    return steps * DDPM["batch_size"] / trainer.train_seconds


def diffusers_ddpm(device: str, steps: int) -> float | None:
    try:
        from diffusers import DDPMScheduler, UNet2DModel
    except ImportError:
        return None
    from generative.data import load_images
    from generative.diffusion.algo import Config
    from generative.diffusion.export import unet_config
    config = Config(**DDPM).resolved()
    network = {k: v for k, v in unet_config(config, 1, [32 * 2]).items() if not k.startswith("_")}
    model, scheduler = UNet2DModel(**network).to(device), DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = (load_images("digits", size=16).images * 2 - 1).to(device)
    generator = torch.Generator(device).manual_seed(0)
    started = None
    for step in range(steps + 10):             # the peer's own training step, as in its train_unconditional.py
        if step == 10:
            torch.cuda.synchronize() if device == "cuda" else None
            started = time.perf_counter()
        x0 = images[torch.randint(len(images), (DDPM["batch_size"],), generator=generator, device=device)]
        noise = torch.randn(x0.shape, generator=generator, device=device)
        t = torch.randint(0, 1000, (len(x0),), generator=generator, device=device)
        loss = torch.nn.functional.mse_loss(model(scheduler.add_noise(x0, noise, t), t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize() if device == "cuda" else None
    return steps * DDPM["batch_size"] / (time.perf_counter() - started)


def pong_run(seconds: float) -> dict:
    """Train Pong for ``seconds``, stop it with SIGTERM (it checkpoints) and read its score curve."""
    folder = ROOT / "runs" / f"device-pong-{dt.datetime.now():%Y%m%d-%H%M%S}"
    process = subprocess.Popen([sys.executable, "-m", "lab", "train", "dqn", "--env-id", "ALE/Pong-v5", "--device",
                                "cuda", "--total-steps", "10000000", "--eval-every", "10000000", "--log-every", "5000",
                                "--run-dir", str(folder)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    from lab.logger import read_metrics
    rows = [r for r in read_metrics(folder / "metrics.jsonl") if "rollout/ep_return" in r]
    return {"run_dir": str(folder), "exit_code": process.returncode,
            "curve": [(r["step"], r["rollout/ep_return"]) for r in rows]}


def main(argv=None) -> int:
    args = parse(argv)
    deadline = time.monotonic() + 60 * args.minutes
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda:
        print("no CUDA GPU here: running the CPU checks that make sense (device tests, shortened throughputs).")
        args.pong_steps, args.ddpm_steps = min(args.pong_steps, 500), min(args.ddpm_steps, 20)
    result: dict = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                    "time": dt.datetime.now().isoformat(timespec="seconds")}
    print("device tests ...", flush=True)
    result["device_tests"] = device_tests(device)
    if cuda and torch.cuda.device_count() >= 2:
        print("2-process NCCL job ...", flush=True)
        result["nccl"] = nccl_check()
    print("DQN Pong steps/s ...", flush=True)
    result["pong_steps_per_s"] = {"ours": ours_pong(device, args.pong_steps), "sb3": sb3_pong(device, args.pong_steps)}
    print("DDPM training images/s ...", flush=True)
    result["ddpm_images_per_s"] = {"ours": ours_ddpm(device, args.ddpm_steps),
                                   "diffusers": diffusers_ddpm(device, args.ddpm_steps)}
    remaining = deadline - time.monotonic() - 30
    if cuda and remaining > 60:
        print(f"Pong DQN run for {remaining / 60:.1f} minutes ...", flush=True)
        result["pong_run"] = pong_run(remaining)
    print(report(result))
    out = args.out or ROOT / "runs" / f"device-check-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0 if result["device_tests"]["ok"] and result.get("nccl", {"ok": True})["ok"] else 1


def report(r: dict) -> str:
    def ratio(pair: dict, ours: str, theirs: str) -> str:
        return f"{pair[ours] / pair[theirs]:.2f}x" if pair.get(theirs) else "peer not installed"
    rows = [("device", r["device"]),
            ("device tests", f"{r['device_tests']['summary']} ({r['device_tests']['seconds']:.0f} s)"),
            ("NCCL 2-process job", "ok" if r["nccl"]["ok"] else "FAILED") if "nccl" in r else None,
            ("DQN Pong steps/s, ours / SB3", f"{r['pong_steps_per_s']['ours']:.0f} / "
             f"{r['pong_steps_per_s']['sb3'] or 0:.0f}: {ratio(r['pong_steps_per_s'], 'ours', 'sb3')}"),
            ("DDPM images/s, ours / diffusers", f"{r['ddpm_images_per_s']['ours']:.0f} / "
             f"{r['ddpm_images_per_s']['diffusers'] or 0:.0f}: {ratio(r['ddpm_images_per_s'], 'ours', 'diffusers')}"),
            ("Pong run: last score", f"{r['pong_run']['curve'][-1][1]:.1f} at step {r['pong_run']['curve'][-1][0]:,}"
             if r.get("pong_run", {}).get("curve") else "no finished episode") if "pong_run" in r else None]
    rows = [row for row in rows if row]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


if __name__ == "__main__":
    sys.exit(main())
