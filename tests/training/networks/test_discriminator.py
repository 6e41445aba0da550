import pytest
import torch

from training.networks import discriminator as disc
from training.networks.hypernet import HyperNetwork, PatchEmbedding

TINY = dict(
    img_resolution=32, patch_resolution=16, channel_base=64, channel_max=16, hyper_dim=16,
    hyper_table_dim=8, hyper_num_freqs=3, cmap_dim=8, camera_num_freqs=2,
)  # fmt: skip


def _inputs(n=4, seed=0, r=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, 3, r, r, generator=g, dtype=dtype)
    s = 0.5 + 0.5 * torch.rand(n, 1, generator=g, dtype=dtype)
    params = torch.cat([s, (1 - s) * torch.rand(n, 2, generator=g, dtype=dtype)], dim=1)
    angles = torch.randn(n, 2, generator=g, dtype=dtype) * 0.3 + torch.tensor([0.0, 1.57], dtype=dtype)
    return img, params, angles


def _zero_adapters(D):
    with torch.no_grad():
        for adapter in D.hyper.adapters.values():
            adapter.weight.zero_()
            adapter.bias.zero_()


def test_block_layout_matches_a_full_resolution_discriminator():
    D = disc.PatchDiscriminator(256, 64, channel_base=256, channel_max=8, hyper_dim=8, hyper_table_dim=4)
    assert D.block_resolutions == [64, 64, 64, 32, 16, 8]
    assert [b.conv1.down for b in D.blocks] == [1, 1, 2, 2, 2, 2]
    # Channel widths of the full-resolution blocks at 256, 128, ..., 8 (min(256 // v, 8)).
    assert [b.conv0.in_channels for b in D.blocks] == [1, 2, 4, 8, 8, 8]
    assert sum(1 for b in D.blocks if b.use_fp16) == 4  # the four highest-resolution blocks
    D512 = disc.PatchDiscriminator(512, 64, channel_base=512, channel_max=8, hyper_mod=False)
    assert D512.block_resolutions == [64, 64, 64, 64, 32, 16, 8]
    assert [b.conv1.down for b in D512.blocks] == [1, 1, 1, 2, 2, 2, 2]
    D_full = disc.PatchDiscriminator(32, 32, channel_base=64, channel_max=8, hyper_mod=False)  # r = R
    assert D_full.block_resolutions == [32, 16, 8] and all(b.conv1.down == 2 for b in D_full.blocks)
    x = D(
        torch.randn(4, 3, 64, 64),
        torch.tensor([[1.0, 0, 0], [0.25, 0.5, 0.1], [0.5, 0.2, 0.3], [0.3, 0, 0.7]]),
    )
    assert x.shape == (4, 1) and torch.isfinite(x).all()


@pytest.mark.parametrize('mode', ['output', 'input'])
def test_unit_sigma_equals_the_standard_discriminator(mode):
    torch.manual_seed(0)
    D_hyper = disc.PatchDiscriminator(**TINY, hyper_mod=True, hyper_mod_mode=mode)
    D_std = disc.PatchDiscriminator(**TINY, hyper_mod=False)  # keeps the patch embedding for its head
    shared = {k: v for k, v in D_hyper.state_dict().items() if not k.startswith('hyper.')}
    D_std.load_state_dict(shared, strict=True)
    _zero_adapters(D_hyper)  # Eq. 7: tanh(0) + 1 = 1
    img, params, _ = _inputs()
    assert all(torch.equal(s, torch.ones_like(s)) for s in D_hyper.modulations(params).values())
    assert torch.allclose(D_hyper(img, params), D_std(img, params), atol=1e-6, rtol=0)


def test_sigma_is_in_zero_two_and_covers_every_layer():
    torch.manual_seed(1)
    D = disc.PatchDiscriminator(**TINY)
    img, params, _ = _inputs(n=8)
    sigmas = D.modulations(params)
    expected = D.modulated_channels()
    assert set(sigmas) == {f'blocks.{i}.conv1_in' for i in range(len(D.blocks))} == set(expected)
    D_out = disc.PatchDiscriminator(**TINY, hyper_mod_mode='output')
    assert 'epilogue.conv' in D_out.modulated_channels() and 'blocks.0.fromrgb' in D_out.modulated_channels()
    for name, s in sigmas.items():
        assert s.shape == (8, expected[name])
        assert (s > 0).all() and (s < 2).all()
        assert s.std() > 0.01  # really modulated at initialisation
    with torch.no_grad():  # large adapter weights saturate tanh but never leave [0, 2]
        for adapter in D.hyper.adapters.values():
            adapter.weight.mul_(1000)
    for s in D.modulations(params).values():
        assert (s >= 0).all() and (s <= 2).all()


def test_paper_embedding_is_828_dimensional():
    embed = PatchEmbedding()
    assert embed.out_features == 828
    params = torch.tensor([[1.0, 0.0, 0.0], [0.1234, 0.5, 0.8766]])
    e = embed(params)
    assert e.shape == (2, 828)
    # The table part of each scalar reads row round(1000 x).
    assert torch.equal(e[1, :256], embed.tables[0].weight[123])
    assert torch.equal(e[0, 276 : 276 + 256], embed.tables[1].weight[0])


