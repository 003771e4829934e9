"""Faults and hostile input, written as the attack or the fault: corrupt and malicious files, kills
mid-write, two writers on one run folder, a full disk, diverging weights and absurd sizes. Each must end
in one `lab: error:` sentence (exit 2) with nothing already on disk changed, or be survived whole."""
from __future__ import annotations

import gzip
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import lab_subprocess_env
from generative import data
from lab import checkpoint
from lab.errors import LabError
from lab.logger import read_metrics

TOY = ["train", "toy", "--device", "cpu", "--deterministic"]


def assert_one_line_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    err = result.stderr.strip().splitlines()[-1]          # progress lines may come before it
    assert err.startswith("lab: error:") and result.stderr.count("lab: error:") == 1, result.stderr[-2000:]
    for word in words:
        assert word in err, err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes under a run folder (the lock file aside: it holds the last locker's PID)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != ".lock"}


@pytest.fixture
def toy_run(tmp_path, lab):
    run = tmp_path / "run"
    result = lab(*TOY, "--total-steps", 40, "--log-every", 5, "--eval-every", 20, "--checkpoint-every", 20,
                 "--run-dir", run)
    assert result.returncode == 0, result.stderr
    return run


def lab_process(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lab", *map(str, args)], env=lab_subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def rewrite_checkpoint(path: Path, change) -> None:
    """Load, change and rewrite a checkpoint with a valid checksum (as a crafted file would have)."""
    state = checkpoint.load(path)
    change(state)
    state["checksum"] = checkpoint.checksum(state)
    torch.save(state, path)


# ------------------------------------------------------------------ corrupt checkpoints
def _flip_bytes(seed):
    def corrupt(path: Path) -> None:
        raw = bytearray(path.read_bytes())
        rng = random.Random(seed)
        for i in rng.sample(range(len(raw) // 4, len(raw) - 1024), 64):   # inside the payload, past the header
            raw[i] ^= 0xFF
        path.write_bytes(bytes(raw))
    return corrupt


CORRUPTIONS = {
    "random bytes": lambda p: p.write_bytes(os.urandom(5000)),
    "a text file": lambda p: p.write_text("not a checkpoint\n" * 20),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "a symlink to config.json": lambda p: (p.unlink(), p.symlink_to(p.parent.parent / "config.json")),
    **{f"64 flipped bytes (seed {s})": _flip_bytes(s) for s in range(4)},
    "no trainer state": lambda p: rewrite_checkpoint(p, lambda s: s.pop("trainer")),
    "a string step": lambda p: rewrite_checkpoint(p, lambda s: s.update(step="forty")),
    "a negative step": lambda p: rewrite_checkpoint(p, lambda s: s.update(step=-5)),
    "wrong weight shapes": lambda p: rewrite_checkpoint(
        p, lambda s: s["algorithm"]["model"].update(weight=torch.zeros(3, 3))),
    "no algorithm state": lambda p: rewrite_checkpoint(p, lambda s: s.update(algorithm=None)),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_checkpoint_is_one_sentence_and_changes_nothing(toy_run, lab, corruption):
    last = toy_run / "checkpoints" / "last.pt"
    CORRUPTIONS[corruption](last)
    before = snapshot(toy_run)
    for args in (["eval", toy_run, "--checkpoint", "last"], ["resume", toy_run, "--total-steps", 60]):
        assert_one_line_error(lab(*args), "last.pt")
        assert snapshot(toy_run) == before


def test_flipped_bytes_anywhere_in_the_tensors_are_detected(toy_run):
    last = toy_run / "checkpoints" / "last.pt"
    original = last.read_bytes()
    for seed in range(20):
        last.write_bytes(original)
        _flip_bytes(100 + seed)(last)
        with pytest.raises(LabError, match="corrupt|not a lab checkpoint"):
            checkpoint.load(last)


def test_a_checkpoint_with_nan_weights_is_neither_evaluated_nor_sampled(toy_run, lab):
    rewrite_checkpoint(toy_run / "checkpoints" / "last.pt",
                       lambda s: s["algorithm"]["model"]["weight"].fill_(float("nan")))
    before = snapshot(toy_run)
    assert_one_line_error(lab("eval", toy_run, "--checkpoint", "last"), "NaN or infinite")
    assert snapshot(toy_run) == before


# ------------------------------------------------------------------ corrupt config.json and metrics.jsonl
@pytest.mark.parametrize("content", [b"[]", b"null", b"\x00\xff\xfe binary", b'{"algo": 5, "config": {}}',
                                     b'{"algo": "toy", "config": {"lr": "fast"}}',
                                     b'{"algo": "toy", "config": {"total_steps": 40}, "options": [1]}',
                                     b'{"algo": "toy", "config": {"total_steps": 40, "dimension": 3}}'])
def test_a_corrupt_config_json_is_one_sentence_and_changes_nothing(toy_run, lab, content):
    (toy_run / "config.json").write_bytes(content)
    before = snapshot(toy_run)
    for args in (["eval", toy_run], ["resume", toy_run, "--total-steps", 60]):
        assert_one_line_error(lab(*args), "config.json")
        assert snapshot(toy_run) == before


@pytest.mark.parametrize("bad_line", ['[1, 2]', '{"train/loss": 1.0}', '{"step": "7"}', 'not json'])
def test_a_corrupt_metrics_line_is_one_sentence_and_changes_nothing(toy_run, lab, bad_line):
    lines = (toy_run / "metrics.jsonl").read_text().splitlines()
    lines.insert(2, bad_line)
    (toy_run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    before = snapshot(toy_run)
    assert_one_line_error(lab("resume", toy_run, "--total-steps", 60), "metrics.jsonl", "line 3")
    assert snapshot(toy_run) == before


def test_a_torn_last_metrics_line_is_dropped_not_glued_to_the_next_row(toy_run, lab):
    with open(toy_run / "metrics.jsonl", "a") as f:
        f.write('{"step": 45, "train/lo')          # a kill or a full disk mid-write
    assert lab("resume", toy_run, "--total-steps", 60).returncode == 0
    text = (toy_run / "metrics.jsonl").read_text()
    assert "train/lo\"" not in text and '"train/lo{' not in text
    rows = read_metrics(toy_run / "metrics.jsonl")
    assert [json.loads(line) for line in text.splitlines()] == rows and rows[-1]["step"] == 60


# ------------------------------------------------------------------ kills during the metrics rewrite
def test_kills_during_the_resume_rewrite_never_lose_the_metrics_log(toy_run, lab):
    """Rows logged after the checkpoint (step 40) are dropped by `lab resume` through a rewrite. SIGKILL
    resumes at random moments: the log is always the whole old one or the whole new one, never cut."""
    log = toy_run / "metrics.jsonl"
    kept = read_metrics(log)
    padding = "x" * 150
    with open(log, "a") as f:                      # ~20 MB of rows the resume must drop
        f.writelines(json.dumps({"step": 41 + i, "fake": 1, "note": padding}) + "\n" for i in range(100_000))
    full = log.read_bytes()
    rng = random.Random(0)
    for attempt in range(6):
        log.write_bytes(full)
        proc = lab_process("resume", toy_run, "--total-steps", 10_000_000, "--checkpoint-every", 10_000_000)
        time.sleep(rng.uniform(0.5, 3.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        rows = read_metrics(log)
        assert rows[:len(kept)] == kept, f"attempt {attempt}: rows before the checkpoint changed"
        assert sum("fake" in r for r in rows) in (0, 100_000), f"attempt {attempt}: a partial rewrite"
    result = lab("resume", toy_run, "--total-steps", 60)
    assert result.returncode == 0, result.stderr
    rows = read_metrics(log)
    assert rows[:len(kept)] == kept and not any("fake" in r for r in rows) and rows[-1]["step"] == 60


# ------------------------------------------------------------------ one writer per run folder
def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_stale_lock(tmp_path, lab):
    run = tmp_path / "run"
    trainer = lab_process(*TOY, "--total-steps", 10_000_000, "--log-every", 1000, "--checkpoint-every", 10_000_000,
                          "--eval-every", 10_000_000, "--run-dir", run)
    try:
        _wait_for(run / "metrics.jsonl", trainer)
        assert_one_line_error(lab("resume", run, "--total-steps", 20_000_000), "in use by process", str(trainer.pid))
        assert_one_line_error(lab(*TOY, "--run-dir", run), "in use by process", str(trainer.pid))
        (run / ".lock").unlink()           # the lock is on the folder itself: deleting the PID file frees nothing
        assert_one_line_error(lab("resume", run, "--total-steps", 20_000_000), "in use by process")
        from lab.rundir import RunDir
        assert RunDir(run).status()["state"] == "running"
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.communicate()
    from lab.rundir import RunDir
    status = RunDir(run).status()
    assert status["state"] == "dead" and "lab resume" in status["message"]
    from lab.rundir import describe_runs
    assert describe_runs(tmp_path) == [(str(run), "toy", f"step {status['step']}", "dead")]
    # killed before its first checkpoint: resume starts the run over instead of pointing elsewhere
    result = lab("resume", run, "--total-steps", 30)
    assert result.returncode == 0, result.stderr
    assert "starting it over" in result.stdout
    assert checkpoint.load(run / "checkpoints" / "last.pt")["step"] == 30
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_lab_eval_records_nothing_while_another_process_writes_but_prints_its_results(toy_run, lab):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from lab.rundir import RunDir; "
                               f"RunDir({str(toy_run)!r}).lock(); print('locked', flush=True); time.sleep(60)"],
                              env=lab_subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(toy_run)
        result = lab("eval", toy_run)
        assert "eval/mse" in result.stdout
        assert_one_line_error(result, "not recorded", str(holder.pid))
        assert snapshot(toy_run) == before
    finally:
        holder.kill()
        holder.communicate()


# ------------------------------------------------------------------ a full disk (a file-size limit)
def _limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_during_training_is_one_sentence_and_the_previous_checkpoint_survives(toy_run):
    before = (toy_run / "checkpoints" / "last.pt").read_bytes()
    # the checkpoint of a 200k-feature model (weights + momentum: ~1.6 MB) cannot be written under 1 MB
    run = toy_run.parent / "big"
    result = subprocess.run([sys.executable, "-m", "lab", *TOY, "--dim", "200000", "--total-steps", "20",
                             "--run-dir", str(run)], env=lab_subprocess_env(), capture_output=True, text=True,
                            preexec_fn=_limit_file_size(1_000_000), timeout=120)
    assert_one_line_error(result, "cannot write the checkpoint", "the previous one is intact")
    assert not (run / "checkpoints" / "last.pt").exists()
    assert not any(p.name.startswith(".") for p in (run / "checkpoints").iterdir())
    # an existing run's metrics log already past the limit: lab eval shows its numbers, then the error
    result = subprocess.run([sys.executable, "-m", "lab", "eval", str(toy_run)], env=lab_subprocess_env(),
                            capture_output=True, text=True, preexec_fn=_limit_file_size(100), timeout=120)
    assert "eval/mse" in result.stdout
    assert_one_line_error(result, "not recorded", "metrics.jsonl")
    assert (toy_run / "checkpoints" / "last.pt").read_bytes() == before


# ------------------------------------------------------------------ diverging weights
@pytest.mark.parametrize("args", [
    [*TOY, "--lr", "1e38", "--checkpoint-every", "1", "--log-every", "1000", "--total-steps", "50"],
    ["train", "gan", "--data", "ring8", "--device", "cpu", "--lr", "1e8", "--loss", "wgan-gp", "--n-critic", "1",
     "--checkpoint-every", "1", "--total-steps", "20", "--eval-every", "1000"],
])
def test_weights_that_diverge_are_never_saved_as_a_good_checkpoint(tmp_path, lab, args):
    run = tmp_path / "run"
    result = lab(*args, "--run-dir", run)
    assert_one_line_error(result)
    for saved in (run / "checkpoints").glob("*.pt"):
        assert checkpoint.first_non_finite(checkpoint.load(saved)["algorithm"]) is None
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    if (run / "checkpoints" / "last.pt").exists():
        assert f"last good checkpoint (step {checkpoint.load(run / 'checkpoints' / 'last.pt')['step']})" in result.stderr


# ------------------------------------------------------------------ data files
def _idx(dims: tuple[int, ...], payload: bytes | None = None) -> bytes:
    header = bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + (payload if payload is not None else bytes(int(torch.tensor(dims).prod())))


@pytest.mark.parametrize("name, content, words", [
    ("images.gz", b"plain bytes, not gzip", "not valid gzip"),
    ("images.gz", gzip.compress(_idx((10, 28, 28)), mtime=0)[:-40], "not valid gzip"),
    ("images", _idx((10, 28, 28))[:-7], "holds 7,833"),
    ("images", b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00", "magic"),
    ("images", _idx((10, 28, 28)) + b"extra", "more"),
    ("images.gz", gzip.compress(_idx((60000, 60000, 60000), b""), mtime=0), "implausible"),
])
def test_a_bad_idx_file_is_one_sentence(tmp_path, name, content, words):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(LabError, match=words):
        data.read_idx(tmp_path / name)


def _mnist_folder(root: Path, side: int = 28, label: int = 3) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for split, (images, labels) in data.IDX_FILES.items():
        (folder / images).write_bytes(_idx((4, side, side)))
        (folder / labels).write_bytes(_idx((4,), bytes([0, 1, 2, label])))
    return root


@pytest.mark.parametrize("side, label, words", [(20, 3, "20x20"), (28, 200, "label 200")])
def test_wrong_mnist_files_are_refused_before_a_run_folder_exists(tmp_path, lab, side, label, words):
    root = _mnist_folder(tmp_path / "data", side, label)
    result = lab("train", "vae", "--data", "mnist", "--data-dir", root, "--device", "cpu", "--run-dir", tmp_path / "run")
    assert_one_line_error(result, words)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ sizes checked before allocating
@pytest.mark.parametrize("args, words", [
    (["train", "gan", "--data", "ring8", "--batch-size", "100000000000"], "--batch-size"),
    (["train", "ddpm", "--data", "ring8", "--batch-size", "100000000000"], "--batch-size"),
    (["train", "ddpm", "--data", "ring8", "--image-size", "16"], "--image-size"),
    (["solve", "--size", "100000"], "--size"),
    (["solve", "--env", "random", "--states", "1000000"], "--states"),
    (["solve", "--map", "binary.map"], "not a text file"),
])
def test_absurd_sizes_and_flags_that_do_not_apply_are_one_sentence(tmp_path, lab, args, words):
    (tmp_path / "binary.map").write_bytes(bytes(range(256)) * 8)
    started = time.monotonic()
    assert_one_line_error(lab(*args, cwd=tmp_path), words)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "runs").exists()


def test_sampling_more_than_memory_holds_is_refused_before_sampling(tmp_path, lab):
    run = tmp_path / "run"
    assert lab("train", "ddpm", "--data", "digits", "--total-steps", 2, "--device", "cpu", "--eval-samples", 4,
               "--run-dir", run).returncode == 0
    before = snapshot(run)
    assert_one_line_error(lab("sample", run, "--n", 100_000_000_000), "--n")
    assert snapshot(run) == before
