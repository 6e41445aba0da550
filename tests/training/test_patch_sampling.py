import pytest
import scipy.stats
import torch

from training import patches

PAPER = dict(beta_end=0.8, anneal_kimg=10000)  # the paper's Beta schedule (Sec. 3.4), an option's default
SCHEDULE = dict(beta=PAPER, uniform=dict(anneal_kimg=10000), discrete={})


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _ks_distance_below(samples, cdf, upper):
    """sup |ECDF(x) - F(x)| over the sample points below `upper` (a lower bound on the KS statistic).

    Near s = 1, Beta(1, 0.001) puts ~97 % of its mass within 1e-16 of 1, where float rounding creates ties
    that scipy's kstest (continuous data only) cannot handle; evaluating the distance only below `upper`
    keeps the test exact: this sup is <= the full KS statistic, so the KS critical value still applies.
    """
    x = torch.as_tensor(samples, dtype=torch.float64).sort().values
    n = x.numel()
    keep = x < upper
    ecdf_hi = torch.searchsorted(x, x, right=True).double() / n  # fraction <= x
    ecdf_lo = torch.searchsorted(x, x, right=False).double() / n  # fraction < x
    f = torch.as_tensor(cdf(x.numpy()), dtype=torch.float64)
    dist = torch.maximum((ecdf_hi - f).abs(), (f - ecdf_lo).abs())[keep]
    edge = abs(float((x < upper).double().mean()) - float(cdf(upper)))  # the mass piled up above `upper`
    return max(float(dist.max()) if dist.numel() else 0.0, edge)


@pytest.mark.parametrize('cur_nimg', [0, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000])
def test_beta_sampler_matches_scipy_beta(cur_nimg):
    sampler = patches.make_patch_sampler('beta', 256, 64, **PAPER)
    b = sampler.beta(cur_nimg)
    ref = scipy.stats.beta(1, b, loc=0.25, scale=0.75)  # Eq. 5 with r/R = 0.25
    n = 4000
    s = sampler.sample(n, cur_nimg, generator=_gen(1))[:, 0]
    critical = 1.95 / n**0.5  # KS critical value at alpha = 0.001
    assert _ks_distance_below(s, ref.cdf, upper=1 - 1e-5) < critical
    if b > 0.1:  # continuous enough in float64 for scipy's own test
        s64 = sampler.sample_scales(n, cur_nimg, generator=_gen(2)).numpy()
        assert scipy.stats.kstest(s64, ref.cdf).pvalue > 1e-3


def test_beta_schedule_endpoints_and_clamp():
    sampler = patches.BetaPatchSampler(256, 64, beta_start=0.001, beta_end=0.8, anneal_kimg=10000)
    assert sampler.beta(0) == pytest.approx(0.001)
    assert sampler.beta(5_000_000) == pytest.approx(0.001 + 0.799 / 2)
    assert sampler.beta(10_000_000) == pytest.approx(0.8)
    assert sampler.beta(50_000_000) == pytest.approx(0.8)
    d = sampler.describe(10_000_000)
    assert d['beta'] == pytest.approx(0.8) and d['mean_scale'] == pytest.approx(0.25 + 0.75 / 1.8)
    # At the start nearly every patch is the whole image.
    s0 = sampler.sample(1000, 0, generator=_gen())[:, 0]
    assert (s0 > 0.999).float().mean() > 0.95


def test_uniform_schedule_and_distribution():
    sampler = patches.make_patch_sampler('uniform', 512, 64, s_min_start=0.9, anneal_kimg=1000)
    assert sampler.s_min(0) == pytest.approx(0.9)
    assert sampler.s_min(500_000) == pytest.approx((0.9 + 0.125) / 2)
    assert sampler.s_min(1_000_000) == pytest.approx(0.125) and sampler.s_min(9e9) == pytest.approx(0.125)
    for t in [0, 300_000, 2_000_000]:
        lo = sampler.s_min(t)
        s = sampler.sample(3000, t, generator=_gen(t))[:, 0].double().numpy()
        assert s.min() >= lo - 1e-6 and s.max() <= 1
        assert scipy.stats.kstest(s, scipy.stats.uniform(loc=lo, scale=1 - lo).cdf).pvalue > 1e-3


