"""Hostile run folders, third pass: planted links, special files, deep or huge files and declared sizes.
A run folder from a shared drive or an archive must never make `lab` write outside it, and no file in it
may hang a command, exhaust memory or reach a traceback: one `lab: error:` sentence (exit 2), nothing
changed, inside the folder or outside."""
from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_reliability as reliability
from test_reliability import TOY, assert_one_line_error, snapshot

from conftest import lab_subprocess_env, no_hang

toy_run = reliability.toy_run     # the fixture: a 40-step toy run with checkpoints

VICTIM = b"precious bytes\nand an unterminated last line"


@pytest.fixture(scope="module")
def gan_template(tmp_path_factory):
    """A 2-step GAN run on ring8, trained once; each test gets its own copy (``gan_run``)."""
    run = tmp_path_factory.mktemp("gan") / "run"
    result = subprocess.run([sys.executable, "-m", "lab", "train", "gan", "--data", "ring8", "--device", "cpu",
                             "--total-steps", "2", "--eval-every", "1000", "--run-dir", str(run)],
                            env=lab_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return run


@pytest.fixture
def gan_run(gan_template, tmp_path):
    run = tmp_path / "gan"
    shutil.copytree(gan_template, run, symlinks=True)
    return run


@pytest.fixture
def victim(tmp_path):
    """A file and a folder outside every run folder, which no command may change."""
    (tmp_path / "victim-dir").mkdir()
    (tmp_path / "victim-dir" / "keep.txt").write_bytes(VICTIM)
    (tmp_path / "victim.txt").write_bytes(VICTIM)
    return tmp_path


def victim_unchanged(root: Path) -> bool:
    return ((root / "victim.txt").read_bytes() == VICTIM and sorted(os.listdir(root / "victim-dir")) == ["keep.txt"]
            and (root / "victim-dir" / "keep.txt").read_bytes() == VICTIM)


def plant(run: Path, name: str, victim_root: Path) -> None:
    """Replace RUN/name by a link to the victim file (or, for a folder, the victim folder)."""
    path = run / name
    folder = path.is_dir()
    shutil.rmtree(path) if folder else path.unlink(missing_ok=True)
    path.symlink_to(victim_root / ("victim-dir" if folder or name.startswith("export") else "victim.txt"))


# (planted name, commands that must refuse it: each touches it); every other command may go on, but
# never through the link
COMMANDS = {
    "eval": ["eval", "{run}", "--checkpoint", "last"],
    "resume": ["resume", "{run}", "--total-steps", "4"],
    "plot": ["plot", "{run}"],
    "sample": ["sample", "{run}", "--n", "16", "--checkpoint", "last"],
    "export": ["export", "{run}", "--checkpoint", "last"],
}
PLANTED = {
    ".lock": ("eval", "resume", "sample"),
    "metrics.jsonl": ("eval", "resume", "plot", "sample", "export"),
    "metrics.csv": ("eval", "resume", "sample"),
    "status.json": ("resume",),
    "config.json": ("eval", "resume", "plot", "sample", "export"),
    "checkpoints/last.pt": ("eval", "resume", "sample", "export"),
    "checkpoints": ("eval", "resume", "sample", "export"),
    "samples": ("sample",),
    "plots": ("plot", "sample"),
    "export-safetensors": ("export",),
}


@pytest.mark.parametrize("name", list(PLANTED))
def test_a_planted_link_is_never_followed_and_is_refused_where_it_is_used(gan_run, victim, lab, name):
    plant(gan_run, name, victim)
    for command, args in COMMANDS.items():
        before = snapshot(gan_run)
        result = lab(*[a.format(run=gan_run) for a in args])
        assert victim_unchanged(victim), (command, result.stderr)
        assert (gan_run / name).is_symlink(), f"{command} replaced the planted {name}"
        if command in PLANTED[name]:
            assert_one_line_error(result, "refusing", "symbolic link")
            assert snapshot(gan_run) == before, command
        else:
            assert result.returncode == 0 or "refusing" in result.stderr, (command, result.stderr[-2000:])


def test_a_fifo_hangs_nothing_and_is_refused(toy_run, tmp_path, lab, monkeypatch):
    """A FIFO where metrics.jsonl, status.json or a checkpoint should be: each command answers at once."""
    os.rename(toy_run / "metrics.jsonl", tmp_path / "kept.jsonl")
    os.mkfifo(toy_run / "metrics.jsonl")
    (toy_run / "status.json").unlink()
    os.mkfifo(toy_run / "status.json")
    (toy_run / "checkpoints" / "last.pt").unlink()
    os.mkfifo(toy_run / "checkpoints" / "last.pt")
    monkeypatch.setenv("LAB_RUNS_DIR", str(toy_run.parent))
    with no_hang():
        for args in (["plot", toy_run], ["eval", toy_run, "--checkpoint", "last"],
                     ["resume", toy_run, "--total-steps", "60"]):
            assert_one_line_error(lab(*args), "not a regular file")
        listing = lab("list", "runs")
    assert listing.returncode == 0 and "unreadable" in listing.stdout, listing.stdout + listing.stderr


@pytest.mark.parametrize("flags", [["--config", "/dev/zero"], ["--config", "{fifo}"]])
def test_a_config_file_that_never_ends_is_refused(tmp_path, flags):
    os.mkfifo(tmp_path / "fifo.toml")
    args = [f.format(fifo=tmp_path / "fifo.toml") for f in flags]
    result = subprocess.run([sys.executable, "-m", "lab", *TOY, *args, "--run-dir", str(tmp_path / "run")],
                            env=lab_subprocess_env(), capture_output=True, text=True, timeout=60)
    assert_one_line_error(result, "not a regular file")
    assert not (tmp_path / "run").exists()


def test_an_explicit_checkpoint_that_is_a_device_is_refused(toy_run, lab):
    before = snapshot(toy_run)
    assert_one_line_error(lab("eval", toy_run, "--checkpoint", "/dev/zero"), "not a regular file")
    assert snapshot(toy_run) == before


def test_a_hard_linked_metrics_file_is_not_changed_in_place(toy_run, tmp_path, lab):
    """A metrics log with a torn last line, hard-linked to a file outside: the repair would cut both."""
    victim = tmp_path / "victim.jsonl"
    victim.write_bytes((toy_run / "metrics.jsonl").read_bytes() + b'{"step": 45, "train/lo')
    (toy_run / "metrics.jsonl").unlink()
    os.link(victim, toy_run / "metrics.jsonl")
    content, before = victim.read_bytes(), snapshot(toy_run)
    assert_one_line_error(lab("resume", toy_run, "--total-steps", 60), "hard link")
    assert victim.read_bytes() == content and snapshot(toy_run) == before


# ------------------------------------------------------------------ depth and size bounds
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl"])      # status.json: `lab list runs` below
def test_a_file_nested_100000_deep_is_one_sentence(toy_run, lab, name):
    if name == "config.json":
        (toy_run / name).write_bytes(DEEP)
    else:
        with open(toy_run / name, "ab") as f:
            f.write(b'{"step": 41, "x": ' + DEEP + b"}\n")
    before = snapshot(toy_run)
    for args in (["resume", toy_run, "--total-steps", 60], ["plot", toy_run], ["eval", toy_run]):
        assert_one_line_error(lab(*args), name)
        assert snapshot(toy_run) == before


@pytest.mark.parametrize("suffix, text", [(".toml", "a = " + "[" * 100_000 + "]" * 100_000 + "\n"),
                                          (".json", "{\"lr\": " + "[" * 100_000 + "]" * 100_000 + "}")])
def test_a_config_file_nested_100000_deep_is_one_sentence(tmp_path, lab, suffix, text):
    (tmp_path / f"deep{suffix}").write_text(text)
    assert_one_line_error(lab(*TOY, "--config", tmp_path / f"deep{suffix}", "--run-dir", tmp_path / "run"),
                          "deeper than")
    assert not (tmp_path / "run").exists()


def test_one_unreadable_run_folder_does_not_hide_the_others(toy_run, lab, monkeypatch):
    runs = toy_run.parent
    for name, status in (("deep", b'{"state": ' + DEEP + b"}"), ("zero", None), ("garbage", b"\xff\x00{")):
        shutil.copytree(toy_run, runs / name)
        (runs / name / "status.json").unlink()
        if status is None:
            (runs / name / "status.json").symlink_to("/dev/zero")
        else:
            (runs / name / "status.json").write_bytes(status)
    (runs / "broken").mkdir()
    (runs / "broken" / "config.json").write_bytes(DEEP)
    monkeypatch.setenv("LAB_RUNS_DIR", str(runs))
    result = lab("list", "runs")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  /")}
    assert "finished" in lines[str(toy_run)]
    for name in ("deep", "zero", "garbage"):
        assert "toy" in lines[str(runs / name)] and "unreadable" in lines[str(runs / name)], result.stdout
    assert "unreadable config.json" in lines[str(runs / "broken")]


def test_a_metrics_log_larger_than_the_bound_is_refused_before_it_is_read(toy_run, lab):
    from lab.logger import METRICS_LIMIT
    with open(toy_run / "metrics.jsonl", "r+b") as f:
        f.truncate(METRICS_LIMIT + 1)            # sparse: nothing is allocated on disk
    before = {p: toy_run.joinpath(p).stat().st_size for p in os.listdir(toy_run)}   # not read: 1 GB
    started = time.monotonic()
    assert_one_line_error(lab("plot", toy_run), "metrics.jsonl", "more than")
    assert time.monotonic() - started < 10
    assert {p: toy_run.joinpath(p).stat().st_size for p in os.listdir(toy_run)} == before


# ------------------------------------------------------------------ smaller ones
def test_a_negative_eval_n_is_one_sentence(gan_run, lab):
    before = snapshot(gan_run)
    assert_one_line_error(lab("eval", gan_run, "--n", "-5"), "--n", "-5")
    assert snapshot(gan_run) == before


def test_a_refused_resume_leaves_a_torn_tail_alone_and_the_next_writer_removes_dead_temporaries(toy_run, lab):
    log = toy_run / "metrics.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:2] + ["not json"] + lines[2:]) + '\n{"step": 45, "train/lo')
    (toy_run / ".metrics.jsonl.tmp-99999").write_bytes(b"x" * 1000)       # a rewrite killed midway
    before = snapshot(toy_run)
    assert_one_line_error(lab("resume", toy_run, "--total-steps", 60), "line 3")
    assert snapshot(toy_run) == before
    log.write_text("\n".join(lines) + '\n{"step": 45, "train/lo')
    assert lab("resume", toy_run, "--total-steps", 60).returncode == 0
    assert not (toy_run / ".metrics.jsonl.tmp-99999").exists()


def test_plot_into_a_folder_that_refuses_the_write_is_one_sentence(toy_run):
    result = subprocess.run([sys.executable, "-m", "lab", "plot", str(toy_run)], env=lab_subprocess_env(),
                            capture_output=True, text=True, timeout=120,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000)))
    assert_one_line_error(result, "curves.png")
    assert not any(p.name.startswith(".") for p in (toy_run / "plots").iterdir())


