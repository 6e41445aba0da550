"""Frechet distance between Gaussians fitted to feature sets (the FID formula).

FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).
The trace of the matrix square root is the numerically delicate part: with fewer samples than feature
dimensions (e.g. fid2k with 2048-d features) both covariances are singular. Two routes are offered:
- 'eigh' (default): tr((S1 S2)^(1/2)) = sum sqrt(eig(A S2 A)) with A = S1^(1/2) from a symmetric
  eigen-decomposition. A S2 A is symmetric PSD, so its eigenvalues are real; tiny negative round-off is
  clipped to 0. Stable for singular covariances by construction.
- 'sqrtm': scipy.linalg.sqrtm of S1 S2 (the reference protocol's route); if the result is not finite it
  retries with eps * I added to both covariances, and drops an imaginary part that is round-off.
"""

import numpy as np
import scipy.linalg


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D], in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f'need features of shape [N >= 2, D], got {list(features.shape)}')
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues clipped)."""
    eigval, eigvec = np.linalg.eigh((sigma + sigma.T) / 2)
    return (eigvec * np.sqrt(np.clip(eigval, 0, None))) @ eigvec.T


def trace_sqrt_product(
    sigma1: np.ndarray, sigma2: np.ndarray, method: str = 'eigh', eps: float = 1e-6
) -> float:
    """tr((sigma1 sigma2)^(1/2)) for symmetric PSD matrices."""
    sigma1 = np.asarray(sigma1, dtype=np.float64)
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    if method == 'eigh':
        root1 = _psd_sqrt(sigma1)
        middle = root1 @ sigma2 @ root1  # similar to sigma1 sigma2, so same eigenvalues
        eigval = np.linalg.eigvalsh((middle + middle.T) / 2)
        return float(np.sqrt(np.clip(eigval, 0, None)).sum())
    if method == 'sqrtm':
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if np.iscomplexobj(covmean):
            covmean = covmean.real  # the imaginary part of a PSD product's root is round-off
        return float(np.trace(covmean))
    raise ValueError(f'unknown matrix square root method "{method}"; use "eigh" or "sqrtm"')


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = 'eigh') -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    sigma1, sigma2 = np.asarray(sigma1, dtype=np.float64), np.asarray(sigma2, dtype=np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f'mismatched statistics: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}'
        )
    mean_term = float(np.square(mu1 - mu2).sum())
    trace_term = float(np.trace(sigma1) + np.trace(sigma2)) - 2 * trace_sqrt_product(sigma1, sigma2, method)
    return max(mean_term + trace_term, 0.0)


def frechet_distance_of_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """frechet_distance of the two sets' Gaussians, computed from the features themselves.

    With centred, scaled features A = (F1 - mu1) / sqrt(N1 - 1) (so S1 = A^T A) and B likewise, the nonzero
    eigenvalues of S1 S2 = A^T (A B^T) B are those of (A B^T)(A B^T)^T, so tr((S1 S2)^(1/2)) is the nuclear
    norm of the small N1 x N2 matrix A B^T: exact, and far cheaper than a D x D root when N << D.
    """
    scaled = []
    for f in (features1, features2):
        f = np.asarray(f, dtype=np.float64)
        feature_stats(f)  # the same shape checks
        scaled.append((f - f.mean(axis=0)) / np.sqrt(f.shape[0] - 1))
    a, b = scaled
    mean_term = float(np.square(np.mean(features1, axis=0) - np.mean(features2, axis=0)).sum())
    trace_root = float(np.linalg.svd(a @ b.T, compute_uv=False).sum())
    return max(mean_term + float(np.square(a).sum() + np.square(b).sum()) - 2 * trace_root, 0.0)
