"""Known-answer tests of the metric maths: Frechet, KID, precision/recall, SWD."""

import numpy as np
import pytest
import scipy.linalg
import torch

from metrics import frechet, kernel_inception, precision_recall, swd


def _random_spd(rng, d, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d


@pytest.mark.parametrize('method', ['eigh', 'sqrtm'])
def test_frechet_of_set_with_itself_is_zero(method):
    feats = np.random.RandomState(0).standard_normal((500, 16)) * 3 + 1
    mu, sigma = frechet.feature_stats(feats)
    assert abs(frechet.frechet_distance(mu, sigma, mu, sigma, method)) < 1e-8


@pytest.mark.parametrize('method', ['eigh', 'sqrtm'])
def test_frechet_matches_closed_form(method):
    rng = np.random.RandomState(1)
    d = 8
    # Commuting covariances (shared eigenvectors): tr((S1 S2)^1/2) = sum sqrt(l1 l2).
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    l1, l2 = rng.uniform(0.1, 4, d), rng.uniform(0.1, 4, d)
    s1, s2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(l1 + l2 - 2 * np.sqrt(l1 * l2))
    assert frechet.frechet_distance(mu1, s1, mu2, s2, method) == pytest.approx(expected, rel=1e-9)
    # General covariances: compare with the definition through scipy's sqrtm of S2^1/2 S1 S2^1/2.
    g1, g2 = _random_spd(rng, d), _random_spd(rng, d)
    r2 = scipy.linalg.sqrtm(g2).real
    reference = (
        np.sum((mu1 - mu2) ** 2) + np.trace(g1 + g2) - 2 * np.trace(scipy.linalg.sqrtm(r2 @ g1 @ r2).real)
    )
    assert frechet.frechet_distance(mu1, g1, mu2, g2, method) == pytest.approx(reference, rel=1e-7)
    # Scalar 1-D case: (m1 - m2)^2 + (s1 - s2)^2.
    assert frechet.frechet_distance([0.0], [[4.0]], [1.0], [[9.0]], method) == pytest.approx(2.0)


def test_sqrtm_stable_for_near_singular_covariances():
    rng = np.random.RandomState(2)
    d = 64
    s1 = _random_spd(rng, d, rank=10) + 1e-14 * np.eye(d)  # numerically singular, like fid2k's covariances
    s2 = _random_spd(rng, d, rank=12)
    values = [frechet.trace_sqrt_product(s1, s2, method) for method in ('eigh', 'sqrtm')]
    assert all(np.isfinite(values))
    assert values[0] == pytest.approx(values[1], rel=1e-4)
    # Same statistics -> 0 even when singular (no negative or NaN result from round-off).
    fid = frechet.frechet_distance(np.zeros(d), s1, np.zeros(d), s1)
    assert 0 <= fid < 1e-6


def test_frechet_of_sampled_gaussians_converges():
    rng = np.random.RandomState(3)
    d = 4
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = np.zeros(d), np.ones(d) * 0.5
    x = rng.multivariate_normal(mu1, s1, 200_000)
    y = rng.multivariate_normal(mu2, s2, 200_000)
    exact = frechet.frechet_distance(mu1, s1, mu2, s2)
    sampled = frechet.frechet_distance(*frechet.feature_stats(x), *frechet.feature_stats(y))
    assert sampled == pytest.approx(exact, rel=0.02)


def test_frechet_from_features_equals_the_covariance_route():
    """The N x N nuclear-norm route is exact, including with fewer samples than dimensions (singular S)."""
    rng = np.random.RandomState(4)
    x, y = rng.randn(10, 40), rng.randn(13, 40) * 1.5 + 0.3
    via_stats = frechet.frechet_distance(*frechet.feature_stats(x), *frechet.feature_stats(y))
    # (the eigh route's clipped round-off eigenvalues of the singular product cost it ~1e-8 relative)
    assert frechet.frechet_distance_of_features(x, y) == pytest.approx(via_stats, rel=1e-6)
    assert frechet.frechet_distance_of_features(x, x) == pytest.approx(0, abs=1e-9)


def test_frechet_rejects_mismatched_stats():
    with pytest.raises(ValueError, match='mismatched'):
        frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_kid_unbiased_matches_naive_double_loop():
    rng = np.random.RandomState(4)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) + 0.3
    m, d = 12, 5

    def k(a, b):
        return (np.dot(a, b) / d + 1) ** 3

    naive_xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    naive_yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    naive_xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    assert kernel_inception.mmd2_unbiased(x, y) == pytest.approx(
        naive_xx + naive_yy - 2 * naive_xy, rel=1e-10
    )