def test_hypernetwork_is_built_like_the_mapping_network():
    # B.1: embedding layer, 2nd-moment normalisation, 2 FC layers at lr multiplier 0.01 (configurable).
    H = HyperNetwork({'a': 4}, in_features=12, hyper_dim=8)
    assert [layer.weight_gain for layer in H.mlp.layers] == pytest.approx([0.01 / 8**0.5] * 2)
    assert H.mlp.embed.weight_gain == pytest.approx(1 / 12**0.5)
    x = torch.randn(5, 12)
    assert torch.allclose(H.mlp(x), H.mlp(x * 7.0), atol=1e-5)  # normalised: the input scale is irrelevant
    D = disc.PatchDiscriminator(**TINY, camera_cond=True, hyper_lr_multiplier=0.5, cond_lr_multiplier=0.1)
    assert D.hyper.mlp.layers[0].weight_gain == pytest.approx(0.5 / 16**0.5)
    assert D.mapping.mlp.layers[0].weight_gain == pytest.approx(0.1 / 8**0.5)


def test_projection_head_reads_the_patch_embedding_the_hypernetwork_reads():
    torch.manual_seed(7)
    D = disc.PatchDiscriminator(**TINY)  # paper defaults: hyper_mod and patch_cond
    assert D.mapping is not None and D.mapping.patch_features == D.patch_embed.out_features == 3 * (8 + 6)
    img, params, _ = _inputs()
    other = params.clone()
    other[:, 1:] = 0.3
    with torch.no_grad():
        for adapter in D.hyper.adapters.values():  # sigma = 1: only the head can see the patch parameters
            adapter.weight.zero_()
            adapter.bias.zero_()
    assert (D(img, params) - D(img, other)).abs().min() > 1e-7
    with torch.no_grad():
        D.patch_embed.tables[1].weight.add_(1.0)  # the one table feeds both H and the head
    embedding = D.patch_embed(params)
    assert torch.equal(D.mapping(None, embedding, None), D.mapping.mlp(embedding))


def test_changing_only_patch_params_changes_the_output():
    torch.manual_seed(2)
    img, params, _ = _inputs()
    other = params.clone()
    other[:, 0] = 0.55
    other[:, 1:] = 0.3
    D = disc.PatchDiscriminator(**TINY, hyper_mod=True)
    assert (D(img, params) - D(img, other)).abs().min() > 1e-6
    D_std = disc.PatchDiscriminator(**TINY, hyper_mod=False, patch_cond=False)
    assert torch.equal(D_std(img, params), D_std(img, other))
    D_cond = disc.PatchDiscriminator(**TINY, hyper_mod=False, patch_cond=True)
    assert (D_cond(img, params) - D_cond(img, other)).abs().min() > 1e-7
    D_std = disc.PatchDiscriminator(**TINY, hyper_mod=False, patch_cond=False)
    assert D_std.patch_embed is None and D_std.mapping is None


def test_gradcheck_float64():
    torch.manual_seed(3)
    D = disc.PatchDiscriminator(**TINY, camera_cond=True, patch_cond=True).double().eval()
    img, params, angles = _inputs(n=4, dtype=torch.float64)
    params[:, 0] = torch.tensor([0.9012, 0.6034, 0.7721, 0.55])  # away from table-rounding boundaries
    img.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: D(x, params, angles), (img,), fast_mode=True)
    # (s, dx, dy) and angles: the 128-cycle Fourier features curve D steeply, so a smaller step.
    params.requires_grad_(True)
    angles.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, a: D(img.detach(), p, a), (params, angles), eps=1e-7, atol=1e-4)


def test_minibatch_stddev_matches_naive_loop():
    x = torch.randn(8, 6, 4, 4, dtype=torch.float64)
    y = disc.minibatch_stddev(x, group_size=4, num_channels=2)
    assert y.shape == (8, 8, 4, 4) and torch.equal(y[:, :6], x)
    for n in range(8):
        group = x[n % 2 :: 2]  # samples n, n +- 2, ... share a group (interleaved, as in StyleGAN2)
        for f in range(2):
            feats = group[:, 3 * f : 3 * f + 3]
            std = feats.var(dim=0, unbiased=False).add(1e-8).sqrt().mean()
            assert torch.allclose(y[n, 6 + f], std.expand(4, 4))
    with pytest.raises(ValueError, match='divisible by mbstd_group_size'):
        disc.minibatch_stddev(torch.randn(6, 2, 4, 4), 4, 1)


def test_camera_conditioning_and_dropout():
    torch.manual_seed(4)
    D = disc.PatchDiscriminator(**TINY, camera_cond=True)
    img, params, angles = _inputs()
    with pytest.raises(ValueError, match='camera_angles'):
        D(img, params)
    D.eval()
    a, b = D(img, params, angles), D(img, params, angles + 0.3)
    assert torch.equal(a, D(img, params, angles)) and (a - b).abs().min() > 1e-7
    D.train()  # dropout 0.5 on the camera features makes two passes differ
    assert not torch.equal(D(img, params, angles), D(img, params, angles))


