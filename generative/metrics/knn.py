"""Nearest-neighbour checks: k-NN precision and recall (Kynkäänniemi et al. 2019) and memorization.

Precision: the share of generated samples that fall inside the real manifold, the union of balls
around each real feature whose radius is the distance to its k-th nearest real neighbour.
Recall: the share of real samples inside the generated manifold, built the same way.
"""
from __future__ import annotations

import torch

from lab.errors import LabError


def _chunks(queries: torch.Tensor, pool: torch.Tensor, budget: int = 1 << 24):
    """Row chunks of ``queries`` with their distances (chunk, N_pool) to ``pool``, at most ~64 MB each."""
    queries, pool = queries.flatten(1).float(), pool.flatten(1).float()
    size = max(1, budget // max(1, len(pool)))
    for i in range(0, len(queries), size):
        yield torch.cdist(queries[i:i + size], pool).clamp_min_(0.0)


def knn_radii(features: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Distance from each feature to its k-th nearest neighbour in the same set (itself excluded)."""
    if len(features) <= k:
        raise LabError(f"k-NN radii with k = {k} need at least {k + 1} points; got {len(features)}.")
    return torch.cat([d.kthvalue(k + 1, dim=1).values for d in _chunks(features, features)])


def manifold_coverage(manifold: torch.Tensor, queries: torch.Tensor, k: int = 3) -> float:
    """Share of ``queries`` inside at least one k-NN ball of ``manifold``."""
    radii = knn_radii(manifold, k)
    inside = torch.cat([(d <= radii[None, :]).any(1) for d in _chunks(queries, manifold)])
    return inside.float().mean().item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """(precision, recall) of generated features ``fake`` against real features ``real``."""
    return manifold_coverage(real, fake, k), manifold_coverage(fake, real, k)


def nearest(queries: torch.Tensor, pool: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of each query's nearest neighbour in ``pool``."""
    pairs = [d.min(1) for d in _chunks(queries, pool)]
    return torch.cat([p.values for p in pairs]), torch.cat([p.indices for p in pairs])


def memorization_ratio(samples: torch.Tensor, train: torch.Tensor, test: torch.Tensor) -> float:
    """Median distance from a sample to its nearest training image over the median distance from a
    test image to its nearest training image. About 1 (or more) for a model that generalizes as far
    as fresh data does; well below 1 when samples sit on training images (copies)."""
    to_train = nearest(samples, train)[0].median()
    typical = nearest(test, train)[0].median()
    return float(to_train / typical)