def test_kid_near_zero_for_same_distribution_and_positive_otherwise():
    rng = np.random.RandomState(5)
    a, b = rng.standard_normal((600, 8)), rng.standard_normal((600, 8))
    same = kernel_inception.kernel_inception_distance(a, b, num_subsets=20, max_subset_size=300)
    shifted = kernel_inception.kernel_inception_distance(a, b + 1, num_subsets=20, max_subset_size=300)
    assert abs(same) < 0.02 and shifted > 10 * abs(same) and shifted > 0.1


def test_precision_recall_on_constructed_sets():
    grid = torch.stack(torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing='ij'), -1).reshape(
        -1, 2
    )
    far = torch.tensor([1000.0, 0.0])
    # Reals: clusters A and B. Fakes: a copy of A plus a cluster C far from both.
    real = torch.cat([grid, grid + far])
    fake = torch.cat([grid, grid - far])
    precision, recall = precision_recall.precision_recall(real, fake, k=3)
    assert precision == 0.5 and recall == 0.5
    assert precision_recall.precision_recall(real, real.clone(), k=3) == (1.0, 1.0)
    # Mode collapse: all fakes near one real point -> high precision, low recall.
    g = torch.Generator().manual_seed(0)
    collapsed = grid[44] + 0.01 * torch.randn(200, 2, generator=g)
    p_col, r_col = precision_recall.precision_recall(grid, collapsed, k=3)
    assert p_col == 1.0 and r_col < 0.1
    # Shifting a Gaussian sample away lowers both, monotonically.
    base = torch.randn(500, 2, generator=g)
    other = torch.randn(500, 2, generator=g)
    scores = [precision_recall.precision_recall(base, other + shift, k=3) for shift in (0.0, 1.0, 3.0)]
    assert scores[0][0] > 0.8 and scores[0][1] > 0.8
    assert scores[0][0] > scores[1][0] > scores[2][0] and scores[0][1] > scores[1][1] > scores[2][1]


def test_knn_radii_match_bruteforce():
    pts = torch.randn(30, 3, generator=torch.Generator().manual_seed(1))
    dist = torch.cdist(pts.double(), pts.double())
    expected = dist.sort(dim=1).values[:, 3]
    assert torch.allclose(precision_recall.knn_radii(pts, k=3, batch_size=7), expected)


def _smooth_images(n, res, seed):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, res // 4, res // 4, generator=g)
    hi = torch.rand(n, 3, res, res, generator=g) * 0.3
    img = torch.nn.functional.interpolate(low, size=res, mode='bilinear', align_corners=False) * 0.7 + hi
    return (img * 255).clamp(0, 255)


def test_swd_zero_for_identical_sets_and_grows_with_blur():
    real = _smooth_images(24, 32, 0)
    results = []
    for blur_steps in (0, 1, 3):
        fake = real.clone()
        for _ in range(blur_steps):
            fake = swd._blur(fake)
        acc_real, acc_fake = swd.SWDAccumulator(seed=1), swd.SWDAccumulator(seed=1)
        acc_real.append(real)
        acc_fake.append(fake)
        results.append(swd.swd_between(acc_real, acc_fake)['swd_mean'])
    assert results[0] < 1e-6
    assert results[1] > 1 and results[2] > results[1]


def test_laplacian_pyramid_levels_and_reconstruction():
    img = _smooth_images(2, 64, 3)
    levels = swd.laplacian_pyramid(img, min_res=16)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16]
    recon = levels[-1]
    for band in reversed(levels[:-1]):
        recon = band + swd._pyr_up(recon)
    assert torch.allclose(recon, img, atol=1e-3)


def test_neighbourhoods_are_patches_of_the_image():
    level = torch.arange(2 * 3 * 10 * 12, dtype=torch.float32).reshape(2, 3, 10, 12)
    g = torch.Generator().manual_seed(0)
    patches = swd.random_neighbourhoods(level, count=5, size=7, generator=g)
    assert patches.shape == (10, 3, 7, 7)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (2, 5, 1, 1), generator=g)
    x = torch.randint(0, 6, (2, 5, 1, 1), generator=g)
    n, i = 1, 3
    yy, xx = y[n, i].item(), x[n, i].item()
    assert torch.equal(patches[n * 5 + i], level[n, :, yy : yy + 7, xx : xx + 7])
