"""The feature extractor of the sample-quality metrics: a small convolutional classifier per image set.

Its penultimate layer (global-average-pooled conv features, ``FEATURES`` wide) gives the features of
the Fréchet distance and of k-NN precision/recall; its softmax gives the Inception Score. Train it
like any algorithm (``lab train classifier --data mnist --data-dir DIR``); ``score_images`` uses the
cached copy for that data set (see ``feature_classifier``): for digits it trains one itself on first
use (seconds, deterministic), for the other sets it takes a run you trained and installed with
``python -m generative.metrics.classifier install RUN_DIR``.
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from generative.data import IMAGE_DATASETS, NATIVE_SHAPE, BatchIterator, check_dataset, load_images
from lab.config import positive, require, to_dict
from lab.errors import LabError
from lab.runtime import RunOptions, Runtime, rng_state, set_rng_state, unwrap

VERSION = "v1"
"""Bump when the network or its training changes: cached classifiers of another version are not used,
so every model scored under one version is scored by the same network."""


@dataclass(frozen=True)
class Config:
    """A small conv classifier whose features and softmax score generated images (FID, IS, precision/recall)."""

    data: str = "digits"
    """Image set: digits, mnist, fashion-mnist or cifar10."""
    data_dir: Path | None = None
    """Folder holding the MNIST / Fashion-MNIST / CIFAR-10 files (default $LAB_DATA_DIR, else ./data)."""
    width: int = 32
    """Channels of the first conv block (doubled in each of the next two)."""
    batch_size: int = 64
    """Minibatch size."""
    lr: float = 2e-3
    """AdamW learning rate (decayed to 0 along a cosine)."""
    weight_decay: float = 5e-4
    """Decoupled weight decay (AdamW)."""
    total_steps: int = 200
    """Optimizer steps (one minibatch each): 200 is about 9 epochs of digits (seconds on a CPU, 99.4 % test
    accuracy); MNIST / Fashion-MNIST / CIFAR-10 need about 5000."""

    def run_label(self) -> str | None:
        """What the run folder is named after (runs/<algo>-<label>-<time>-s<seed>): the data set."""
        return self.data

    def __post_init__(self):
        check_dataset(self.data, IMAGE_DATASETS)
        positive(self, "width", "batch_size", "lr", "total_steps")
        require(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}.")


class ConvClassifier(nn.Module):
    """Three conv blocks (3x3 conv, batch norm, ReLU; width, 2 width, 4 width channels), 2x2 max-pooling
    after the first two, then global average pooling: the pooled vector is the feature, a linear layer
    gives the class logits."""

    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.trunk = nn.Sequential(
            *block(channels, width), nn.MaxPool2d(2),
            *block(width, 2 * width), nn.MaxPool2d(2),
            *block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features of images in [0, 1]."""
        return self.trunk(images - 0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class Algorithm:
    step_size = 1
    best_metric = ("eval/accuracy", "max")

    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        self.config, self.rt, self.training = config, runtime, training
        train = load_images(config.data, "train", config.data_dir)
        self.test = load_images(config.data, "test", config.data_dir)
        self.network = runtime.wrap(ConvClassifier(train.images.shape[1], train.num_classes, config.width))
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        def cosine(step: int) -> float:   # the learning rate decays to 0 along half a cosine
            return 0.5 * (1.0 + math.cos(math.pi * min(step, config.total_steps) / config.total_steps))
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cosine)
        self.batches = BatchIterator(train.images, train.labels, batch_size=config.batch_size,
                                     seed=runtime.rank_seed, device=runtime.device)

    def train_step(self, step: int) -> dict:
        images, labels = next(self.batches)
        self.network.train()
        with self.rt.autocast():
            logits = self.network(images)
        loss = F.cross_entropy(logits.float(), labels)   # negative log-likelihood of the true class
        self.rt.optimize(loss, self.optimizer)
        self.schedule.step()
        return {"train/loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, options=None, *, during_training: bool = False) -> dict:
        logits = predict_logits(unwrap(self.network), self.test.images, self.rt.device)
        labels = self.test.labels.to(logits.device)
        return {"eval/accuracy": (logits.argmax(1) == labels).float().mean().item(),
                "eval/loss": F.cross_entropy(logits, labels).item()}

    def state_dict(self) -> dict:
        return {"network": unwrap(self.network).state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "batches": self.batches.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.network).load_state_dict(state["network"])
        if not self.training:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.batches.load_state_dict(state["batches"])


@torch.no_grad()
def predict_logits(network: ConvClassifier, images: torch.Tensor, device, batch: int = 1000) -> torch.Tensor:
    network.eval()
    return torch.cat([network(images[i:i + batch].to(device)).float() for i in range(0, len(images), batch)])


@torch.no_grad()
def features_and_probs(network: ConvClassifier, images: torch.Tensor, device,
                       batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, F), softmax probabilities (N, K)) of images in [0, 1], in batches."""
    network.eval()
    features, probs = [], []
    for i in range(0, len(images), batch):
        f = network.features(images[i:i + batch].to(device)).float()
        features.append(f)
        probs.append(network.head(f).softmax(1))
    return torch.cat(features), torch.cat(probs)


# ============================================================================ the cache
def cache_dir() -> Path:
    """$LAB_CACHE, else ~/.cache/lab."""
    return Path(os.environ.get("LAB_CACHE") or Path.home() / ".cache" / "lab")


def cache_path(data: str) -> Path:
    return cache_dir() / "classifiers" / f"{data}-{VERSION}.pt"


_LOADED: dict[tuple[str, str], ConvClassifier] = {}


def feature_classifier(data: str, device="cpu") -> ConvClassifier:
    """The cached classifier of a data set (the same network for every model scored under VERSION).

    digits: trained here on first use with the default Config, seed 0, on the CPU, and cached.
    mnist / fashion-mnist / cifar10: the one installed from a ``lab train classifier`` run.
    """
    check_dataset(data, IMAGE_DATASETS)
    path = cache_path(data)
    key = (str(path), str(device))
    if key in _LOADED:
        return _LOADED[key]
    if not path.is_file():
        if data != "digits":
            raise LabError(
                f"no {data} feature classifier in {path.parent}: train one with `lab train classifier --data {data} "
                f"--data-dir DIR --total-steps 5000`, then `python -m generative.metrics.classifier install RUN_DIR`.")
        _save(path, train_default("digits"))
    saved = torch.load(path, map_location="cpu", weights_only=True)
    channels = NATIVE_SHAPE[data][0]
    network = ConvClassifier(channels, saved["num_classes"], saved["config"]["width"])
    network.load_state_dict(saved["network"])
    network.to(device).eval().requires_grad_(False)
    _LOADED[key] = network
    return network


class _LocalRuntime(Runtime):
    """A one-process CPU runtime for training inside another run: it ignores torchrun's variables (no
    DDP inside rank 0's evaluation) and leaves global flags and random generators alone."""

    def __init__(self, seed: int):
        self.options = RunOptions(seed=seed, device="cpu")
        self.world_size, self.rank, self.local_rank = 1, 0, 0
        self.device, self.amp_dtype = torch.device("cpu"), None
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.seed = self.rank_seed = seed
        self._wrappers = []


