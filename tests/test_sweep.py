"""`lab sweep` and `lab report`: a grid of tiny runs over seeds, continued after a kill, compared with
honest statistics (checked by hand and against rliable where it is installed)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lab as lab_package
from conftest import lab_subprocess_env
from lab import checkpoint
from lab.report import improvement_interval, iqm_interval, performance_profile, probability_of_improvement
from test_reliability import assert_one_line_error

TOY = ["toy", "--device", "cpu", "--deterministic", "--log-every", "5"]


def sweep_process(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lab", "sweep", *map(str, args)], env=lab_subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run / "checkpoints" / "last.pt")["algorithm"]["model"]


def test_a_grid_of_seeds_runs_reports_and_is_not_run_twice(tmp_path, lab):
    sweep = tmp_path / "sweep"
    args = ["sweep", *TOY, "--total-steps", 40, "--seeds", "0-1", "--grid", "lr=0.01,0.1", "--workers", 2,
            "--sweep-dir", sweep]
    first = subprocess.run([sys.executable, "-m", "lab", *map(str, args)], env=lab_subprocess_env(),
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    names = ["lr=0.01-s0", "lr=0.01-s1", "lr=0.1-s0", "lr=0.1-s1"]
    manifest = json.loads((sweep / "sweep.json").read_text())
    assert list(manifest["runs"]) == names and manifest["seeds"] == [0, 1] and manifest["grid"] == [["lr", ["0.01", "0.1"]]]
    for name in names:
        run = manifest["runs"][name]
        assert [a["state"] for a in run["attempts"]] == ["finished"] and "--run-dir" in run["args"]
        saved = json.loads((sweep / name / "config.json").read_text())
        assert saved["config"]["lr"] == float(name[3:name.index("-s")]) and saved["options"]["seed"] == int(name[-1])
        assert first.stderr.count(f"{name}: finished") == 1

    again = lab_package.sweep("toy", seeds=[0, 1], grid={"lr": [0.01, 0.1]}, workers=2, sweep_dir=sweep,
                      device="cpu", deterministic=True, log_every=5, total_steps=40)     # the same sweep, from Python
    assert [o.state for o in again] == ["finished"] * 4
    assert json.loads((sweep / "sweep.json").read_text())["runs"] == manifest["runs"]    # nothing ran again

    result = lab("report", sweep)
    assert result.returncode == 0, result.stderr
    report = json.loads((sweep / "report" / "report.json").read_text())
    assert report["metric"] == "eval/mse" and not report["higher_is_better"]
    rows = {row["config"]: row for row in report["configurations"]}
    assert set(rows) == {"lr=0.01", "lr=0.1"} and all(row["seeds"] == 2 for row in rows.values())
    for lr, row in rows.items():
        finals = [[r for r in map(json.loads, (sweep / f"{lr}-s{s}" / "metrics.jsonl").read_text().splitlines())
                   if "eval/mse" in r][-1]["eval/mse"] for s in (0, 1)]
        assert row["final_mean"] == pytest.approx(np.mean(finals))
    assert (sweep / "report" / "profile.png").stat().st_size > 10_000
    drawn = lab("plot", sweep, "--aggregate", "iqm-ci")          # a sweep folder stands for its runs
    assert drawn.returncode == 0 and "2 seeds: 0, 1" not in drawn.stderr, drawn.stderr

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "report.json").write_text("keep")
    for name in ("report.json", "profile.png"):
        (sweep / "report" / name).unlink()
    (sweep / "report").rmdir()
    (sweep / "report").symlink_to(victim)                         # a planted link: nothing is written through it
    assert_one_line_error(lab("report", sweep), "report")
    assert [p.name for p in victim.iterdir()] == ["report.json"] and (victim / "report.json").read_text() == "keep"


def test_a_killed_sweep_continues_to_the_exact_same_weights_and_a_killed_run_is_reported(tmp_path):
    common = [*TOY, "--total-steps", 3000, "--checkpoint-every", 100, "--seeds", "0-1", "--workers", 2]
    reference = tmp_path / "reference"
    assert sweep_process(*common, "--sweep-dir", reference).wait(timeout=600) == 0

    sweep = tmp_path / "sweep"
    process = sweep_process(*common, "--sweep-dir", sweep)
    deadline = time.monotonic() + 300
    while not all((sweep / f"s{s}" / "checkpoints" / "last.pt").exists() for s in (0, 1)):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)           # the sweep dies; its runs get SIGTERM and checkpoint
    process.wait()
    for s in (0, 1):                               # the runs stop on their own (their status says so)
        while json.loads((sweep / f"s{s}" / "status.json").read_text())["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)

    rerun = sweep_process(*common, "--sweep-dir", sweep)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    assert "2 to run" in out
    for s in (0, 1):
        assert json.loads((sweep / f"s{s}" / "status.json").read_text())["state"] == "finished"
        assert all(torch.equal(a, b) for a, b in zip(weights(sweep / f"s{s}").values(),
                                                      weights(reference / f"s{s}").values()))

    killed = tmp_path / "killed"
    process = sweep_process(*common, "--sweep-dir", killed)
    while not (killed / "s0" / "status.json").exists():
        assert time.monotonic() < deadline + 300 and process.poll() is None
        time.sleep(0.05)
    pid = json.loads((killed / "s0" / "status.json").read_text())["pid"]
    subprocess.run(["kill", "-KILL", str(pid)], check=True)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 1 and "s0: failed" in err and "killed by SIGKILL" in err, err[-3000:]
    assert json.loads((killed / "s1" / "status.json").read_text())["state"] == "finished"


@pytest.mark.parametrize("args, words", [
    (["--seeds", "5-2"], "backwards"),
    (["--seeds", "0", "--workers", 0], "--workers"),
    (["--seeds", "0", "--grid", "learning_rate=1,2"], "'learning_rate'"),
    (["--seeds", "0", "--grid", "lr=fast,0.1"], "lr=fast"),
    (["--seeds", "0", "--grid", "lr="], "--grid"),
    (["--seeds", "0", "--seed", "3"], "--seeds"),
    (["--grid", "lr=0.1"], "--seeds"),
])
def test_bad_sweeps_are_refused_in_one_sentence_before_anything_is_made(args, words, tmp_path, lab):
    sweep = tmp_path / "sweep"
    assert_one_line_error(lab("sweep", *TOY, *args, "--sweep-dir", sweep), words)
    assert not sweep.exists()


def test_the_ray_launcher_runs_the_same_sweep_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray")
    sweep = tmp_path / "sweep"
    process = sweep_process(*TOY, "--total-steps", 40, "--seeds", "0-1", "--workers", 2, "--launcher", "ray",
                            "--sweep-dir", sweep)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    assert all(json.loads((sweep / f"s{s}" / "status.json").read_text())["state"] == "finished" for s in (0, 1))


def test_an_unreachable_or_malformed_ray_address_is_one_sentence(tmp_path, lab):
    try:
        import ray  # noqa: F401
        expected = [("127.0.0.1:1", "cannot reach"), ("not an address", "HOST:PORT")]
    except ModuleNotFoundError:
        expected = [("127.0.0.1:1", "pip install")]
    for address, words in expected:
        result = lab("sweep", *TOY, "--seeds", "0", "--launcher", "ray", "--ray-address", address,
                     "--sweep-dir", tmp_path / "sweep")
        assert_one_line_error(result, words)
        assert not (tmp_path / "sweep").exists()


def test_a_sweep_folder_holding_another_sweep_is_refused_naming_the_difference(tmp_path, lab):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps({"format": 1, "algo": "toy", "flags": TOY[1:], "grid": [],
                                                  "seeds": [0, 1], "runs": {}}))
    before = (sweep / "sweep.json").read_bytes()
    assert_one_line_error(lab("sweep", *TOY, "--seeds", "0-2", "--sweep-dir", sweep), "another sweep", "seeds")
    assert (sweep / "sweep.json").read_bytes() == before and sorted(p.name for p in sweep.iterdir()) == ["sweep.json"]


# ---------------------------------------------------------------- the statistics
def test_probability_of_improvement_and_the_profile_on_hand_checked_scores():
    assert probability_of_improvement(np.array([1.0, 2.0]), np.array([0.0, 3.0])) == 0.5     # 2 of 4 pairs
    assert probability_of_improvement(np.array([1.0]), np.array([1.0])) == 0.5               # a tie counts half
    assert probability_of_improvement(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    p, low, high = improvement_interval(np.array([3.0, 4.0]), np.array([1.0, 2.0]))
    assert (p, low, high) == (1.0, 1.0, 1.0)
    profile = performance_profile(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 2.5, 5.0]), higher_is_better=True)
    assert profile.tolist() == [1.0, 0.5, 0.0]
    iqm, low, high = iqm_interval(np.arange(8.0))
    assert iqm == pytest.approx(np.mean([2, 3, 4, 5])) and low < iqm < high


def test_report_statistics_equal_rliables_on_fixed_scores():
    pytest.importorskip("rliable")
    from rliable import library, metrics
    rng = np.random.default_rng(7)
    x, y = rng.normal(1.0, 1.0, 10), rng.normal(0.5, 1.0, 12)
    assert iqm_interval(x)[0] == pytest.approx(metrics.aggregate_iqm(x[:, None]), abs=1e-12)
    assert probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x[:, None], y[:, None]))
    np.random.seed(0)
    _, intervals = library.get_interval_estimates({"x": x[:, None]}, lambda s: np.array([metrics.aggregate_iqm(s)]),
                                                  reps=20_000)
    _, low, high = iqm_interval(x)
    spread = x.max() - x.min()
    assert abs(low - intervals["x"][0, 0]) < 0.05 * spread and abs(high - intervals["x"][1, 0]) < 0.05 * spread
