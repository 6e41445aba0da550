"""Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifolds in feature space.

Each set's manifold is the union of balls around its points, the radius of each ball being the distance
to the point's k-th nearest neighbour within its own set. Precision = fraction of fake points inside the
real manifold; recall = fraction of real points inside the fake manifold.
"""

import torch


def _pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances [M, K] in float64 (float32 cancellation misranks close neighbours)."""
    return torch.cdist(a.double(), b.double())


def knn_radii(features: torch.Tensor, k: int = 3, batch_size: int = 1024) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point. features [N, D] -> [N]"""
    N = features.shape[0]
    if N <= k:
        raise ValueError(f'need more than k={k} points for a k-NN manifold, got {N}')
    radii = []
    for start in range(0, N, batch_size):
        dist = _pairwise_distances(features[start : start + batch_size], features)  # [B, N]
        radii.append(dist.kthvalue(k + 1, dim=1).values)  # the 1st smallest is the point itself
    return torch.cat(radii)


def fraction_in_manifold(
    manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor, batch_size: int = 1024
) -> float:
    """Fraction of `probes` [P, D] within radii[i] of some manifold[i] ([N, D], [N])."""
    inside = []
    for start in range(0, probes.shape[0], batch_size):
        dist = _pairwise_distances(probes[start : start + batch_size], manifold)  # [B, N]
        inside.append((dist <= radii.double()[None]).any(dim=1))
    return torch.cat(inside).double().mean().item()


def precision_recall(
    real_features, fake_features, k: int = 3, batch_size: int = 1024, device=None
) -> tuple[float, float]:
    """(precision, recall) of fake features [N, D] against real features [M, D] (arrays or tensors)."""
    real = torch.as_tensor(real_features, device=device)
    fake = torch.as_tensor(fake_features, device=device)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f'need [N, D] features of one width, got {list(real.shape)} and {list(fake.shape)}')
    precision = fraction_in_manifold(real, knn_radii(real, k, batch_size), fake, batch_size)
    recall = fraction_in_manifold(fake, knn_radii(fake, k, batch_size), real, batch_size)
    return precision, recall
