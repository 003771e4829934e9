"""`lab tune`: Optuna studies shared by several processes, pruning, the best config rerun, bad input."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import lab_subprocess_env
from lab.logger import read_metrics
from test_reliability import assert_one_line_error

optuna = pytest.importorskip("optuna")
TOY = ["toy", "--device", "cpu", "--deterministic"]


def tune_process(*args, runs_dir) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lab", "tune", *map(str, args)],
                            env={**lab_subprocess_env(), "LAB_RUNS_DIR": str(runs_dir)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_on_one_sqlite_study_run_exactly_the_trials_asked_for(tmp_path):
    args = [*TOY, "--trials", 6, "--trial-steps", 60, "--study", "shared"]
    first, second = tune_process(*args, runs_dir=tmp_path), tune_process(*args, runs_dir=tmp_path)
    for process in (first, second):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=f"sqlite:///{tmp_path}/tune/shared.db")
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)            # none failed
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 6          # no trial drawn twice
    assert {t.user_attrs["pid"] for t in study.trials} == {first.pid, second.pid}      # both took trials
    again = tune_process(*args, runs_dir=tmp_path)
    assert again.wait(timeout=600) == 0 and len(study.get_trials()) == 6               # the study was complete


def test_the_median_pruner_stops_a_hopeless_trial_and_the_best_config_reruns(tmp_path, lab):
    space = tmp_path / "space.toml"
    space.write_text('[objective]\nmetric = "eval/mse"\ndirection = "minimize"\n'
                     '[fields.lr]\nchoices = [0.05, 0.00001]\nsource = "a good and a hopeless step size"\n')
    storage = f"sqlite:///{tmp_path}/tune/pruned.db"
    (tmp_path / "tune").mkdir()
    study = optuna.create_study(study_name="pruned", storage=storage, direction="minimize")
    for lr in [0.05] * 5 + [0.00001]:
        study.enqueue_trial({"lr": lr})
    process = tune_process(*TOY, "--trials", 6, "--trial-steps", 300, "--evaluations", 10, "--study", "pruned",
                           "--space", space, "--pruner", "median", runs_dir=tmp_path)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="pruned", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5 + ["PRUNED"]
    assert max(trials[-1].intermediate_values) < 300 and "trial 5: pruned" in out

    shown = lab("tune", "show", "pruned", "--storage", storage)
    assert shown.returncode == 0, shown.stderr
    best = tmp_path / "tune" / "pruned-best.json"
    assert (tmp_path / "tune" / "pruned-history.png").stat().st_size > 10_000
    rerun = lab("train", "toy", "--config", best, "--run-dir", tmp_path / "rerun")
    assert rerun.returncode == 0, rerun.stderr
    best_trial = optuna.load_study(study_name="pruned", storage=storage).best_trial
    first_step = min(best_trial.intermediate_values)
    first_row = next(r for r in read_metrics(tmp_path / "rerun" / "metrics.jsonl") if "eval/mse" in r)
    assert first_row["step"] == first_step and first_row["eval/mse"] == best_trial.intermediate_values[first_step]


@pytest.mark.parametrize("extra, space, words", [
    (["--trials", 0], None, "--trials"),
    (["--trials", 2, "--storage", "notadatabase://x"], None, "notadatabase"),
    (["--trials", 2, "--sampler", "grid"], None, "--sampler"),
    (["--trials", 2], '[objective]\nmetric = "eval/mse"\ndirection = "minimize"\n[fields.learning_rate]\nfloat = [0.1, 1.0]\n',
     "learning_rate"),
    (["--trials", 2], '[objective]\nmetric = "eval/mse"\ndirection = "minimize"\n[fields.lr]\nfloat = [0.1, 0.1]\n',
     "low < high"),
    (["--trials", 2], '[objective]\nmetric = "eval/mse"\ndirection = "minimize"\n[fields.lr]\nchoices = []\n',
     "empty"),
    (["--trials", 2], '[fields.lr]\nchoices = [0.1]\n', "[objective]"),
])
def test_bad_tuning_input_is_one_sentence_and_creates_nothing(extra, space, words, tmp_path, lab, monkeypatch):
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "runs"))
    if space is not None:
        (tmp_path / "space.toml").write_text(space)
        extra = [*extra, "--space", tmp_path / "space.toml"]
    assert_one_line_error(lab("tune", *TOY, "--trial-steps", 10, "--study", "bad", *extra), words)
    assert not (tmp_path / "runs").exists()


def test_every_search_space_in_the_package_names_real_fields_and_sources():
    import dataclasses

    from lab import registry
    from lab.tune import SPACES, read_space
    for path in sorted(SPACES.glob("*.toml")):
        _, module = registry.get(path.stem)
        space = read_space(path, {f.name for f in dataclasses.fields(module.Config)})
        assert all(spec.get("source") for spec in space.fields.values()), path
    assert {p.stem for p in SPACES.glob("*.toml")} >= {"ppo", "a2c", "dqn", "reinforce", "actor-critic", "ddpm", "gan"}
