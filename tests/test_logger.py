"""The logger: scalars to JSONL and CSV, media into the run folder, nothing overwritten; the progress."""
import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time

import numpy as np
import pytest

from lab.logger import Logger, read_metrics
from lab.media import Image
from lab.progress import BAR_WIDTH, Progress
from lab.rundir import RunDir


def test_scalars_go_to_jsonl_and_csv_and_media_are_never_overwritten(tmp_path):
    run = RunDir.create(tmp_path / "run", {"algo": "toy", "config": {}})
    logger = Logger(run, total_steps=10, progress=False)
    logger.log(5, {"train/loss": 1.5})
    logger.log(10, {"train/loss": 0.5, "eval/mse": 0.25})
    first = logger.log(10, {"samples/grid": Image(np.zeros((4, 4)))})
    second = logger.log(10, {"samples/grid": Image(np.ones((4, 4)))})
    logger.close()
    assert [r["step"] for r in read_metrics(run.metrics_file)] == [5, 10]
    header, *rows = (run.path / "metrics.csv").read_text().splitlines()
    assert header == "step,train/loss,eval/mse" and rows[1] == "10,0.5,0.25"
    assert first[0] != second[0] and first[0].exists() and second[0].exists()
    assert first[0].parent == run.path / "samples"


def _trainer_like_run(tmp_path, eval_metrics: dict) -> str:
    """Log as the trainer does at a run's last step: the window's scalars, then the evaluation."""
    run = RunDir.create(tmp_path / "run", {"algo": "gan", "config": {}})
    logger = Logger(run, total_steps=4000, start_step=3000, headline="eval/fid")
    logger.advance(4000)
    logger.log(4000, {"train/d_loss": 0.5, "train/g_loss": 1.25, "time/sps": 900.0})
    logger.log(4000, eval_metrics)
    logger.close()
    return run


def test_without_a_terminal_the_last_step_is_printed_once_with_its_final_values(tmp_path, capsys):
    _trainer_like_run(tmp_path, {"eval/fid": 12.5, "eval/is": 8.0, "eval/precision": 0.5, "eval/recall": 0.4,
                                 "eval/modes": 9.0, "eval/high_quality": 0.9})
    lines = [line for line in capsys.readouterr().err.splitlines() if "4000/4000" in line]
    assert len(lines) == 1, lines
    assert "d_loss 0.5" in lines[0] and "g_loss 1.25" in lines[0] and "eval/fid 12.5" in lines[0]


def test_commands_on_a_checkpoint_print_no_progress(tmp_path, capsys):
    run = RunDir.create(tmp_path / "run", {"algo": "dqn", "config": {}})
    logger = Logger(run, progress=False)          # as `lab eval` opens it
    logger.log(4000, {"eval/ep_return": 285.3}, source="evaluate-command")
    logger.close()
    assert capsys.readouterr().err == ""


def test_progress_lines_without_a_terminal_have_rate_eta_and_values_and_end_once(capsys):
    with Progress(total=4, what="eval", unit="episode", line_every_s=0.0) as progress:
        for done in range(1, 5):
            progress.update(1)
            progress.show({"return": f"{done}"})
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("eval 1/4 episode (25%) | ") and "/s | ETA " in lines[0]
    assert sum("4/4" in line for line in lines) == 1 and lines[-1].endswith("return 4")


def read_terminal(master: int, until: bytes, timeout_s: float = 30.0) -> bytes:
    """What the program wrote to a pseudo-terminal, read until it ends with ``until``: the kernel hands a
    terminal's output over in pieces (a busy machine delays them), so one read may return only a part."""
    seen, deadline = b"", time.monotonic() + timeout_s
    while not seen.endswith(until) and time.monotonic() < deadline:
        if select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
            seen += os.read(master, 1 << 16)
    return seen


def test_the_bar_keeps_its_width_on_a_120_column_terminal_with_many_values(monkeypatch):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    terminal = os.fdopen(slave, "w")
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = Progress(total=10, what="train", unit="step")
    progress.update(5)
    progress.show({f"eval/metric_{i}": "123.456" for i in range(8)})
    progress.close()
    terminal.flush()
    screen = read_terminal(master, until=b"\r\n").decode().split("\r")[-2]   # the bar, then close()'s newline
    os.close(master)
    terminal.close()
    line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", screen).rstrip()
    assert len(re.search(r"\|(.*?)\|", line).group(1)) == BAR_WIDTH and "5/10" in line
    assert len(line) <= 120                    # the values are cut at the edge, the bar is not


def test_capture_video_records_an_episode_at_each_training_evaluation(tmp_path, lab):
    run = tmp_path / "run"
    result = lab("train", "a2c", "--env-id", "CartPole-v1", "--total-steps", 320, "--eval-every", 160,
                 "--eval-episodes", 1, "--capture-video", "--device", "cpu", "--run-dir", run)
    assert result.returncode == 0, result.stderr
    videos = sorted(p.name for p in (run / "videos").iterdir())
    assert len(videos) == 2 and all(name.startswith("episode-step") for name in videos), videos


def test_tensorboard_gets_the_hyperparameters(tmp_path, lab):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    run = tmp_path / "run"
    assert lab("train", "toy", "--total-steps", 20, "--lr", 0.01, "--device", "cpu", "--run-dir", run).returncode == 0
    tags = {value.tag for path in run.glob("events.out.tfevents.*") for event in EventFileLoader(str(path)).Load()
            for value in event.summary.value}
    assert "_hparams_/session_start_info" in tags and "train/loss" in tags