def test_a_running_run_reports_the_step_of_its_last_checkpoint(tmp_path):
    from lab.rundir import describe_runs
    run = tmp_path / "run"
    trainer = reliability.lab_process(*TOY, "--total-steps", 10_000_000, "--log-every", 1000, "--checkpoint-every",
                                      2000, "--eval-every", 10_000_000, "--run-dir", run)
    try:
        reliability._wait_for(run / "checkpoints" / "last.pt", trainer)
        time.sleep(0.5)
        [(_, algo, step, state)] = describe_runs(tmp_path)
        assert algo == "toy" and state == "running" and int(step.split()[1]) >= 2000, step
    finally:
        trainer.kill()
        trainer.communicate()


# ------------------------------------------------------------------ sizes checked before allocating
@pytest.mark.parametrize("algo", ["vae", "pixelcnn"])
def test_an_eval_n_that_cannot_fit_is_refused_before_sampling(tmp_path, lab, algo):
    run = tmp_path / algo
    tiny = {"vae": ["--conv-channels", 8], "pixelcnn": ["--channels", 8, "--layers", 2]}[algo]
    assert lab("train", algo, "--data", "digits", *tiny, "--total-steps", 2, "--device", "cpu", "--eval-every", 1000,
               "--run-dir", run).returncode == 0
    before, started = snapshot(run), time.monotonic()
    assert_one_line_error(lab("eval", run, "--n", 100_000_000, "--k", 1) if algo == "vae" else
                          lab("eval", run, "--n", 100_000_000), "--n 100,000,000")
    assert time.monotonic() - started < 30 and snapshot(run) == before


def test_a_gan_eval_n_that_cannot_fit_is_refused_before_sampling(gan_run, lab):
    before = snapshot(gan_run)
    assert_one_line_error(lab("eval", gan_run, "--n", 100_000_000_000), "--n 100,000,000,000")
    assert snapshot(gan_run) == before


def test_a_full_disk_still_lets_the_status_say_failed(tmp_path, monkeypatch):
    """On a full disk no new file can be made (the atomic write's temporary file fails): the status is then
    overwritten in place. (By hand on a 2 MB tmpfs: training stopped by ENOSPC left "running, step 0"
    before, now "failed" at the step it reached, with the reason.)"""
    from lab import safefs
    from lab.rundir import RunDir
    run = RunDir(tmp_path)
    run.write_status("running", 0)

    def disk_full(path, *args, **kwargs):
        raise safefs.WriteFailed(path, "No space left on device")
    monkeypatch.setattr(safefs, "write_atomically", disk_full)
    run.write_status("failed", 11378, "cannot append to metrics.jsonl: No space left on device.")
    status = RunDir(tmp_path).status()
    assert (status["state"], status["step"]) == ("failed", 11378) and "No space" in status["message"]
