"""The lab: one trainer for reinforcement learning and generative models.

From Python: ``lab.train(algo, **fields)``, ``lab.load(run_dir)`` (an ``Agent`` with ``predict`` /
``evaluate``, or a ``Pipeline`` that draws samples), ``lab.resume(run_dir)`` and ``lab.sweep(algo, seeds=...,
grid=...)``; see ``lab.api``.
"""
from lab.errors import LabError
from lab.media import Arrays, Image, Video

_API = ("train", "load", "resume", "sweep", "Agent", "Pipeline", "Run")

__all__ = ["LabError", "Arrays", "Image", "Video", *_API]


def __getattr__(name: str):
    if name in _API:            # imported on first use: `lab --help` and the algorithms stay light
        from lab import api
        return getattr(api, name)
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
