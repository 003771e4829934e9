"""PixelCNN: the masks (no pixel sees itself or the future, none of the past is hidden), an exact
likelihood that sums to one, sampling that follows it, a short learning run on digits, and the
`lab` commands around it."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from generative.pixelcnn.model import PixelCNN


def _tiny(levels: int = 2, num_classes: int = 0, layers: int = 3, seed: int = 0, scale: float = 3.0) -> PixelCNN:
    """A small random network whose conditionals are far from uniform (conv weights scaled up)."""
    torch.manual_seed(seed)
    model = PixelCNN(levels, channels=8, layers=layers, num_classes=num_classes).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "label" not in name:
                p.mul_(scale)
    return model.eval()


@pytest.mark.parametrize("num_classes", [0, 10])
def test_each_output_depends_on_exactly_the_pixels_before_it(num_classes):
    """d logits_i / d x_j is zero for j >= i in raster order and nonzero for every j < i: no pixel
    sees itself or a later one, and the vertical + horizontal stacks leave no blind spot."""
    side = 5
    model = _tiny(levels=4, num_classes=num_classes, layers=side)
    labels = torch.tensor([3]) if num_classes else None
    x = torch.rand(1, 1, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for i in range(side * side):
        x_ = x.clone().requires_grad_(True)
        model(x_, labels)[0, :, i // side, i % side].sum().backward()
        grad = x_.grad.flatten()
        assert torch.all(grad[i:] == 0), f"pixel {i} sees pixels {torch.nonzero(grad[i:]).flatten() + i}"
        assert torch.all(grad[:i] != 0), f"pixel {i} is blind to pixels {torch.nonzero(grad[:i] == 0).flatten()}"


@pytest.mark.parametrize("levels, num_classes", [(2, 0), (3, 0), (2, 4)])
def test_probabilities_of_every_2x2_image_sum_to_one(levels, num_classes):
    model = _tiny(levels, num_classes)
    images = torch.tensor(list(itertools.product(range(levels), repeat=4)), dtype=torch.float64)
    images = (images / (levels - 1)).view(-1, 1, 2, 2)
    labels = torch.full((len(images),), 2) if num_classes else None
    with torch.no_grad():
        p = model.log_prob(images, labels).exp()
    assert len(images) == levels ** 4
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6)   # float32 log-softmax
    assert p.max() > 3 * p.min()   # a non-trivial distribution, not uniform


def test_samples_follow_the_model_probabilities():
    """20,000 draws of 2x2 binary images against the exact probabilities: Pearson χ² with 15 degrees
    of freedom stays below 37.7 (its 0.999 quantile) for this fixed seed."""
    model = _tiny(levels=2, scale=2.0)
    images = torch.tensor(list(itertools.product(range(2), repeat=4)), dtype=torch.float64).view(-1, 1, 2, 2)
    with torch.no_grad():
        p = model.log_prob(images).exp()
    n = 20_000
    draws = model.sample(n, (1, 2, 2), generator=torch.Generator().manual_seed(0))
    index = (draws.flatten(1).round().long() * torch.tensor([8, 4, 2, 1])).sum(1)
    observed = torch.bincount(index, minlength=16).double()
    expected = n * p
    assert expected.min() > 5   # χ² is valid
    chi2 = ((observed - expected) ** 2 / expected).sum().item()
    assert chi2 < 37.7, chi2
    # the same draws scored against another random model's probabilities fail clearly: the test has power
    with torch.no_grad():
        other = n * _tiny(levels=2, scale=2.0, seed=1).log_prob(images).exp()
    assert ((observed - other) ** 2 / other).sum().item() > 200


def test_short_training_on_digits_beats_independent_pixels_clearly():
    """A small PixelCNN trained for 300 steps (about 20 s on one core) against the best model of
    independent pixels (each pixel's 17-level histogram on the training split)."""
    from bench.likelihood import independent_pixels
    from generative.pixelcnn.algo import Config
    from lab.runtime import RunOptions
    from lab.session import train_in_memory

    independent = independent_pixels("17 levels")

    trainer = train_in_memory("pixelcnn", Config(channels=16, layers=5, batch_size=32, lr=3e-3, total_steps=300),
                              RunOptions(device="cpu", seed=0, eval_every=300))
    (step, results), = trainer.history
    assert step == 300
    assert 100 < independent < 115, independent        # about 108 nats per image
    assert results["eval/nll"] < independent - 12, (results["eval/nll"], independent)
    assert results["eval/bits_per_dim"] == pytest.approx(results["eval/nll"] / (64 * np.log(2)))


# ---------------------------------------------------------------- the lab commands
TINY = ["--channels", "8", "--layers", "3", "--batch-size", "16", "--eval-every", "4"]


def test_train_resume_eval_sample_through_the_lab_command(lab, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    flags = [*TINY, "--binarize", "--conditional"]
    assert lab("train", "pixelcnn", *flags, "--total-steps", "8", "--run-dir", straight).returncode == 0
    assert lab("train", "pixelcnn", *flags, "--total-steps", "4", "--run-dir", split).returncode == 0
    assert lab("resume", split, "--total-steps", "8").returncode == 0
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)["algorithm"]
    b = torch.load(split / "checkpoints" / "last.pt", weights_only=True)["algorithm"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])   # resume is exact

    result = lab("eval", split, "--n", "40", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert 0 < metrics["eval/bits_per_dim"] < 1.5   # binary pixels: a coin per pixel is 1 bit
    assert metrics["eval/bits_per_dim"] == pytest.approx(metrics["eval/nll"] / (64 * np.log(2)))
    assert metrics["eval/n_samples"] == 40 and np.isfinite(metrics["eval/fid"])

    result = lab("sample", split, "--n", "9", "--label", "7")
    assert result.returncode == 0, result.stderr
    saved = np.load(next((split / "samples").glob("images-*.npz")))
    assert saved["images"].shape == (9, 1, 8, 8) and (saved["labels"] == 7).all()
    assert set(np.unique(saved["images"])) <= {0.0, 1.0}

    result = lab("sample", split, "--label", "10")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "lab: error: --label must be in [0, 9], got 10."]


@pytest.mark.parametrize("argv, words", [
    (["--data", "ring8"], "no discrete pixel levels"),
    (["--data", "cifar10"], "one-channel images"),
    (["--kernel", "4"], "--kernel must be odd"),
    (["--data", "mnist", "--data-dir", "{tmp}"], "train-images-idx3-ubyte"),
])
def test_bad_input_is_one_clear_line(lab, tmp_path, argv, words):
    result = lab("train", "pixelcnn", *[a.format(tmp=tmp_path) for a in argv], "--run-dir", tmp_path / "run")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("lab: error: ") and words in result.stderr
    assert not (tmp_path / "run").exists()


def test_label_needs_a_conditional_model(lab, tmp_path):
    run = tmp_path / "run"
    assert lab("train", "pixelcnn", *TINY, "--total-steps", "2", "--run-dir", run).returncode == 0
    result = lab("sample", run, "--label", "3")
    assert result.returncode == 2 and "--conditional" in result.stderr and result.stderr.count("\n") == 1


def test_a_likelihood_table_refuses_a_model_without_a_likelihood(lab, tmp_path):
    result = lab("bench", "likelihood", "--models", "pixelcnn", "gan", "--out", tmp_path / "x.json")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "gan defines no likelihood" in result.stderr and not (tmp_path / "x.json").exists()
