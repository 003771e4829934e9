"""PixelCNN (van den Oord et al., 2016): an autoregressive image model with an exact likelihood.

Each pixel gets a softmax over the data's discrete levels given every pixel before it in raster
order (the gated network of model.py), so log p(x) = Σ_i log p(x_i | x_<i) is computed exactly in one
pass and training maximizes it directly (cross-entropy per pixel). Sampling draws the pixels one at a
time, one network pass each. With --binarize the model sees binary images: each training batch is
drawn afresh as Bernoulli(gray levels) and the test split is the fixed binarization the VAE is scored
on, so the nats are comparable. --conditional adds a class embedding to every gate: p(x | y).

Evaluation reports, on the test split, the exact negative log-likelihood in nats per image and bits
per dimension; ``lab eval`` adds the sample scores of generative.metrics. One step is one optimizer
step on a minibatch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from generative.data import IMAGE_DATASETS, NATIVE_SHAPE, BatchIterator, ImageSet, check_dataset, load_images
from generative.likelihood import bits_per_dim
from generative.pixelcnn.model import PixelCNN, log_prob
from generative.plots import enlarged, samples_grid
from lab.config import non_negative, positive, require
from lab.media import Arrays
from lab.memory import require_batch
from lab.progress import Progress
from lab.runtime import Runtime, unwrap


@dataclass(frozen=True)
class Config:
    """Gated PixelCNN trained on the exact log-likelihood (van den Oord et al., 2016)."""

    data: str = "digits"
    """One-channel image data set with discrete levels: digits (17 levels, ships with scikit-learn),
    mnist or fashion-mnist (256 levels, files under --data-dir)."""
    data_dir: Path | None = None
    """Folder holding the mnist / fashion-mnist files (default $LAB_DATA_DIR, else ./data)."""
    binarize: bool = False
    """Model binary pixels (2 levels): training batches binarized afresh, the test split once with a
    fixed seed (the VAE's protocol). Off: a softmax over the data's own levels."""
    conditional: bool = False
    """Condition every gate on the class label: p(x | y); enables --label when sampling."""
    channels: int = 32
    """Channels of each stack (32 suits 8x8 digits on a CPU; 64 or more for MNIST)."""
    layers: int = 8
    """Gated layers (the first masks the centre pixel); the receptive field grows by one pixel each."""
    kernel: int = 3
    """Odd kernel width of the masked convolutions."""
    batch_size: int = 64
    """Minibatch size (global, split across torchrun processes)."""
    lr: float = 1e-3
    """Adam learning rate."""
    max_grad_norm: float = 1.0
    """Clip the gradient norm to this (0 turns clipping off)."""
    total_steps: int = 2000
    """Optimizer steps to train for (one step = one minibatch)."""

    def run_label(self) -> str | None:
        """What the run folder is named after (runs/<algo>-<label>-<time>-s<seed>): the data set."""
        return self.data

    def __post_init__(self):
        require(self.data in IMAGE_DATASETS,
                f"--data {self.data} has no discrete pixel levels for PixelCNN's softmax; "
                f"use an image data set ({', '.join(IMAGE_DATASETS)}).")
        check_dataset(self.data, IMAGE_DATASETS)
        require(NATIVE_SHAPE[self.data][0] == 1,
                f"--data {self.data} has {NATIVE_SHAPE[self.data][0]} channels; this PixelCNN models "
                "one-channel images (digits, mnist, fashion-mnist).")
        positive(self, "channels", "layers", "kernel", "batch_size", "lr", "total_steps")
        non_negative(self, "max_grad_norm")
        require(self.kernel % 2 == 1, f"--kernel must be odd, got {self.kernel}.")


@dataclass(frozen=True)
class EvalOptions:
    """Exact test-set likelihood and sample scores of a PixelCNN run."""

    n: int = 1000
    """Generated images scored by the data set's classifier (FID, IS, precision, recall)."""
    seed: int = 0
    """Seed of the samples."""
    scores: bool = True
    """Score samples with the data set's classifier (digits: trained on first use)."""

    def __post_init__(self):
        positive(self, "n")
        non_negative(self, "seed")


@dataclass(frozen=True)
class SampleOptions:
    """Draw images pixel by pixel."""

    n: int = 64
    """Number of images."""
    seed: int = 0
    """Seed of the draws."""
    label: int | None = None
    """Class to draw (conditional models; default: the classes in turn)."""

    def __post_init__(self):
        positive(self, "n")
        non_negative(self, "seed")


class Algorithm:
    step_size = 1
    best_metric = None   # the only held-out split is the test split: no checkpoint is chosen on it

    def __init__(self, config: Config, runtime: Runtime, training: bool = True):
        self.config, self.rt, self.training = config, runtime, training
        train = load_images(config.data, "train", config.data_dir)
        test = load_images(config.data, "test", config.data_dir)
        require(train.levels is not None, f"{config.data} images have no discrete levels to model.")
        self.test: ImageSet = test.binarized() if config.binarize else test
        self.levels = 2 if config.binarize else train.levels
        self.shape = tuple(train.images.shape[1:])
        self.num_classes = train.num_classes
        self.batches = BatchIterator(train.images, train.labels, batch_size=config.batch_size,
                                     seed=runtime.derive_seed("real-data", per_rank=False),
                                     device=runtime.device)
        self.binarize_rng = torch.Generator(runtime.device).manual_seed(runtime.derive_seed("binarize", per_rank=False))
        self.model = runtime.wrap(PixelCNN(self.levels, config.channels, config.layers, config.kernel,
                                           self.num_classes if config.conditional else 0))   # train through it
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)

    # ------------------------------------------------------------------ training
    def train_step(self, step: int) -> dict:
        x, labels = next(self.batches)           # the global batch: each process keeps its rows
        if self.config.binarize:
            x = torch.bernoulli(x, generator=self.binarize_rng)   # dynamic binarization: a fresh draw each time
        rows = self.rt.shard(self.config.batch_size)
        x, labels = x[rows], (labels[rows] if self.config.conditional else None)
        with self.rt.autocast():
            nll = -log_prob(self.model(x, labels), x, self.levels)
        loss = nll.mean() / math.prod(self.shape)              # nats per pixel
        grad_norm = self.rt.optimize(loss, self.optimizer, self.config.max_grad_norm)
        metrics = {"train/nll": nll.mean().detach(), "train/bits_per_dim": loss.detach() / math.log(2)}
        if grad_norm is not None:
            metrics["train/grad_norm"] = grad_norm
        return metrics

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def test_nll(self, batch: int = 500) -> torch.Tensor:
        """-log p(x) (or -log p(x | y) for a conditional model) of every test image, in nats, exactly."""
        unwrap(self.model).eval()
        labels = self.test.labels.to(self.rt.device) if self.config.conditional else None
        x = self.test.images.to(self.rt.device)
        nll = torch.cat([-unwrap(self.model).log_prob(x[i:i + batch], None if labels is None else labels[i:i + batch])
                         for i in range(0, len(x), batch)])
        unwrap(self.model).train()
        return nll

    def evaluate(self, options: EvalOptions | None = None, *, during_training: bool = False) -> dict:
        nll = self.test_nll().mean().item()
        samples, labels = self.generate(64, 0, None)
        results = {"eval/nll": nll, "eval/bits_per_dim": bits_per_dim(nll, math.prod(self.shape)),
                   "samples/grid": samples_grid(enlarged(samples), nrow=8)}
        options = options or (None if during_training else EvalOptions())
        if not during_training and options.scores:
            from generative.metrics import memorization_grid, require_scorable, score_images
            require_scorable(options.n, self.shape, self.rt.device)
            samples, labels = self.generate(options.n, options.seed, None)
            results.update(score_images(samples, self.config.data, data_dir=self.config.data_dir, labels=labels,
                                        device=self.rt.device))
            results["plots/memorization"] = memorization_grid(samples, self.config.data, data_dir=self.config.data_dir)
        return results

    # ------------------------------------------------------------------ sampling
    def _labels(self, n: int, label: int | None) -> torch.Tensor | None:
        """The class of each sample: the one asked for, else the classes in turn (conditional models)."""
        if not self.config.conditional:
            require(label is None, "--label needs a model trained with --conditional.")
            return None
        if label is not None:
            require(0 <= label < self.num_classes, f"--label must be in [0, {self.num_classes - 1}], got {label}.")
            return torch.full((n,), label, dtype=torch.long)
        return torch.arange(n) % self.num_classes

    @torch.no_grad()
    def generate(self, n: int, seed: int, label: int | None, progress=None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(n images in [0, 1], their labels or None), drawn from the model."""
        # every row of all n images at once: about channels x pixels floats per image in each layer
        require_batch(n, 4 * 4 * self.config.channels * math.prod(self.shape), "--n", self.rt.device)
        labels = self._labels(n, label)
        unwrap(self.model).eval()
        generator = torch.Generator(self.rt.device).manual_seed(seed)
        images = unwrap(self.model).sample(n, self.shape, None if labels is None else labels.to(self.rt.device),
                                   generator, progress)
        unwrap(self.model).train()
        return images, labels

    def sample(self, options: SampleOptions | None = None) -> dict:
        options = options or SampleOptions()
        with Progress(total=self.shape[1], what="sampling", unit="row", leave=False) as bar:
            images, labels = self.generate(options.n, options.seed, options.label,
                                           lambda done, total: bar.update_to(done))
        arrays = {"images": images.cpu()}
        if labels is not None:
            arrays["labels"] = labels
        return {"samples/grid": samples_grid(enlarged(images), nrow=int(options.n ** 0.5) or None),
                "samples/images": Arrays(arrays)}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "batches": self.batches.state_dict(), "binarize_rng": self.binarize_rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        if not self.training:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state_dict(state["batches"])
        self.binarize_rng.set_state(state["binarize_rng"])
