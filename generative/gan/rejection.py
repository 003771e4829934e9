"""Discriminator rejection sampling (DRS, Azadi et al. 2019): the discriminator filters the generator.

At the optimum of the game D*(x) = p_data(x) / (p_data(x) + p_g(x)), so its logit is
D~(x) = log p_data(x) / p_g(x). Rejection sampling from p_g with the bound M = max_x p_data / p_g would
keep x with probability p_data(x) / (M p_g(x)) = exp(D~(x) - D~_M) and return exact samples of p_data.
A trained D is not D*, so DRS softens that rule with a shift gamma (Azadi et al. 2019, eq. 8):

    F(x) = D~(x) - D~_M - log(1 - exp(D~(x) - D~_M - eps))      keep x with probability sigmoid(F(x) - gamma)

D~_M is the largest logit seen so far (the first batch of proposals is the paper's burn-in), gamma a
quantile of F over each batch of proposals. Rejection removes the samples D finds implausible (the bridges
a continuous generator draws between modes); it cannot bring back a mode the generator never draws.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

EPSILON = 1e-6
PROPOSALS = 10_000   # proposals per batch (the paper's burn-in size)


def drs_score(logits: torch.Tensor, max_logit: float) -> torch.Tensor:
    """F(x) for each proposal's logit D~(x): sigmoid(F(x)) = exp(D~(x) - D~_M), the exact rejection rule."""
    logits = logits.double()
    # F(x) = D~(x) - D~_M - log(1 - exp(D~(x) - D~_M - eps))
    return logits - max_logit - torch.log1p(-torch.exp(logits - max_logit - EPSILON))


@torch.no_grad()
def rejection_sample(propose: Callable[[int], torch.Tensor], score: Callable[[torch.Tensor], torch.Tensor],
                     n: int, quantile: float, rng: torch.Generator) -> tuple[torch.Tensor, float]:
    """n samples of ``propose(m)`` (m generated samples) kept by DRS with the logits ``score(x)``, and
    the share of proposals kept. Every batch keeps at least the proposals at or above the quantile with
    probability >= 1/2, so the loop ends."""
    kept, accepted, proposed, max_logit = [], 0, 0, -float("inf")
    while accepted < n:
        x = propose(PROPOSALS)
        logits = score(x).flatten()
        max_logit = max(max_logit, logits.max().item())   # D~_M: the running maximum over every proposal
        f = drs_score(logits, max_logit)
        # keep x with probability sigmoid(F(x) - gamma), gamma the quantile of F over this batch
        probability = torch.sigmoid(f - torch.quantile(f, quantile)).to(x.device)
        accept = torch.rand(len(x), generator=rng, device=x.device) < probability
        kept.append(x[accept])
        accepted, proposed = accepted + len(kept[-1]), proposed + len(x)
    return torch.cat(kept)[:n], accepted / proposed
