"""The shared trainer: exact resume, atomic checkpoints, signals, the NaN guard, safe loading, DDP."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lab import checkpoint, toy
from lab.errors import LabError
from lab.logger import read_metrics
from lab.runtime import RunOptions, Runtime
from lab.trainer import Trainer
from conftest import lab_subprocess_env

TOY = ["train", "toy", "--device", "cpu", "--deterministic"]


def algorithm_state(run: Path) -> dict:
    return checkpoint.load(run / "checkpoints" / "last.pt")["algorithm"]


def scalar_rows(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in read_metrics(run / "metrics.jsonl")]


def assert_same_state(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    else:
        assert a == b


def test_resume_is_bit_exact(tmp_path, lab):
    cadence = ["--log-every", "10", "--eval-every", "50", "--checkpoint-every", "50"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert lab(*TOY, "--total-steps", 200, *cadence, "--run-dir", straight).returncode == 0
    assert lab(*TOY, "--total-steps", 100, *cadence, "--run-dir", split).returncode == 0
    resumed = lab("resume", split, "--total-steps", 200)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_state(algorithm_state(straight), algorithm_state(split))
    assert scalar_rows(straight) == scalar_rows(split)
    saved = json.loads((split / "config.json").read_text())
    assert saved["config"]["total_steps"] == 200 and saved["resumed"][0]["from_step"] == 100


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path):
    run = tmp_path / "run"
    env = lab_subprocess_env()
    cmd = [sys.executable, "-m", "lab", *TOY, "--dim", 2_000_000, "--batch-size", 4, "--total-steps", 100_000,
           "--checkpoint-every", 1, "--log-every", 1000, "--eval-every", 100_000, "--run-dir", run]
    proc = subprocess.Popen(list(map(str, cmd)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder, killed = run / "checkpoints", False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (folder / "last.pt").exists() and folder.is_dir() and any(
                    n.startswith(".last.pt.tmp-") for n in os.listdir(folder)):
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
    finally:
        proc.kill()
        proc.wait()
    assert killed, "never caught the process while it wrote a checkpoint"
    state = checkpoint.load(folder / "last.pt")
    assert state["step"] >= 1 and state["algorithm"]["model"]["weight"].shape == (1, 2_000_000)


def test_sigterm_writes_a_checkpoint_and_the_run_resumes(tmp_path, lab):
    run = tmp_path / "run"
    env = lab_subprocess_env()
    cmd = [sys.executable, "-m", "lab", *TOY, "--total-steps", 10_000_000, "--log-every", 1000,
           "--checkpoint-every", 10_000_000, "--eval-every", 10_000_000, "--run-dir", run]
    proc = subprocess.Popen(list(map(str, cmd)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped" and "lab resume" in status["message"]
    stopped_at = checkpoint.load(run / "checkpoints" / "last.pt")["step"]
    assert stopped_at == status["step"] > 0
    resumed = lab("resume", run, "--total-steps", stopped_at + 20)
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint.load(run / "checkpoints" / "last.pt")["step"] == stopped_at + 20


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, lab):
    run = tmp_path / "run"
    result = lab(*TOY, "--lr", 20, "--total-steps", 2000, "--checkpoint-every", 2, "--log-every", 2, "--run-dir", run)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("lab: error: train/loss became") and "at step" in message
    assert "Traceback" not in result.stderr
    state = checkpoint.load(run / "checkpoints" / "last.pt")
    assert all(torch.isfinite(t).all() for t in state["algorithm"]["model"].values())
    assert json.loads((run / "status.json").read_text())["state"] == "failed"


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, lab):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.FORMAT, "payload": _RunsCode(marker)}, path)
    with pytest.raises(LabError, match="arbitrary code"):
        checkpoint.load(path)
    assert not marker.exists()

    run = tmp_path / "run"
    assert lab(*TOY, "--total-steps", 20, "--run-dir", run).returncode == 0
    (run / "checkpoints" / "best.pt").unlink()
    os.replace(path, run / "checkpoints" / "last.pt")
    result = lab("eval", run)
    assert result.returncode == 2 and "arbitrary code" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


def test_torchrun_two_processes_match_one(tmp_path, lab):
    args = ["toy", "--device", "cpu", "--deterministic", "--total-steps", 60, "--batch-size", 64,
            "--log-every", 20, "--eval-every", 60, "--checkpoint-every", 60]
    single = tmp_path / "single"
    assert lab("train", *args, "--run-dir", single).returncode == 0
    double = tmp_path / "double"
    env = lab_subprocess_env()
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "lab", "train", *map(str, args), "--run-dir", str(double)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = algorithm_state(single)["model"], algorithm_state(double)["model"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key
    assert len(checkpoint.load(double / "checkpoints" / "last.pt")["runtime"]["rng"]) == 2


def test_plot_draws_mean_and_std_over_seeds(tmp_path, lab):
    runs = []
    for seed in (0, 1):
        run = tmp_path / f"s{seed}"
        assert lab(*TOY, "--total-steps", 40, "--seed", seed, "--run-dir", run).returncode == 0
        runs.append(run)
    out = tmp_path / "curves.png"
    result = lab("plot", *runs, "--metric", "train/loss", "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 1000


class SlowToEvaluate(toy.Algorithm):
    def evaluate(self, options=None, *, during_training: bool = False) -> dict:
        time.sleep(0.5)   # far longer than the 100 training steps
        return super().evaluate(options, during_training=during_training)


@pytest.mark.parametrize("eval_every, evaluated_steps", [(0, [10, 100]), (10, list(range(10, 101, 10)))])
def test_automatic_cadence_skips_evaluations_that_would_dominate_the_run(eval_every, evaluated_steps):
    config, options = toy.Config(total_steps=100), RunOptions(device="cpu", eval_every=eval_every)
    runtime = Runtime(options)
    trainer = Trainer("toy", config, options, runtime, SlowToEvaluate(config, runtime))
    assert trainer.fit() == 0
    assert [step for step, _ in trainer.history] == evaluated_steps


def test_runtime_gradient_clipping_matches_torch_bit_for_bit():
    from lab.runtime import clip_grad_norm
    torch.manual_seed(0)
    ours = [torch.randn(5, 3, requires_grad=True), torch.randn(7, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    for params in (ours, theirs):
        sum((p ** 3).sum() for p in params).backward()
    assert torch.equal(clip_grad_norm([p.grad for p in ours], 0.5), torch.nn.utils.clip_grad_norm_(theirs, 0.5))
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(ours, theirs))


def test_training_in_pieces_matches_one_fit_and_evaluates_only_on_its_cadence():
    from lab.session import in_memory_trainer, train_in_memory
    config, options = toy.Config(total_steps=100), RunOptions(device="cpu", eval_every=40, deterministic=True)
    straight = train_in_memory("toy", config, options)
    with in_memory_trainer("toy", config, options) as pieces:
        assert pieces.fit(until=30) == 0 and pieces.step == 30 and pieces.history == []   # a pause: no evaluation
        seconds = pieces.train_seconds
        pieces.fit(until=70)
        assert pieces.step == 70 and [step for step, _ in pieces.history] == [40]
        assert pieces.train_seconds > seconds
        pieces.fit()
    assert pieces.step == 100 and [step for step, _ in pieces.history] == [40, 80, 100]
    assert pieces.history == straight.history
    assert_same_state(pieces.algorithm.state_dict(), straight.algorithm.state_dict())


class BusyToEvaluate(toy.Algorithm):
    def evaluate(self, options=None, *, during_training: bool = False) -> dict:
        until = time.process_time() + 0.3   # CPU work, far more than 20 training steps
        while time.process_time() < until:
            pass
        return super().evaluate(options)


def test_training_cpu_seconds_leave_evaluation_out():
    config, options = toy.Config(total_steps=20), RunOptions(device="cpu", eval_every=10)
    runtime = Runtime(options)
    trainer = Trainer("toy", config, options, runtime, BusyToEvaluate(config, runtime))
    assert trainer.fit() == 0
    assert trainer.eval_cpu_seconds >= 0.6
    assert 0 < trainer.train_cpu_seconds < 0.3
    assert trainer.state(trainer.step)["trainer"]["cpu_elapsed"] == trainer.cpu_elapsed   # kept for a resume
