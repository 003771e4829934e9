"""The protocol, checked for every algorithm in the registry: built from a tiny config, it satisfies
``lab.protocol.Algorithm``, runs two steps through the headless trainer, saves a state that reloads with
``weights_only=True`` into a fresh instance, builds lean for inference, and its config round-trips."""
from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from lab import registry
from lab.checkpoint import leaves
from lab.config import from_dict, to_dict
from lab.protocol import Algorithm
from lab.runtime import RunOptions, Runtime
from lab.session import _close, in_memory_trainer, resolve
from lab.trainer import Trainer
from tiny_configs import TINY



CHANGED_BY_RESTORE = {"dqn": {"replay.done"}, "sac": {"replay.done"}, "td3": {"replay.done"}}
"""State a restore changes on purpose: the off-policy algorithms' environments cannot be saved, so the buffer
closes the episodes they were in (their last slots are marked done)."""


CHEAP_EVAL = {"dqn": dict(episodes=1), "reinforce": dict(episodes=1), "actor-critic": dict(episodes=1),
              "a2c": dict(episodes=1), "ppo": dict(episodes=1), "sac": dict(episodes=1), "td3": dict(episodes=1),
              "vae": dict(k=2, n=16, scores=False), "gan": dict(n=16), "ddpm": dict(n=16, steps=5),
              "pixelcnn": dict(n=4, scores=False)}
"""The smallest `lab eval` options of each algorithm that has any."""


def test_every_registered_algorithm_has_a_tiny_config_here():
    assert set(TINY) == set(registry.ALGORITHMS)


def _state_bytes(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("algo", sorted(TINY))
def test_the_protocol_holds(algo):
    _, module = registry.get(algo)
    config = resolve(module.Config(**TINY[algo]))
    two_steps = None
    runtime = Runtime(RunOptions(device="cpu", seed=0))
    algorithm = module.Algorithm(config, runtime)
    try:
        assert isinstance(algorithm, Algorithm)
        assert algorithm.step_size >= 1
        assert algorithm.best_metric is None or algorithm.best_metric[1] in ("max", "min")
        two_steps = 2 * algorithm.step_size
        config = dataclasses.replace(config, total_steps=two_steps)
        trainer = Trainer(algo, config, RunOptions(device="cpu", eval_every=10**9), runtime, algorithm)
        trainer.fit()                                    # headless: two steps, one evaluation at the end
        assert trainer.step == two_steps and len(trainer.history) == 1
        state = algorithm.state_dict()
        eval_options = module.EvalOptions(**CHEAP_EVAL[algo]) if algo in CHEAP_EVAL else None
        with runtime.isolated_rng():
            algorithm.evaluate(eval_options, during_training=False)   # `lab eval`: changes no saved state
        after = dict(leaves(algorithm.state_dict()))
        for path, value in leaves(state):
            assert (torch.equal(value, after[path]) if isinstance(value, torch.Tensor)
                    else value == after[path]), path
        reloaded = torch.load(io.BytesIO(_state_bytes(state)), weights_only=True)
    finally:
        _close(algorithm)

    fresh = module.Algorithm(config, Runtime(RunOptions(device="cpu", seed=1)))
    try:
        fresh.load_state_dict(reloaded)
        restored = dict(leaves(fresh.state_dict()))
        for path, value in leaves(state):                # the whole state comes back
            if path in CHANGED_BY_RESTORE.get(algo, ()):
                continue
            assert (torch.equal(value, restored[path]) if isinstance(value, torch.Tensor)
                    else value == restored[path]), path
    finally:
        _close(fresh)

    lean = module.Algorithm(config, Runtime(RunOptions(device="cpu", seed=0)), training=False)
    try:
        lean.load_state_dict(reloaded)
        assert not hasattr(lean, "optimizer") or not lean.optimizer.state    # no optimizer state restored
        assert getattr(lean, "envs", None) is None and not hasattr(lean, "replay")
    finally:
        _close(lean)

    assert from_dict(module.Config, to_dict(config)) == config              # tuples, paths, None survive


@pytest.mark.parametrize("algo", sorted(TINY))
def test_configs_name_their_run_folder(algo):
    _, module = registry.get(algo)
    config = module.Config(**TINY[algo])
    expected = getattr(config, "env_id", None) or getattr(config, "data", None)   # what runs/ folders show
    assert config.run_label() == expected


@pytest.mark.parametrize("algo", sorted(TINY))
def test_algorithms_hold_the_resolved_config(algo):
    """Resolving is idempotent, and the algorithm holds the session's resolved config whether the session
    built it or a caller passed the raw Config to ``Algorithm`` directly."""
    _, module = registry.get(algo)
    config = module.Config(**TINY[algo])
    resolved = resolve(config)
    assert resolve(resolved) == resolved
    with in_memory_trainer(algo, config, RunOptions(device="cpu", seed=0)) as trainer:
        assert trainer.algorithm.config == resolved
    by_hand = module.Algorithm(config, Runtime(RunOptions(device="cpu", seed=0)), training=False)
    try:
        assert by_hand.config == resolved
    finally:
        _close(by_hand)


@pytest.mark.parametrize("algo", list(registry.ALGORITHMS))
def test_export_formats_are_declared_by_the_module(algo):
    """`lab export` learns the formats beyond safetensors from the module's EXPORTS, never by guessing."""
    exports = getattr(registry.get(algo)[1], "EXPORTS", {})
    assert isinstance(exports, dict) and "safetensors" not in exports
    assert all(isinstance(name, str) and callable(make) for name, make in exports.items())
