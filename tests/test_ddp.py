"""Data-parallel training on real algorithms: every registered algorithm trains under a 2-process CPU
(gloo) torchrun job, and its processes end with the same parameters although each saw different data
(so the gradients were averaged: a network trained through its raw module instead of its DDP wrapper
would drift apart). Every job must also end cleanly: exit status 0, no abort at interpreter shutdown, and
no communication thread left once the runtime is closed (the worker checks)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import lab_subprocess_env
from tiny_configs import TINY

WORKER = Path(__file__).parent / "ddp_worker.py"


def train(algo: str, steps: int, out: Path, processes: int) -> list[dict[str, torch.Tensor]]:
    out.mkdir(exist_ok=True)
    command = [sys.executable, str(WORKER), algo, str(steps), str(out)]
    if processes > 1:
        command[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    result = subprocess.run(command, env=lab_subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "terminate called" not in result.stderr, result.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(processes)]


_TWO_PROCESS_RUNS: dict[str, list[dict[str, torch.Tensor]]] = {}


def trained_by_two_processes(algo: str, tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    """The 2-process job of ``algo`` (4 steps), run once per test process and shared by the tests below."""
    if algo not in _TWO_PROCESS_RUNS:
        _TWO_PROCESS_RUNS[algo] = train(algo, 4, tmp_path_factory.mktemp(f"ddp-{algo}"), processes=2)
    return _TWO_PROCESS_RUNS[algo]


@pytest.mark.parametrize("algo", sorted(TINY))
def test_two_processes_stay_in_step(algo, tmp_path_factory):
    rank0, rank1 = trained_by_two_processes(algo, tmp_path_factory)
    assert rank0 and rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between the two processes"


MATCH_ONE_PROCESS = ["ddpm", "pixelcnn", "toy", "vae"]
"""Algorithms whose k processes compute exactly the gradient of one process with the same global batch:
every process draws the same global batch and noise and keeps its rows (DESIGN.md, data sharding)."""


@pytest.mark.parametrize("algo", MATCH_ONE_PROCESS)
def test_two_processes_match_one_with_the_same_global_batch(algo, tmp_path, tmp_path_factory):
    (one,) = train(algo, 4, tmp_path / "one", processes=1)
    two, _ = trained_by_two_processes(algo, tmp_path_factory)
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5, rtol=0), name
