"""Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel, averaged over subsets.

k(x, y) = (x . y / d + 1)^3. For subsets X, Y of size m the unbiased estimator is
MMD^2 = 1/(m(m-1)) sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] - 2/m^2 sum_{i, j} k(x_i, y_j).
Computed in float64 with torch, on the device the features are moved to (a GPU makes 100 subsets cheap).
"""

import numpy as np
import torch


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(x . y / d + 1)^3 for all pairs: [M, D] x [K, D] -> [M, K]."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x, y) -> float:
    """Unbiased MMD^2 between two equally sized sets [m, D] (arrays or tensors) under the polynomial kernel."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64, device=x.device)
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f'need two sets of the same size >= 2, got {x.shape[0]} and {y.shape[0]}')
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return (within - 2 * k_xy.sum() / (m * m)).item()


def kernel_inception_distance(
    real_features,
    fake_features,
    num_subsets: int = 100,
    max_subset_size: int = 1000,
    seed: int = 0,
    device=None,
) -> float:
    """KID: mean unbiased MMD^2 over `num_subsets` random subsets of min(n_real, n_fake, max) items each."""
    real = torch.as_tensor(np.asarray(real_features), dtype=torch.float64, device=device)
    fake = torch.as_tensor(np.asarray(fake_features), dtype=torch.float64, device=device)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f'need [N, D] features of one width, got {list(real.shape)} and {list(fake.shape)}')
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = fake[torch.from_numpy(rng.choice(fake.shape[0], m, replace=False)).to(fake.device)]
        y = real[torch.from_numpy(rng.choice(real.shape[0], m, replace=False)).to(real.device)]
        total += mmd2_unbiased(x, y)
    return total / num_subsets