@pytest.mark.parametrize('kind', ['beta', 'uniform', 'discrete'])
@pytest.mark.parametrize('pixel_aligned', [False, True])
def test_offsets_keep_patch_inside_image(kind, pixel_aligned):
    sampler = patches.make_patch_sampler(kind, 128, 32, pixel_aligned=pixel_aligned, **SCHEDULE[kind])
    params = sampler.sample(2000, 8_000_000, generator=_gen(3))
    s, dx, dy = params.double().unbind(1)
    assert params.shape == (2000, 3) and params.dtype == torch.float32
    assert (s >= 0.25 - 1e-6).all() and (s <= 1 + 1e-6).all()
    for d in (dx, dy):
        assert (d >= 0).all() and (d + s <= 1 + 1e-6).all()
        # Offsets given s are U[0, 1 - s]: normalized by 1 - s they fill [0, 1].
        free = s < 0.9
        frac = d[free] / (1 - s[free])
        assert frac.min() < 0.05 and frac.max() > 0.95
        if pixel_aligned:
            assert torch.allclose(d * 128, (d * 128).round(), atol=1e-4)


def test_offsets_are_uniform_given_scale():
    sampler = patches.make_patch_sampler('uniform', 256, 64, anneal_kimg=0)
    s, dx, dy = sampler.sample(4000, 0, generator=_gen(5)).double().unbind(1)
    for d in (dx, dy):
        assert scipy.stats.kstest((d / (1 - s)).numpy(), 'uniform').pvalue > 1e-3
    assert abs(torch.corrcoef(torch.stack([dx / (1 - s), dy / (1 - s)]))[0, 1]) < 0.06


def test_discrete_sampler_uses_only_its_scales():
    sampler = patches.make_patch_sampler('discrete', 256, 64)
    assert sampler.scales == [0.25, 0.5, 1.0]
    s = sampler.sample(3000, 0, generator=_gen(7))[:, 0]
    counts = torch.stack([(s == v).sum() for v in sampler.scales])
    assert counts.sum() == 3000 and (counts > 900).all()
    with pytest.raises(ValueError, match='discrete patch sampler'):
        patches.make_patch_sampler('discrete', 256, 64, scales=[0.1])


def test_sampling_is_reproducible_and_pure_in_cur_nimg():
    sampler = patches.make_patch_sampler('beta', 256, 64, **PAPER)
    a = sampler.sample(16, 1_234_000, generator=_gen(9))
    b = patches.make_patch_sampler('beta', 256, 64, **PAPER).sample(16, 1_234_000, generator=_gen(9))
    assert torch.equal(a, b)


def test_bad_options_give_clear_errors():
    with pytest.raises(ValueError, match='unknown patch sampler kind'):
        patches.make_patch_sampler('gauss', 256, 64)
    with pytest.raises(ValueError, match='patch_resolution'):
        patches.make_patch_sampler('beta', 64, 128, **PAPER)
    with pytest.raises(TypeError):
        patches.make_patch_sampler('beta', 256, 64, **PAPER, beta_ned=0.8)


def test_sampled_full_patch_at_r_equals_R_is_the_image():
    # Sampler-driven: with r = R every scale is 1 and every offset 0, so the real patch is the image.
    images = torch.randn(5, 3, 16, 16)
    for kind in ['beta', 'uniform', 'discrete']:
        params = patches.make_patch_sampler(kind, 16, 16, **SCHEDULE[kind]).sample(
            5, 3_000_000, generator=_gen(11)
        )
        assert torch.allclose(params, patches.full_image_patch_params(5))
        assert torch.allclose(patches.crop_patches(images, params, 16), images, atol=1e-5)


def test_sampled_pixel_aligned_patch_equals_plain_crop():
    R, r = 32, 8
    images = torch.randn(64, 3, R, R)
    sampler = patches.make_patch_sampler('discrete', R, r, scales=[r / R], pixel_aligned=True)
    params = sampler.sample(64, 0, generator=_gen(13))
    crops = patches.crop_patches(images, params, r)
    for n in range(64):
        x, y = (params[n, 1:] * R).round().long().tolist()
        assert torch.allclose(crops[n], images[n, :, y : y + r, x : x + r], atol=1e-5)
    assert len({tuple(p.tolist()) for p in params}) > 20  # offsets really vary


def test_group_size_shares_params_within_mbstd_groups():
    from training.networks.discriminator import minibatch_stddev

    sampler = patches.make_patch_sampler('beta', 64, 16, group_size=4, **PAPER)
    params = sampler.sample(8, 5_000_000, generator=_gen(17))
    # minibatch_stddev puts samples i and i + 2 (i mod 2) in one group of 4: those share parameters.
    assert torch.equal(params[0::2], params[0:1].expand(4, 3)) and torch.equal(
        params[1::2], params[1:2].expand(4, 3)
    )
    assert not torch.equal(params[0], params[1])
    x = torch.zeros(8, 1, 1, 1)
    x[0::2] = 5.0  # a group of identical samples has zero spread
    assert minibatch_stddev(x, 4, 1)[:, 1].max() < 1e-3
    with pytest.raises(ValueError, match='divisible by group_size'):
        sampler.sample(6, 0)
    assert patches.make_patch_sampler('beta', 64, 16, group_size=4, **PAPER).sample(2, 0).shape == (2, 3)
