"""Every algorithm trains a few steps on the device under test, in fp32 and bf16 (and compiled on a GPU).

`LAB_TEST_DEVICE=cuda python -m pytest -m device` runs them on a GPU (``lab bench device`` does); by
default they run on the CPU, where ``torch.compile`` is left out (it needs a compiler toolchain and minutes).
"""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from lab import registry
from lab.runtime import RunOptions, Runtime
from lab.session import _close, resolve
from lab.trainer import Trainer
from tiny_configs import TINY

DEVICE = os.environ.get("LAB_TEST_DEVICE", "cpu")
VARIANTS = [("fp32", False), ("bf16", False)] + ([("fp32", True), ("bf16", True)] if DEVICE == "cuda" else [])

pytestmark = [pytest.mark.device,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA GPU")]


@pytest.mark.parametrize("precision, compiled", VARIANTS, ids=[f"{p}{'-compile' if c else ''}" for p, c in VARIANTS])
@pytest.mark.parametrize("algo", sorted(TINY))
def test_an_algorithm_trains_on_the_device(algo, precision, compiled):
    _, module = registry.get(algo)
    options = RunOptions(device=DEVICE, precision=precision, compile=compiled, seed=0, eval_every=10**9)
    runtime = Runtime(options)
    algorithm = module.Algorithm(resolve(module.Config(**TINY[algo])), runtime)
    try:
        config = dataclasses.replace(resolve(module.Config(**TINY[algo])), total_steps=2 * algorithm.step_size)
        trainer = Trainer(algo, config, options, runtime, algorithm)
        trainer.fit()                               # the NaN guard stops a run whose metrics go non-finite
        assert trainer.step == config.total_steps
        params = [p for m in vars(algorithm).values() if isinstance(m, torch.nn.Module) for p in m.parameters()]
        assert params and all(p.device.type == torch.device(DEVICE).type for p in params)
    finally:
        _close(algorithm)


def test_the_replay_buffer_lives_on_the_training_device():
    from rl.dqn.algo import Algorithm, Config
    runtime = Runtime(RunOptions(device=DEVICE))
    agent = Algorithm(resolve(Config(**{**TINY["dqn"], "buffer_device": "train"})), runtime)
    try:
        assert agent.replay.device.type == torch.device(DEVICE).type
    finally:
        agent.close()