def test_init_kwargs_rebuild_and_clear_errors():
    D = disc.PatchDiscriminator(**TINY, camera_cond=True)
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in D.init_kwargs.values())
    D2 = disc.PatchDiscriminator(**D.init_kwargs)
    D2.load_state_dict(D.state_dict(), strict=True)
    with pytest.raises(ValueError, match='power of two'):
        disc.PatchDiscriminator(48, 16)
    with pytest.raises(ValueError, match='exceeds'):
        disc.PatchDiscriminator(32, 64)
    with pytest.raises(ValueError, match='hyper_mod_mode'):
        disc.PatchDiscriminator(32, 16, hyper_mod_mode='weights')
    with pytest.raises(AssertionError):
        D(torch.randn(4, 3, 32, 32), torch.zeros(4, 3), torch.zeros(4, 2))


@pytest.mark.gpu
def test_mixed_precision_on_cuda_matches_fp32():
    torch.manual_seed(5)
    D = disc.PatchDiscriminator(**TINY, num_fp16_res=2).cuda()
    img, params, _ = _inputs()
    img, params = img.cuda(), params.cuda()
    out16 = D(img, params)
    for block in D.blocks:
        block.use_fp16 = False
    out32 = D(img, params)
    assert out16.dtype == torch.float32 and torch.isfinite(out16).all()
    assert torch.allclose(out16, out32, atol=2e-2, rtol=2e-2)


def test_checkpoint_round_trip(tmp_path):
    from torch_utils import checkpoint

    torch.manual_seed(6)
    D = disc.PatchDiscriminator(**TINY, camera_cond=True, patch_cond=True).eval()
    path = str(tmp_path / 'd.pt')
    checkpoint.save(
        path, dict(format_version=checkpoint.FORMAT_VERSION, modules={'D': checkpoint.module_state(D)})
    )
    D2 = checkpoint.build_module(checkpoint.load(path)['modules']['D']).eval()
    img, params, angles = _inputs()
    assert torch.equal(D(img, params, angles), D2(img, params, angles))


def test_class_conditioning_projects_a_one_hot_class():
    torch.manual_seed(8)
    D = disc.PatchDiscriminator(**TINY, c_dim=3).eval()
    img, params, _ = _inputs()
    c0, c1 = torch.eye(3)[[0, 0, 0, 0]], torch.eye(3)[[1, 1, 1, 1]]
    assert D.mapping.c_dim == 3 and D.mapping.mlp.embed.in_features == 3 * (8 + 6)
    assert D.mapping.mlp.embed_c.in_features == 3  # the class has its own embedding
    assert (D(img, params, c=c0) - D(img, params, c=c1)).abs().min() > 1e-7
    with pytest.raises(ValueError, match='class labels'):
        D(img, params)


def test_the_class_weighs_as_much_as_the_patch_features_in_the_conditioning():
    # Embedded and normalised on its own, a one-hot class fills half of the first layer's input, however
    # many patch features there are (828 in the paper): one embedding of both let the class move it ~10 %.
    torch.manual_seed(9)
    D = disc.PatchDiscriminator(**TINY, c_dim=3).eval()
    embedding = D.patch_embed(_inputs()[1])
    first = {}
    hook = D.mapping.mlp.layers[0].register_forward_pre_hook(lambda m, a: first.setdefault('x', a[0]))
    D.mapping(None, embedding, torch.eye(3)[[0, 1, 2, 0]])
    hook.remove()
    features, classes = first['x'].chunk(2, dim=1)
    assert torch.allclose(features.square().mean(1), torch.ones(4), atol=1e-4)
    assert torch.allclose(classes.square().mean(1), torch.ones(4), atol=1e-4)
    assert torch.equal(classes[0], classes[3]) and (classes[0] - classes[1]).abs().max() > 0.1
    only_classes = disc.ConditionMapping(False, 0, 3, 8, 4, 0.0, 2, 0.01)  # no patch or camera inputs
    assert only_classes(None, None, torch.eye(3)).shape == (3, 8)


def test_adapter_init_scales_the_initial_modulation_and_zero_still_learns():
    img, params, _ = _inputs(n=8)
    spread = {}
    for scale in (1.0, 0.1):
        torch.manual_seed(9)
        D = disc.PatchDiscriminator(**TINY, hyper_adapter_init=scale)
        spread[scale] = torch.cat([(s - 1).flatten() for s in D.modulations(params).values()]).abs().mean()
    assert spread[0.1] < 0.2 * spread[1.0]  # tanh is near-linear at small scale: sigma - 1 shrinks ~10x
    D = disc.PatchDiscriminator(**TINY, hyper_adapter_init=0.0)
    assert all(torch.equal(s, torch.ones_like(s)) for s in D.modulations(params).values())
    D(img, params).sum().backward()  # W_l = 0 still gets a gradient (p is non-zero), so H can learn
    assert all(a.weight.grad.abs().max() > 0 for a in D.hyper.adapters.values())
