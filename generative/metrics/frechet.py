"""The Fréchet distance between two Gaussians fitted to feature sets (FID when the features are Inception's).

    d^2 = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))          (Heusel et al. 2017, eq. 6)

Means and covariances in float64; the matrix square root by scipy's Schur method as in the reference
implementations (TTUR, pytorch-fid), so the numbers agree with theirs on the same features.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

from lab.errors import LabError


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and unbiased covariance (F, F) of features (N, F), in float64."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().double().numpy()
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise LabError(f"the Fréchet distance needs at least 2 feature vectors (N, F); got shape {x.shape}.")
    return x.mean(0), np.cov(x, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    pytorch-fid's rule: the square root of sigma1 sigma2 is taken as it is, singular or not (dead
    feature units make it exactly singular, and the Schur method is still accurate there); only when
    it is not finite or has a large imaginary part is eps * I added to both covariances. Negligible
    imaginary parts (round-off) are discarded; a large one that remains raises.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise LabError(f"feature statistics differ in shape: {mu1.shape} vs {mu2.shape}.")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all() or _imaginary_part(covmean) > 0:
        offset = eps * np.eye(len(sigma1))
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    imaginary = _imaginary_part(covmean)
    if imaginary > 0 or not np.isfinite(covmean).all():
        raise LabError(f"the matrix square root in the Fréchet distance has an imaginary part of {imaginary:.3g}: "
                       "the covariances are ill-conditioned (too few samples for the feature size?).")
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean.real))


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    """scipy's Schur square root; its warning on singular input is expected here (see above)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(matrix)


def _imaginary_part(root: np.ndarray) -> float:
    """The largest imaginary part on the diagonal of a square root (only the trace counts) when it is
    more than round-off (pytorch-fid's tolerance, 1e-3), else 0."""
    if not np.iscomplexobj(root):
        return 0.0
    imaginary = float(np.abs(np.diagonal(root).imag).max())
    return imaginary if imaginary > 1e-3 else 0.0


def frechet_distance_of(features_a, features_b) -> float:
    """Fréchet distance between two feature sets (N_a, F) and (N_b, F)."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))