def train_default(data: str) -> dict:
    """Train the default classifier of ``data`` deterministically (seed 0, on the CPU) without
    disturbing the caller's random streams; returns what the cache holds."""
    state = rng_state()
    try:
        torch.manual_seed(0)   # the network's initial weights
        algorithm = Algorithm(Config(data=data), _LocalRuntime(seed=0))
        with torch.enable_grad():
            for step in range(algorithm.config.total_steps):
                algorithm.train_step(step)
        accuracy = algorithm.evaluate()["eval/accuracy"]
        return _entry(unwrap(algorithm.network), algorithm.config, accuracy)
    finally:
        set_rng_state(state)


def _entry(network: ConvClassifier, config: Config, accuracy: float) -> dict:
    return {"version": VERSION, "data": config.data, "config": to_dict(replace(config, data_dir=None)),
            "num_classes": network.head.out_features, "test_accuracy": float(accuracy),
            "network": {k: v.detach().cpu() for k, v in network.state_dict().items()}}


def _save(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(entry, temporary)
    temporary.replace(path)   # atomic: concurrent first uses never see half a file


def install(run_dir: Path, which: str = "best") -> Path:
    """Copy a classifier run's network (best checkpoint) into the cache that ``score_images`` reads."""
    from lab.session import load_run
    run, saved, module, config, options, state = load_run(Path(run_dir), which)
    if saved["algo"] != "classifier":
        raise LabError(f"{run_dir} is a {saved['algo']!r} run; install takes a classifier run.")
    network = ConvClassifier(NATIVE_SHAPE[config.data][0], 10, config.width)
    network.load_state_dict(state["algorithm"]["network"])
    test = load_images(config.data, "test", config.data_dir)
    accuracy = (predict_logits(network, test.images, "cpu").argmax(1) == test.labels).float().mean().item()
    _save(cache_path(config.data), _entry(network, config, accuracy))
    _LOADED.clear()
    import generative.metrics   # its memo of features from the previous network is stale now
    generative.metrics._CACHE.clear()
    return cache_path(config.data)


def main(argv: list[str] | None = None) -> int:
    """python -m generative.metrics.classifier install RUN_DIR"""
    import argparse
    parser = argparse.ArgumentParser(prog="python -m generative.metrics.classifier",
                                     description="Install a classifier run as the feature extractor of its data set.")
    parser.add_argument("command", choices=["install"])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default="best")
    args = parser.parse_args(argv)
    try:
        path = install(args.run_dir, args.checkpoint)
    except LabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"installed {path} (test accuracy {torch.load(path, weights_only=True)['test_accuracy']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
