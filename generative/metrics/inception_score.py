"""The Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), averaged over splits.

It is 1 when every sample gets the same class distribution and the number of classes K when each
sample is classified with certainty and the classes are used equally; higher is better.
"""
from __future__ import annotations

import torch

from lab.errors import LabError


def inception_score(probs: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the Inception Score of class probabilities (N, K) over ``splits`` parts, cut at
    i * N // splits as the original code (Salimans et al.) and torch-fidelity do."""
    probs = probs.detach().double().cpu()
    n = len(probs)
    if n < splits:
        raise LabError(f"the Inception Score with {splits} splits needs at least {splits} samples; got {n}.")
    scores = []
    for i in range(splits):
        part = probs[i * n // splits: (i + 1) * n // splits]
        marginal = part.mean(0, keepdim=True)                                     # p(y)
        kl = (part * (part.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1)   # KL(p(y|x) || p(y))
        scores.append(kl.mean().exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))
