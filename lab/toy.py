"""A tiny algorithm for trying and testing the trainer: linear regression by minibatch SGD.

Data come from y = x·w* + noise with x ~ N(0, I). Every process draws the same global batch from
a seeded stream and keeps its shard, so a torchrun job matches a single process with the same
global batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lab.config import positive, non_negative
from lab.runtime import Runtime, unwrap


@dataclass(frozen=True)
class Config:
    """Linear regression by SGD with momentum."""

    dim: int = 16
    """Number of input features."""
    batch_size: int = 64
    """Global minibatch size (split across torchrun processes)."""
    lr: float = 0.05
    """Learning rate of SGD."""
    momentum: float = 0.9
    """SGD momentum."""
    noise: float = 0.1
    """Standard deviation of the label noise."""
    total_steps: int = 2000
    """Optimizer steps to train for."""

    def run_label(self) -> str | None:
        """What the run folder is named after: nothing (runs/toy-<time>-s<seed>), the task is synthetic."""
        return None

    def __post_init__(self):
        positive(self, "dim", "batch_size", "lr", "total_steps")
        non_negative(self, "momentum", "noise")


class Algorithm:
    step_size = 1
    best_metric = ("eval/mse", "min")

    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        self.config, self.rt, self.training = config, runtime, training
        weights = torch.Generator().manual_seed(runtime.derive_seed("task", per_rank=False))
        self.w_true = torch.randn(config.dim, generator=weights)
        self.model = runtime.wrap(torch.nn.Linear(config.dim, 1))   # the one handle: train through it
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum)
        self.data = torch.Generator().manual_seed(runtime.derive_seed("data", per_rank=False))

    def _batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, self.config.dim, generator=generator)
        y = x @ self.w_true + self.config.noise * torch.randn(n, generator=generator)
        return x, y

    def train_step(self, step: int) -> dict:
        x, y = self._batch(self.config.batch_size, self.data)
        rows = self.rt.shard(self.config.batch_size)
        x, y = x[rows].to(self.rt.device), y[rows].to(self.rt.device)
        with self.rt.autocast():
            prediction = self.model(x).squeeze(-1)
        loss = F.mse_loss(prediction.float(), y)   # mean squared error, the regression loss
        self.rt.optimize(loss, self.optimizer)
        return {"train/loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, options=None, *, during_training: bool = False) -> dict:
        x, y = self._batch(4096, torch.Generator().manual_seed(self.rt.derive_seed("eval", per_rank=False)))
        model = unwrap(self.model)
        prediction = model(x.to(self.rt.device)).squeeze(-1).float().cpu()
        weight_error = (model.weight.detach().cpu().squeeze(0) - self.w_true).norm()
        return {"eval/mse": F.mse_loss(prediction, y).item(), "eval/weight_error": weight_error.item()}

    def state_dict(self) -> dict:
        return {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "data_rng": self.data.get_state()}

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        if not self.training:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.data.set_state(state["data_rng"])
