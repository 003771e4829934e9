"""Sample-quality metrics. One call scores a generative model's samples:

    score_images(samples, "digits")  ->  eval/fid, eval/is, eval/precision, eval/recall,
                                         eval/memorization, eval/fid_real, eval/n_samples [, eval/label_accuracy]
    score_toy(samples, "grid25")     ->  eval/modes, eval/high_quality, eval/precision, eval/recall, eval/n_samples

Features and class probabilities come from the project's classifier of that data set
(``classifier.feature_classifier``), so a digits FID is NOT an Inception FID and cannot be compared
with published numbers; it compares models scored here, at the same sample count (FID is biased
upward at small counts: ``eval/fid_real`` gives the score of real images at that count).
"""
from __future__ import annotations

import math
import os

import torch

from generative.data import IMAGE_DATASETS, TOY_DATASETS, check_dataset, load_images, to_native, \
    toy_distribution
from generative.metrics.classifier import feature_classifier, features_and_probs
from generative.metrics.frechet import feature_statistics, frechet_distance, frechet_distance_of
from generative.metrics.inception import inception_features_and_probs, load_inception
from generative.metrics.inception_score import inception_score
from generative.metrics.knn import memorization_ratio, nearest, precision_recall
from generative.metrics.toy import high_quality_share, modes_captured, reference_points
from lab.errors import LabError
from lab.memory import require_batch
from lab.media import Image, labelled_grid

__all__ = ["score_images", "score_toy", "memorization_grid", "frechet_distance", "frechet_distance_of",
           "feature_statistics", "inception_score", "precision_recall", "memorization_ratio", "modes_captured",
           "high_quality_share"]

_CACHE: dict[tuple, torch.Tensor] = {}


def _cached(key: tuple, compute) -> torch.Tensor:
    """Per-process memo of real images and their features (computed once, reused by every evaluation)."""
    if key not in _CACHE:
        _CACHE[key] = compute()
    return _CACHE[key]


def reference_images(data: str, split: str, data_dir=None, device="cpu") -> torch.Tensor:
    """A real split's images at native size, on ``device``, loaded once per process."""
    return _cached(("images", data, split, str(data_dir), str(device)),
                   lambda: load_images(data, split, data_dir).images.to(device))


def require_scorable(n: int, shape: tuple[int, ...], device) -> None:
    """Refuse, before any sample is drawn, ``--n`` images of ``shape`` whose scoring cannot fit in memory:
    ``score_images`` holds each sample as drawn, on the device, at native size and clamped (float copies of
    its pixels, counted 6 times with the drawing's own), with its features and softmax (at most the 2,048 +
    1,008 of Inception) and those of as many training images."""
    require_batch(n, 6 * 4 * math.prod(shape) + 2 * 4 * 3072, "--n", device)


