"""The one explicit table of algorithms. Adding an algorithm is one line here.

Each entry names a module that defines:

    Config          a frozen dataclass of hyperparameters, documented field by field, with a
                    ``total_steps`` field (what a step counts is the algorithm's to say)
    Algorithm       ``Algorithm(config, runtime)`` following ``lab.protocol.Algorithm``
    EvalOptions     optional dataclass of ``lab eval`` flags (passed to ``evaluate``)
    SampleOptions   optional dataclass of ``lab sample`` flags (passed to ``sample``)

Modules are imported only when their algorithm is used, so ``lab --help`` stays fast.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from types import ModuleType

from lab.errors import LabError


@dataclass(frozen=True)
class AlgoSpec:
    module: str
    summary: str

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


ALGORITHMS: dict[str, AlgoSpec] = {
    "toy": AlgoSpec("lab.toy", "linear regression by minibatch SGD: a tiny model to try the trainer on"),
}


def get(name: str) -> tuple[AlgoSpec, ModuleType]:
    """The spec and imported module of an algorithm, or a clear error naming the close matches."""
    if name not in ALGORITHMS:
        close = difflib.get_close_matches(name, ALGORITHMS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise LabError(f"unknown algorithm {name!r}; known: {', '.join(ALGORITHMS)}.{hint}")
    spec = ALGORITHMS[name]
    return spec, spec.load()


def describe() -> list[tuple[str, str]]:
    return [(name, spec.summary) for name, spec in ALGORITHMS.items()]
