"""The `lab` command: help, listing, and one clear sentence for every kind of bad input."""
import dataclasses
import json
import sys
import types

import pytest

from lab.config import from_dict, to_dict
from conftest import ROOT
from lab import registry
from lab.runtime import RunOptions
from lab.toy import Config


def assert_one_line_error(result, *words):
    assert result.returncode != 0
    err = result.stderr.strip()
    assert "Traceback" not in result.stderr
    assert err.startswith("lab: error:") and "\n" not in err, err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize("algo", sorted(registry.ALGORITHMS))
def test_help_documents_every_field(lab, algo):
    result = lab("train", algo, "--help")
    assert result.returncode == 0
    _, module = registry.get(algo)
    for field in dataclasses.fields(module.Config) + dataclasses.fields(RunOptions):
        assert "--" + field.name.replace("_", "-") in result.stdout, field.name
    assert lab("--help").returncode == 0


@pytest.mark.parametrize("verb, algo, flags", [
    ("eval", "dqn", ["--episodes", "--epsilon"]),
    ("sample", "ddpm", ["--n INT", "--sampler {ddpm,ddim}"]),
])
def test_eval_and_sample_help_show_each_algorithms_options(lab, verb, algo, flags):
    general = lab(verb, "--help")
    assert general.returncode == 0 and f"lab {verb} --help ALGO" in general.stdout and algo in general.stdout
    specific = lab(verb, "--help", algo)
    assert specific.returncode == 0 and f"{algo} options" in specific.stdout
    assert "options options" not in specific.stdout
    for flag in flags:
        assert flag in specific.stdout


@pytest.mark.parametrize("args, words", [
    (["train", "tyo"], ["unknown algorithm", "toy"]),
    (["train", "toy", "--lr", "-0.1"], ["--lr", "-0.1"]),
    (["train", "toy", "--batch-size", "0"], ["--batch-size", "0"]),
    (["train", "toy", "--momentum", "-1"], ["--momentum"]),
    (["resume", "no/such/run"], ["no run folder"]),
    (["eval", "no/such/run"], ["no run folder"]),
    (["frobnicate"], ["unknown command"]),
    (["train", "toy", "--no-such-flag", "1"], ["Unrecognized options", "--no-such-flag"]),
    (["train", "a2c", "--optimizer", "sgd"], ["invalid choice 'sgd'", "--optimizer", "rmsprop"]),
    (["solve", "--backend", "gpu"], ["invalid choice 'gpu'", "--backend"]),
    (["list", "planets"], ["lab list takes"]),
])
def test_bad_input_gives_one_sentence(lab, tmp_path, args, words):
    assert_one_line_error(lab(*args, cwd=tmp_path), *words)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_corrupt_checkpoint_and_conflicting_resume(tmp_path, lab):
    run = tmp_path / "run"
    assert lab("train", "toy", "--total-steps", 20, "--device", "cpu", "--run-dir", run).returncode == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    assert_one_line_error(lab("resume", run, "--lr", "0.5"), "--lr", "only --total-steps")
    assert_one_line_error(lab("resume", run), "already at step 20")
    assert_one_line_error(lab("train", "toy", "--run-dir", run), "already holds a run")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    saved = json.loads((run / "config.json").read_text())
    saved["config"]["lr"] = 0.5
    (run / "config.json").write_text(json.dumps(saved))
    assert_one_line_error(lab("resume", run, "--total-steps", 40), "disagree", "--lr")

    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint at all")
    assert_one_line_error(lab("eval", run, "--checkpoint", "last"), "corrupt")
    (run / "config.json").write_text("{ torn")
    assert_one_line_error(lab("eval", run), "corrupt")


def test_one_tensorboard_events_writer_per_run_not_per_command(tmp_path, lab, monkeypatch):
    writers = []

    class SummaryWriter:
        def __init__(self, log_dir, **kwargs):
            writers.append(log_dir)

        def add_scalar(self, *args):
            pass

        def add_hparams(self, *args, **kwargs):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    run = tmp_path / "run"
    assert lab("train", "toy", "--total-steps", 20, "--device", "cpu", "--run-dir", run).returncode == 0
    for _ in range(2):
        assert lab("eval", run).returncode == 0
    assert writers == [str(run)]


def test_eval_appends_to_metrics(tmp_path, lab):
    run = tmp_path / "run"
    assert lab("train", "toy", "--total-steps", 20, "--device", "cpu", "--run-dir", run).returncode == 0
    rows = len((run / "metrics.jsonl").read_text().splitlines())
    result = lab("eval", run, "--json")
    assert result.returncode == 0, result.stderr
    assert "eval/mse" in json.loads(result.stdout)["metrics"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == rows + 1


def test_list_shows_algorithms(lab):
    result = lab("list", "algorithms")
    assert result.returncode == 0 and "toy" in result.stdout


def test_config_round_trips_through_json():
    config = Config(dim=3, lr=0.2)
    assert from_dict(Config, json.loads(json.dumps(to_dict(config)))) == config


BENCHES = sorted(p.stem.replace("_", "-") for p in (ROOT / "bench").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", BENCHES)
def test_every_benchmark_loads_from_any_folder_and_documents_its_flags(lab, tmp_path, name):
    result = lab("bench", name, "--help", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-2000:]
    assert (result.returncode == 0 and "usage" in output.lower()) or "not installed" in output, output[-2000:]