def is_splits(n: int) -> int:
    """Splits of the Inception Score: 10 (the published protocol) when each holds >= 100 samples, else fewer."""
    return max(1, min(10, n // 100))


@torch.no_grad()
def score_images(samples: torch.Tensor, data: str, *, data_dir=None, labels: torch.Tensor | None = None,
                 device="cpu", inception_weights=None) -> dict[str, float]:
    """Score samples (N, C, H, W) in [0, 1] of any size (brought to native size by ``to_native``)
    against the test split of ``data``.

    eval/fid            Fréchet distance of classifier features, samples vs the whole test split
    eval/fid_real       the same for N real training images: what a perfect model scores at this N
    eval/is             Inception Score from the classifier's softmax (at most the 10 classes)
    eval/precision, eval/recall   k-NN (k=3) manifolds of features, min(N, n_test) of each
    eval/memorization   median pixel distance sample -> nearest training image, over the same for
                        test images (about 1 or more: no copying; well below 1: copies)
    eval/label_accuracy share of samples the classifier puts in the requested class (``labels`` given)
    eval/n_samples      N
    eval/fid_inception, eval/is_inception   only with the FID Inception-v3 weights file, given as
                        ``inception_weights`` or $LAB_INCEPTION_WEIGHTS (the published protocol's
                        features; slow without a GPU: one 299x299 Inception pass per image)
    """
    check_dataset(data, IMAGE_DATASETS)
    if samples.ndim != 4 or len(samples) < 4:
        raise LabError(f"score_images takes (N, C, H, W) images with N >= 4 (k-NN with k = 3); "
                       f"got shape {tuple(samples.shape)}.")
    n = len(samples)
    fake = to_native(samples.detach().float().to(device), data).clamp(0.0, 1.0)
    test = reference_images(data, "test", data_dir, device)
    train = reference_images(data, "train", data_dir, device)
    network = feature_classifier(data, device)
    fake_features, fake_probs = features_and_probs(network, fake, device)
    test_features = _cached(("features", data, str(data_dir), str(device), network),   # keyed by the network itself
                            lambda: features_and_probs(network, test, device)[0])
    train_features, _ = features_and_probs(network, train[:n], device)
    m = min(n, len(test_features))
    precision, recall = precision_recall(test_features[:m], fake_features[:m], k=3)
    scores = {
        "eval/fid": frechet_distance_of(test_features, fake_features),
        "eval/fid_real": frechet_distance_of(test_features, train_features),
        "eval/is": inception_score(fake_probs, is_splits(n))[0],
        "eval/precision": precision,
        "eval/recall": recall,
        "eval/memorization": memorization_ratio(fake, train, test),
        "eval/n_samples": float(n),
    }
    inception_weights = inception_weights or os.environ.get("LAB_INCEPTION_WEIGHTS")
    if inception_weights:
        scores.update(_inception_scores(fake, test, (data, str(data_dir)), inception_weights, device))
    if labels is not None:
        scores["eval/label_accuracy"] = (fake_probs.argmax(1).cpu() == labels.cpu()).float().mean().item()
    return scores


def _inception_scores(fake: torch.Tensor, test: torch.Tensor, test_key: tuple, weights, device) -> dict[str, float]:
    """FID and IS with the standard Inception-v3 pool features / logits of native-size images."""
    network = load_inception(weights, device)
    test_features = _cached(("inception", *test_key, str(weights), str(device)),
                            lambda: inception_features_and_probs(network, test, device)[0])
    features, probs = inception_features_and_probs(network, fake, device)
    return {"eval/fid_inception": frechet_distance_of(test_features, features),
            "eval/is_inception": inception_score(probs, is_splits(len(fake)))[0]}


@torch.no_grad()
def score_toy(samples: torch.Tensor, name: str) -> dict[str, float]:
    """Score 2-D samples (N, 2) of a toy: modes captured (mixtures only), high-quality share, and
    k-NN precision/recall against N points of the true distribution."""
    check_dataset(name, TOY_DATASETS)
    toy = toy_distribution(name)
    samples = samples.detach().float().cpu()
    precision, recall = precision_recall(reference_points(name, len(samples)), samples, k=3)
    scores = {"eval/high_quality": high_quality_share(samples, toy), "eval/precision": precision,
              "eval/recall": recall, "eval/n_samples": float(len(samples))}
    if toy.centers is not None:
        scores = {"eval/modes": float(modes_captured(samples, toy)), **scores}
    return scores


@torch.no_grad()
def memorization_grid(samples: torch.Tensor, data: str, *, data_dir=None, n: int = 16, per_row: int = 8) -> Image:
    """The first n samples, each above its nearest training image (pixel distance), rows labelled."""
    check_dataset(data, IMAGE_DATASETS)
    fake = to_native(samples[:n].detach().float().cpu(), data).clamp(0.0, 1.0)
    train = reference_images(data, "train", data_dir)
    neighbours = train[nearest(fake, train)[1]]
    per_row = min(per_row, len(fake))
    blocks = [torch.cat([fake[i:i + per_row], neighbours[i:i + per_row]])
              for i in range(0, len(fake) - per_row + 1, per_row)]
    return Image(labelled_grid(torch.cat(blocks), ["sample", "nearest in train"] * len(blocks), nrow=per_row))
