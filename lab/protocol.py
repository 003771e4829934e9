"""The protocol every learning algorithm follows; the trainer needs nothing else.

An algorithm never opens files or prints: it returns numbers (and ``lab.Image``/``Video``/``Arrays``
values), and the trainer records them.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Algorithm(Protocol):
    step_size: int
    """How far one ``train_step`` advances the step counter (for example the number of vector
    environments for an RL algorithm that steps all of them once; 1 for one optimizer step). The trainer
    reads it after each ``train_step``, so a last, shorter step can stop a run at its ``total_steps``."""

    best_metric: tuple[str, str] | None
    """(metric key, "max" or "min") that decides checkpoints/best.pt, or None for no best.pt; an attribute
    of the instance (it may depend on the config, e.g. no best.pt for a GAN on a 2-D toy)."""

    # optional: ``learning_from: int``, the step of the first update (DQN's learning starts); the
    # trainer warns when a run ends before it.

    def train_step(self, step: int) -> dict[str, Any]:
        """One unit of work (an env step batch + update, or one optimizer step); returns metrics.
        Values may be floats or 0-d tensors (left on the device: the trainer syncs only when it logs)."""

    def evaluate(self, options: Any = None, *, during_training: bool = False) -> dict[str, Any]:
        """Evaluation metrics (``eval/...``) and optional media. ``options``: the module's ``EvalOptions``
        (None: the run's own evaluation settings). The trainer passes ``during_training=True`` (it may keep
        what a training evaluation records, such as the GAN's snapshots for its training video, and skip
        what only a final evaluation computes); `lab eval` and ``lab.load(...).evaluate`` pass False, and
        then evaluating changes nothing ``state_dict`` returns."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as tensors and plain Python values (no numpy arrays,
        no custom classes: checkpoints load with ``weights_only=True``)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
