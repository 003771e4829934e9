"""Presets and reproducible configs: field defaults < preset < --config file < flags; config.json holds
the resolved values and reruns the experiment."""
from __future__ import annotations

import dataclasses
import json

import pytest

from lab import presets, registry
from lab.errors import LabError
from lab.logger import read_metrics
from lab.presets import base_config, fill_unset


def test_every_preset_names_only_fields_of_its_algorithm_and_builds_a_valid_config():
    checked = 0
    for algo in registry.ALGORITHMS:
        _, module = registry.get(algo)
        fields = {f.name for f in dataclasses.fields(module.Config)}
        for name, values in presets.presets(algo).items():
            assert set(values) <= fields, (algo, name, set(values) - fields)
            base_config(algo, module, name, None)
            checked += 1
    assert checked >= 2


def test_env_family_defaults_come_from_the_matching_preset():
    from rl.dqn.algo import Config
    classic, atari = Config(env_id="CartPole-v1").resolved(), Config(env_id="ALE/Pong-v5").resolved()
    assert (classic.lr, classic.buffer_size, classic.hidden) == (2.3e-3, 100_000, (128, 128))
    assert (atari.lr, atari.buffer_size, atari.learning_starts) == (1e-4, 1_000_000, 80_000)
    assert Config(env_id="ALE/Pong-v5", lr=3e-4).resolved().lr == 3e-4        # a given value is kept
    assert fill_unset(Config(env_id="Acrobot-v1"), "dqn", "Acrobot-v1").train_freq == 64


def test_precedence_defaults_then_preset_then_file_then_flags(tmp_path, lab):
    config_file = tmp_path / "fields.toml"
    config_file.write_text('lr = 5e-4\nbatch_size = 48\nseed = 3\n')
    run = tmp_path / "run"
    result = lab("train", "dqn", "--preset", "ALE/*", "--config", config_file, "--batch-size", 40, "--env-id",
                 "CartPole-v1", "--total-steps", 100, "--learning-starts", 50, "--buffer-size", 1000,
                 "--device", "cpu", "--run-dir", run)
    assert result.returncode == 0, result.stderr
    saved = json.loads((run / "config.json").read_text())
    config, options = saved["config"], saved["options"]
    assert config["target_period"] == 1_000          # from the preset (the classic default is 10)
    assert config["lr"] == 5e-4 and options["seed"] == 3   # the file over the preset
    assert config["batch_size"] == 40                # the flag over the file
    assert config["learning_starts"] == 50 and config["gamma"] == 0.99   # flag; field default


@pytest.mark.parametrize("algo, fields", [("dqn", ["--env-id", "CartPole-v1", "--total-steps", 300,
                                                   "--learning-starts", 100]),
                                          ("gan", ["--data", "ring8", "--total-steps", 30]),
                                          ("ddpm", ["--data", "ring8", "--total-steps", 30, "--eval-samples", 16])])
def test_config_json_holds_resolved_values_and_reruns_the_same_experiment(tmp_path, lab, algo, fields):
    first, again, other = tmp_path / "first", tmp_path / "again", tmp_path / "other"
    assert lab("train", algo, *fields, "--device", "cpu", "--deterministic", "--run-dir", first).returncode == 0
    saved = json.loads((first / "config.json").read_text())["config"]
    nulls = [k for k, v in saved.items() if v is None and k not in ("data_dir", "image_size", "env_label")]
    assert nulls == []
    assert lab("train", algo, "--config", first / "config.json", "--run-dir", again).returncode == 0
    assert lab("train", algo, "--config", first / "config.json", "--seed", 2, "--run-dir", other).returncode == 0
    assert json.loads((again / "config.json").read_text())["config"] == saved
    assert json.loads((other / "config.json").read_text())["options"]["seed"] == 2

    def first_row(run):
        return {k: v for k, v in read_metrics(run / "metrics.jsonl")[0].items() if not k.startswith("time/")}
    assert first_row(again) == first_row(first)


@pytest.mark.parametrize("args, words", [
    (["train", "dqn", "--preset", "Pong"], ["no preset 'Pong'", "ALE/*"]),
    (["train", "gan", "--preset", "ALE/*"], ["'ALE/*' is a preset of dqn, ppo, not of gan"]),
    (["train", "dqn", "--config", "missing.json"], ["cannot read the config file"]),
    (["train", "dqn", "--config", "bad.json"], ["'learning_rate', which is not a field of dqn"]),
    (["train", "dqn", "--config", "vae.json"], ["config of a vae run, not of dqn"]),
    (["train", "dqn", "--preset"], ["--preset needs a value"]),
])
def test_bad_presets_and_config_files_are_one_sentence(tmp_path, lab, args, words):
    (tmp_path / "bad.json").write_text('{"learning_rate": 0.1}')
    (tmp_path / "vae.json").write_text('{"algo": "vae", "config": {}, "options": {}}')
    result = lab(*args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert not (tmp_path / "runs").exists()


def test_the_python_api_takes_presets_and_config_files(tmp_path):
    import lab
    run = lab.train("dqn", preset="ALE/*", env_id="CartPole-v1", total_steps=60, learning_starts=40,
                    buffer_size=200, device="cpu", run_dir=tmp_path / "run")
    assert json.loads((run.path / "config.json").read_text())["config"]["target_period"] == 1_000
    with pytest.raises(LabError, match="no preset"):
        lab.train("dqn", preset="nope")
