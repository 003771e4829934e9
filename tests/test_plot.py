"""`lab plot`: training curves in step order, `lab eval` results as points, labels, bootstrap bands."""
import numpy as np
import pytest

from lab.logger import Logger, read_metrics
from lab.plot import Run, aggregate, curves, interquartile_mean, plot_runs
from lab.rundir import RunDir

LOGGED = {1000: 120.0, 2000: 180.5, 4000: 214.6, 6000: 190.0, 8000: 150.2, 10000: 129.8}


def _run(tmp_path, name: str, seed: int = 0, lr: float = 1e-3, values=LOGGED) -> RunDir:
    run = RunDir.create(tmp_path / name, {"algo": "dqn", "config": {"env_id": "CartPole-v1", "lr": lr},
                                          "options": {"seed": seed}})
    logger = Logger(run, total_steps=10_000, progress=False)
    for step, value in values.items():
        logger.log(step, {"train/loss": 1.0 / step})
        logger.log(step, {"eval/ep_return": value})
    logger.close()
    return run


def _open(run: RunDir) -> Run:
    return Run(run.path, run.read_config(), read_metrics(run.metrics_file))


def test_lab_eval_rows_appended_at_an_earlier_step_are_points_not_part_of_the_curve(tmp_path):
    run = _run(tmp_path, "dqn")
    logger = Logger(run, progress=False)
    logger.log(4000, {"eval/ep_return": 285.3}, source="evaluate-command")   # what `lab eval` of best.pt appends
    logger.close()
    assert read_metrics(run.metrics_file)[-1]["source"] == "evaluate-command"
    (curve,) = curves([_open(run)], "eval/ep_return")
    assert curve.steps.tolist() == sorted(LOGGED)
    assert curve.center.tolist() == [LOGGED[s] for s in sorted(LOGGED)]      # 285.3 joined nowhere
    assert curve.points[0].tolist() == [4000] and curve.points[1].tolist() == [285.3]
    assert plot_runs([run.path]).stat().st_size > 1000


def test_rows_are_drawn_in_step_order_whatever_the_file_order(tmp_path):
    run = _run(tmp_path, "shuffled", values={4000: 3.0, 1000: 1.0, 2000: 2.0})
    (curve,) = curves([_open(run)], "eval/ep_return")
    assert curve.steps.tolist() == [1000, 2000, 4000] and curve.center.tolist() == [1.0, 2.0, 3.0]


def test_labels_tell_seeds_configs_and_resumes_apart(tmp_path):
    a, b = _run(tmp_path, "a", seed=0), _run(tmp_path, "b", seed=1)
    c = _run(tmp_path, "c", seed=0, lr=3e-4)
    saved = c.read_config()
    saved["resumed"] = [{"from_step": 6000, "total_steps": 10000}]
    c.write_json("config.json", saved)
    labels = sorted(curve.label for curve in curves([_open(r) for r in (a, b, c)], "eval/ep_return"))
    assert labels == ["dqn CartPole-v1 lr=0.0003 (seed 0), resumed at 6000",
                      "dqn CartPole-v1 lr=0.001 (2 seeds: 0, 1)"]


def test_bootstrap_interval_and_interquartile_mean():
    assert interquartile_mean(np.array([[0.0], [1.0], [2.0], [100.0]]))[0] == pytest.approx(1.5)
    values = np.random.default_rng(0).normal(10.0, 2.0, size=(40, 3))
    center, (low, high) = aggregate(values, "mean-ci")
    assert center == pytest.approx(values.mean(0))
    half_width = 1.96 * values.std(0) / np.sqrt(len(values))               # the normal approximation
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)
    assert ((low < center) & (center < high)).all()
    center, (low, high) = aggregate(values, "iqm-ci")
    assert center == pytest.approx(interquartile_mean(values)) and ((low < center) & (center < high)).all()


def test_lab_eval_marks_its_rows_and_the_plot_keeps_them_off_the_training_curve(lab, tmp_path):
    run = tmp_path / "toy"
    assert lab("train", "toy", "--device", "cpu", "--total-steps", 400, "--eval-every", 100,
               "--run-dir", run).returncode == 0
    result = lab("eval", run, "--checkpoint", "best")
    assert result.returncode == 0, result.stderr
    assert "/0 " not in result.stderr                             # no "step 4000/0" progress line
    rows = read_metrics(run / "metrics.jsonl")
    assert rows[-1]["source"] == "evaluate-command"
    trained = {r["step"]: r["eval/mse"] for r in rows if "eval/mse" in r and "source" not in r}
    (curve,) = curves([_open(RunDir.open(run))], "eval/mse")
    assert curve.steps.tolist() == sorted(trained) and curve.center.tolist() == [trained[s] for s in sorted(trained)]
    assert curve.points[0].tolist() == [rows[-1]["step"]] and curve.points[1].tolist() == [rows[-1]["eval/mse"]]
