"""Hostile values, third pass: wrongly typed config values (CLI, TOML, config.json, the Python API),
old, random and damaged checkpoints and a deflate bomb. Each is one `lab: error:` sentence (a `LabError` in
Python, exit 2 on the command line) naming what is wrong, with nothing on disk changed."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import test_reliability as reliability
import torch
from test_reliability import TOY, assert_one_line_error, snapshot

from conftest import lab_subprocess_env
from lab import checkpoint

toy_run = reliability.toy_run     # the fixture: a 40-step toy run with checkpoints


# ------------------------------------------------------------------ wrongly typed values
@pytest.mark.parametrize("name, content, words", [
    ("fast.json", '{"lr": "fast"}', ("lr", "a number")),
    ("many.toml", 'batch_size = "many"\n', ("batch_size", "an integer")),
    ("flag.toml", 'deterministic = "yes"\n', ("deterministic", "true or false")),
    ("dims.json", '{"dim": [1, 2]}', ("dim", "an integer")),
])
def test_a_wrongly_typed_config_file_value_is_one_sentence(tmp_path, lab, name, content, words):
    (tmp_path / name).write_text(content)
    assert_one_line_error(lab(*TOY, "--config", tmp_path / name, "--run-dir", tmp_path / "run"), name, *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("fields, words", [({"lr": "fast"}, ("lr", "a number")),
                                           ({"batch_size": 2.5}, ("batch_size", "an integer")),
                                           ({"seed": True}, ("seed", "an integer"))])
def test_a_wrongly_typed_api_value_is_a_lab_error(tmp_path, fields, words):
    import lab
    with pytest.raises(lab.LabError) as error:
        lab.train("toy", device="cpu", run_dir=tmp_path / "run", **fields)
    assert all(word in str(error.value) for word in words), error.value
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("old, new, words", [('"created"', '"resumed": "not a list", "created"', "'resumed'"),
                                              ('"total_steps": 40', '"total_steps": ' + "9" * 5000, "config.json")])
def test_a_config_json_with_a_bad_resume_history_or_a_huge_number_is_one_sentence(toy_run, lab, old, new, words):
    text = (toy_run / "config.json").read_text()
    assert old in text
    (toy_run / "config.json").write_text(text.replace(old, new, 1))
    before = snapshot(toy_run)
    for args in (["resume", toy_run, "--total-steps", 60], ["plot", toy_run], ["eval", toy_run]):
        assert_one_line_error(lab(*args), words)
        assert snapshot(toy_run) == before


# ------------------------------------------------------------------ checkpoints
def _write_state(path: Path, change) -> None:
    state = checkpoint.load(path)
    change(state)
    torch.save(state, path)


@pytest.mark.parametrize("change, words", [
    (lambda p: _write_state(p, lambda s: s.update(format="lab-checkpoint-v1")), "older lab"),
    (lambda p: p.write_bytes(os.urandom(5000)), "corrupt"),
    (lambda p: p.write_bytes(b"\x00" * 64 + p.read_bytes()[64:]), "corrupt"),
])
def test_old_random_and_damaged_checkpoints_are_named_for_what_they_are(toy_run, lab, change, words):
    change(toy_run / "checkpoints" / "last.pt")
    before = snapshot(toy_run)
    for args in (["eval", toy_run, "--checkpoint", "last"], ["resume", toy_run, "--total-steps", 60]):
        result = lab(*args)
        assert_one_line_error(result, "last.pt", words)
        assert "arbitrary code" not in result.stderr and snapshot(toy_run) == before


def test_a_deflate_bomb_checkpoint_is_refused_from_its_declared_sizes(toy_run, lab):
    """A record deflated from 256 MiB of zeros to a few hundred KB: refused from the archive's directory
    (what the record declares), before torch inflates anything."""
    last = toy_run / "checkpoints" / "last.pt"
    with zipfile.ZipFile(last) as original:
        records = [(info, original.read(info)) for info in original.infolist()]
    with zipfile.ZipFile(last, "w") as bomb:
        for info, content in records:
            bomb.writestr(info, content)
        record = zipfile.ZipInfo("archive/data/99")
        record.compress_type = zipfile.ZIP_DEFLATED
        with bomb.open(record, "w", force_zip64=True) as f:
            for _ in range(256):
                f.write(bytes(1 << 20))
    assert last.stat().st_size < 32 << 20
    before = snapshot(toy_run)
    result = subprocess.run([sys.executable, "-m", "lab", "eval", str(toy_run), "--checkpoint", "last"],
                            env=lab_subprocess_env(), capture_output=True, text=True, timeout=120)
    assert_one_line_error(result, "last.pt", "declares 268,435,456 bytes compressed")
    assert snapshot(toy_run) == before
