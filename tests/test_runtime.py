"""The runtime's named seed streams and its one-handle-per-network guard."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from lab import registry
from lab.ddp import init_process_group
from lab.runtime import RunOptions, Runtime, derive_seed, unwrap
from lab.session import _close, resolve
from tiny_configs import TINY


def test_derived_seeds_are_stable_across_processes_and_versions():
    # Values computed once (BLAKE2b of "seed/rank/name") and written here: they change only if the hash
    # changes, which would silently change every run's streams. Python's hash() is salted per process
    # and would fail this test in a fresh interpreter.
    assert derive_seed(0, "eval") == 4040371783265583306
    assert derive_seed(0, "envs/0", rank=1) == 5093694549386799060
    assert derive_seed(7, "replay", rank=3) == 4855250871455309992


def test_derived_seeds_fit_63_bits_and_differ_by_seed_rank_and_name():
    seeds = {derive_seed(seed, name, rank) for seed in range(3) for rank in range(4)
             for name in ("eval", "envs/0", "envs/1", "replay", "noise", "real-data")}
    assert len(seeds) == 3 * 4 * 6                                # no two streams share a seed
    assert all(0 <= s < 2**63 for s in seeds)
    # seed + k used to give stream k of rank r the seed of rank r + k; hashed names do not
    assert derive_seed(0, "noise", rank=1) != derive_seed(1, "noise", rank=0)


def test_runtime_streams_depend_on_the_rank_except_shared_ones(monkeypatch):
    runtimes = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        runtimes.append(Runtime(RunOptions(device="cpu", seed=5)))
    rank0, rank1 = runtimes
    assert rank1.rank == 1
    assert rank0.derive_seed("envs/0") != rank1.derive_seed("envs/0")
    assert rank0.derive_seed("eval", per_rank=False) == rank1.derive_seed("eval", per_rank=False) \
        == derive_seed(5, "eval")                                  # what benchmarks use for their peers


@pytest.mark.parametrize("algo, target", [("a2c", "rl.pg.common"), ("dqn", "rl.dqn.algo")])
def test_evaluation_episodes_do_not_depend_on_the_rank(algo, target, monkeypatch):
    played = []

    def run_episodes(policy, env_id, episodes, seed, **options):
        played.append(seed)
        return np.zeros(episodes)

    monkeypatch.setattr(f"{target}.run_episodes", run_episodes)
    _, module = registry.get(algo)
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        algorithm = module.Algorithm(module.Config(**TINY[algo]), Runtime(RunOptions(device="cpu", seed=3)),
                                     training=False)
        algorithm.evaluate(module.EvalOptions(episodes=1))
    assert played == [derive_seed(3, "eval")] * 2


def test_unwrap_sees_through_ddp_and_compile(gloo):
    net = torch.nn.Linear(2, 1)
    assert unwrap(net) is net
    assert unwrap(torch.compile(net)) is net                     # compiles lazily: nothing is compiled here
    assert unwrap(torch.compile(torch.nn.parallel.DistributedDataParallel(net))) is net


@pytest.fixture
def gloo(tmp_path):
    """A one-process gloo group, so that DistributedDataParallel can wrap a network on the CPU."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield
    finally:
        if dist.is_initialized():          # Runtime.close() may have ended it
            dist.destroy_process_group()


def gloo_threads() -> list[str]:
    names = (Path(f"/proc/self/task/{task}/comm").read_text().strip() for task in os.listdir("/proc/self/task"))
    return [name for name in names if "gloo" in name]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk, self.head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.trunk(x)))


def test_training_through_the_raw_module_under_ddp_trips_the_guard(gloo, monkeypatch):
    monkeypatch.setattr(Runtime, "distributed", property(lambda self: True))   # wrap() uses DDP
    rt = Runtime(RunOptions(device="cpu"))
    net = Net()
    wrapped = rt.wrap(net)
    assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel) and unwrap(wrapped) is net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x = torch.randn(5, 3)

    rt.optimize(wrapped(x).pow(2).mean(), optimizer)               # through the wrapper: fine
    with torch.no_grad():
        net(x)                                                     # evaluation without gradients: fine
    net.eval()
    net(x)                                                         # eval mode: fine
    net.train()
    rt.optimize(wrapped(x).pow(2).mean(), optimizer)

    with pytest.raises(AssertionError, match="outside the DistributedDataParallel wrapper"):
        rt.optimize(net(x).pow(2).mean(), optimizer)               # the raw module: no all-reduce
    with pytest.raises(AssertionError, match="Linear"):
        rt.optimize(net.head(net.trunk(x)).pow(2).mean(), optimizer)   # its submodules: the same
    rt.optimize(wrapped(x).pow(2).mean(), optimizer)               # the guard resets after tripping


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads through /proc (Linux)")
def test_close_releases_the_wrappers_and_joins_the_process_groups_threads(gloo, monkeypatch):
    """A wrapper held the process group past destroy_process_group, so gloo's threads ran on into interpreter
    shutdown (where they aborted a process now and then); close() releases it and the threads are joined."""
    monkeypatch.setattr(Runtime, "distributed", property(lambda self: True))
    rt = Runtime(RunOptions(device="cpu"))
    net = Net()
    wrapped = rt.wrap(net)
    rt.optimize(wrapped(torch.randn(5, 3)).pow(2).mean(), torch.optim.SGD(net.parameters(), lr=0.1))
    assert gloo_threads()
    rt.close()
    assert not dist.is_initialized() and not gloo_threads()
    x = torch.randn(5, 3)
    assert torch.equal(wrapped(x), net(x)) and "process_group" not in vars(wrapped)   # forwards to its module


@pytest.mark.parametrize("algo", sorted(TINY))
def test_every_algorithm_trains_through_its_wrappers(algo, gloo, monkeypatch):
    """Under (a one-process) DDP no algorithm computes a loss through a raw module: the guard stays quiet."""
    monkeypatch.setattr(Runtime, "distributed", property(lambda self: True))
    _, module = registry.get(algo)
    algorithm = module.Algorithm(resolve(module.Config(**TINY[algo])), Runtime(RunOptions(device="cpu")))
    try:
        step = 0
        while step < getattr(algorithm, "learning_from", 0) + 3 * algorithm.step_size:   # DQN: past learning starts
            algorithm.train_step(step)
            step += algorithm.step_size
    finally:
        _close(algorithm)


def test_an_algorithm_training_through_its_raw_network_is_refused(gloo, monkeypatch):
    """The mistake the guard exists for: A2C computing its loss with the network instead of the wrapper."""
    monkeypatch.setattr(Runtime, "distributed", property(lambda self: True))
    _, module = registry.get("a2c")
    algorithm = module.Algorithm(module.Config(**TINY["a2c"]), Runtime(RunOptions(device="cpu")))
    try:
        algorithm.train_step(0)
        algorithm.train_net = algorithm.net                           # the raw module: no all-reduce
        with pytest.raises(AssertionError, match="ActorCritic ran forward with gradients outside"):
            algorithm.train_step(algorithm.step_size)
    finally:
        _close(algorithm)
