import copy
import inspect
import math

import pytest
import torch
from shared_doubles import naive_modulated_conv

import dnnlib
from training import cameras, patches
from training.networks import synthesis, triplane
from training.networks.generator import Generator, RenderOutput, density_noise_std

TINY = dict(
    z_dim=8, w_dim=8, img_resolution=16, patch_resolution=4, plane_resolution=16, plane_channels=4,
    channel_base=64, channel_max=8, decoder_hidden=8, num_coarse=6, num_fine=6, scene_bounds=0.5,
    ray_start=0.5, ray_end=1.5, checkpoint_res=None,
)  # fmt: skip


def _tiny_G(**kw):
    torch.manual_seed(0)
    G = Generator(**{**TINY, **kw}).eval()
    with torch.no_grad():  # give the field some structure: random planes decode to visible density
        for p in G.decoder.parameters():
            p.normal_()
    return G


def _camera(n=2):
    return cameras.angles_to_camera([0.2, -0.3, 0.5][:n], [1.4, 1.7, 1.5][:n], 1.0, fov_deg=50)


def _render(G, z, camera, **kw):
    return G(z, camera, noise_mode='const', **kw)


# ----------------------------------------------------------------------------
# Tri-plane decoder.


def test_plane_pairs_are_pinned():
    H = W = 8
    centres = -1 + (2 * torch.arange(W) + 1) / W  # pixel-centre coordinates (align_corners=False)
    planes = torch.zeros(1, 3, 2, H, W)
    planes[:, :, 0] = centres[None, :].expand(H, W)  # channel 0: the width coordinate
    planes[:, :, 1] = centres[:, None].expand(H, W)  # channel 1: the height coordinate
    torch.manual_seed(0)
    coords = torch.rand(1, 50, 3) * 1.6 - 0.8  # inside the pixel-centre hull, where bilinear is exact
    feats = triplane.sample_triplane(planes, coords)  # [1, 3, P, 2]
    assert triplane.PLANE_NAMES == ('xy', 'xz', 'yz')
    axis = {'x': 0, 'y': 1, 'z': 2}
    for k, name in enumerate(triplane.PLANE_NAMES):
        assert torch.allclose(feats[0, k, :, 0], coords[0, :, axis[name[0]]], atol=1e-5), name
        assert torch.allclose(feats[0, k, :, 1], coords[0, :, axis[name[1]]], atol=1e-5), name


def test_points_outside_the_box_read_zero_features():
    planes = torch.ones(1, 3, 2, 4, 4)
    feats = triplane.sample_triplane(planes, torch.tensor([[[1.5, 0.0, 0.0], [0.0, 0.0, 0.0]]]))
    assert (feats[0, :2, 0] == 0).all() and (feats[0, 2, 0] == 1).all() and (feats[0, :, 1] == 1).all()


def test_density_is_zero_outside_the_box_and_the_box_walls_do_not_render():
    G = _tiny_G(density_shift=5.0, ray_start=2.5, ray_end=5.5)  # dense everywhere the field is defined
    ws = G.mapping(torch.randn(1, G.z_dim))
    planes = G.synthesis(ws, noise_mode='const')
    b = G.scene_bounds
    outside = torch.tensor([[[1.01 * b, 0.0, 0.0], [0.0, -1.5 * b, 0.0], [2 * b, 2 * b, 2 * b]]])
    inside = torch.tensor([[[0.0, 0.0, 0.0], [0.99 * b, 0.5 * b, -0.5 * b]]])
    assert (G.query_points(planes, outside)[1] == 0).all()
    assert (G.query_points(planes, inside)[1] > 0).all()
    # A ray that misses the box entirely sees only the background (white: +1).
    far = cameras.angles_to_camera([0.0], [math.pi / 2], 4.0, fov_deg=60)
    patch = torch.tensor([[0.05, 0.0, 0.0]])  # the top-left corner: those rays pass beside the box
    centre = G.render(planes, far, torch.tensor([[0.05, 0.475, 0.475]]), resolution=2)
    assert (centre.opacity > 0.99).all()  # while rays through the centre hit the dense box
    out = G.render(planes, far, patch, resolution=2)
    assert torch.allclose(out.image, torch.ones_like(out.image), atol=1e-3)
    assert (out.opacity < 1e-3).all()


def test_density_field_synthesises_once_and_equals_density():
    G = _tiny_G()
    ws = G.mapping(torch.randn(2, G.z_dim))
    points = torch.rand(2, 40, 3) - 0.5
    calls = []
    G.synthesis.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        field = G.density_field(ws)
        chunks = [field(points[:, i : i + 10]) for i in range(0, 40, 10)]
        assert len(calls) == 1
        assert torch.allclose(torch.cat(chunks, dim=1), G.density(ws, points), atol=1e-6)


def test_density_noise_schedule():
    assert density_noise_std(0) == 1.0
    assert math.isclose(density_noise_std(2_500_000), 0.5)
    assert density_noise_std(5_000_000) == 0.0 and density_noise_std(9e9) == 0.0
    assert density_noise_std(1_000_000, init_std=2.0, anneal_kimg=2000) == 1.0


def test_fast_decode_equals_sample_then_forward():
    torch.manual_seed(0)
    dec = triplane.TriPlaneDecoder(4, 8)
    with torch.no_grad():
        dec.hidden.bias.normal_()
        dec.out.bias.normal_()
    planes = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    coords = torch.rand(2, 30, 3, dtype=torch.float64) * 2.2 - 1.1
    dec = dec.double()
    fast, slow = dec.decode(planes, coords), dec(triplane.sample_triplane(planes, coords))
    assert torch.allclose(fast, slow, atol=1e-12)
    g = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, [planes, *dec.parameters()], g)
    grads_slow = torch.autograd.grad(slow, [planes, *dec.parameters()], g)
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads_fast, grads_slow))


def test_decoder_ranges_and_density_shift():
    torch.manual_seed(0)
    dec = triplane.TriPlaneDecoder(4, 8, density_shift=-3.0)
    raw = dec(torch.randn(2, 3, 10, 4) * 10)
    rgb, sigma = dec.activate(raw)
    assert rgb.shape == (2, 10, 3) and sigma.shape == (2, 10, 1)
    assert (rgb.abs() <= 1.001 + 1e-6).all() and (sigma >= 0).all()
    assert torch.allclose(sigma, torch.nn.functional.softplus(raw[..., 3:] - 3.0))
    _, noisy = dec.activate(raw, noise_std=1.0)
    assert not torch.allclose(noisy, sigma)


def test_density_scale_multiplies_the_density_and_reaches_the_render():
    """density_scale k: sigma = k * softplus(raw + shift), colours untouched; a G built with k renders
    more opaque pixels than the same weights with k = 1 (the factor is not lost between G and decoder)."""
    torch.manual_seed(0)
    plain = triplane.TriPlaneDecoder(4, 8, density_shift=-1.0)
    scaled = triplane.TriPlaneDecoder(4, 8, density_shift=-1.0, density_scale=6.0)
    scaled.load_state_dict(plain.state_dict())
    raw = plain(torch.randn(2, 3, 10, 4))
    (rgb1, sigma1), (rgb6, sigma6) = plain.activate(raw), scaled.activate(raw)
    assert torch.equal(rgb1, rgb6) and torch.allclose(sigma6, 6.0 * sigma1)
    G1, G6 = _tiny_G(density_shift=-2.0), _tiny_G(density_shift=-2.0, density_scale=6.0)
    G6.load_state_dict(G1.state_dict())
    z, cam = torch.randn(2, G1.z_dim), _camera(2)
    with torch.no_grad():
        o1, o6 = _render(G1, z, cam).opacity, _render(G6, z, cam).opacity
    assert o6.mean() > o1.mean() + 0.05


# ----------------------------------------------------------------------------
# In-place activation of the synthesis network.


@pytest.mark.parametrize(
    'alpha,gain,clamp', [(0.2, math.sqrt(2), None), (0.2, math.sqrt(2), 0.8), (1, 1, 0.5)]
)
def test_bias_act_inplace_matches_naive_and_gradcheck(alpha, gain, clamp):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def naive(x, b):
        y = torch.nn.functional.leaky_relu(x + b[:, None, None], alpha) * gain
        return y.clamp(-clamp, clamp) if clamp is not None else y

    def inplace(x, b):
        return synthesis.bias_act_inplace(x * 1, b, alpha, gain, clamp)  # x * 1: a non-leaf to modify

    assert torch.allclose(inplace(x, b), naive(x, b))
    assert torch.autograd.gradcheck(inplace, (x, b))


@pytest.mark.parametrize(
    'N,H,up,demodulate', [(1, 4, 1, True), (3, 4, 2, True), (3, 16, 1, True), (3, 4, 1, False)]
)
def test_modulated_conv_matches_a_naive_per_sample_conv(N, H, up, demodulate):
    from torch_utils.ops import upfirdn2d

    torch.manual_seed(0)
    x = torch.randn(N, 6, H, H, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(N, 6, dtype=torch.float64, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).to(torch.float64)
    kw = dict(up=up, padding=1, resample_filter=f, demodulate=demodulate)
    ours = synthesis.modulated_conv(x, weight, styles, **kw)
    ref = naive_modulated_conv(x, weight, styles, flip_weight=(up == 1), **kw)
    assert torch.allclose(ours, ref, atol=1e-10)
    g = torch.randn_like(ref)
    assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(
        torch.autograd.grad(ours, [x, weight, styles], g), torch.autograd.grad(ref, [x, weight, styles], g)))  # fmt: skip


def test_upsample2x_equals_upfirdn2d():
    from torch_utils.ops import upfirdn2d

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64, requires_grad=True)
    ours = synthesis.upsample2x(x)
    ref = upfirdn2d.upsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1]).to(torch.float64))
    assert ours.shape == (2, 3, 10, 14) and torch.allclose(ours, ref, atol=1e-12)
    g = torch.randn_like(ref)
    assert torch.allclose(torch.autograd.grad(ours, x, g)[0], torch.autograd.grad(ref, x, g)[0], atol=1e-12)


# ----------------------------------------------------------------------------
# Generator interface.


def test_generator_interface_and_shapes():
    G = _tiny_G()
    assert (G.z_dim, G.w_dim, G.img_resolution, G.patch_resolution, G.scene_bounds) == (8, 8, 16, 4, 0.5)
    assert G.num_ws == G.synthesis.num_ws == 1 + 2 + 2 + 1  # convs at 4, 8, 16, + the final to-planes
    z = torch.randn(2, 8)
    out = _render(G, z, _camera(), patch_params=torch.tensor([[0.5, 0.1, 0.2], [1.0, 0.0, 0.0]]))
    assert isinstance(out, RenderOutput)
    assert (
        out.image.shape == (2, 3, 4, 4)
        and out.depth.shape == (2, 1, 4, 4)
        and out.opacity.shape == (2, 1, 4, 4)
    )
    full = _render(G, z, _camera())
    assert full.image.shape == (2, 3, 16, 16)
    assert (full.image.abs() <= 1.01).all() and (full.opacity <= 1 + 1e-5).all()
    ws = G.mapping(z)
    assert ws.shape == (2, G.num_ws, 8)
    assert G.synthesis(ws, noise_mode='const').shape == (2, 3, 4, 16, 16)


def test_init_kwargs_are_plain_data_and_rebuild_the_same_generator():
    G = _tiny_G(bg_model=True)
    kwargs = G.init_kwargs
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in kwargs.values())
    G2 = dnnlib.util.construct_class_by_name(
        class_name='training.networks.generator.Generator', **kwargs
    ).eval()
    G2.load_state_dict(G.state_dict())
    z = torch.randn(1, 8)
    assert torch.equal(_render(G, z, _camera(1)).image, _render(G2, z, _camera(1)).image)


def test_paper_defaults():
    defaults = {
        k: v.default for k, v in inspect.signature(Generator.__init__).parameters.items() if k != 'self'
    }
    assert defaults['z_dim'] == defaults['w_dim'] == 512 and defaults['mapping_layers'] == 2
    assert (defaults['plane_resolution'], defaults['plane_channels']) == (512, 32)
    assert (defaults['num_coarse'], defaults['num_fine'], defaults['patch_resolution']) == (48, 48, 64)
    assert (
        defaults['img_resolution'] == 256
        and defaults['decoder_hidden'] == 64
        and defaults['bg_samples'] == 16
    )


def test_full_patch_equals_full_render_and_patches_are_crops():
    G = _tiny_G()
    z, cam = torch.randn(2, 8), _camera()
    full = _render(G, z, cam)
    as_patch = _render(G, z, cam, patch_params=patches.full_image_patch_params(2), resolution=16)
    for a, b in zip(full, as_patch):
        assert torch.allclose(a, b, atol=1e-6)
    params = torch.tensor([[0.25, 0.5, 0.25], [0.25, 0.0, 0.75]])  # aligned 4x4 crops of the 16x16 image
    patch = _render(G, z, cam, patch_params=params)
    assert torch.allclose(patch.image[0], full.image[0, :, 4:8, 8:12], atol=1e-5)
    assert torch.allclose(patch.image[1], full.image[1, :, 12:16, 0:4], atol=1e-5)
    assert torch.allclose(patch.depth[1], full.depth[1, :, 12:16, 0:4], atol=1e-5)


def test_patch_equals_render_at_its_pixel_centres():
    G = _tiny_G()
    z, cam = torch.randn(2, 8), _camera()
    params = torch.tensor([[0.37, 0.11, 0.5], [0.8, 0.05, 0.13]])
    patch = _render(G, z, cam, patch_params=params)
    # The same pixel centres, cast as a 'full image' of a camera whose intrinsics map the patch to [0, 1]^2.
    K = cam.intrinsics.clone()
    s, dx, dy = params.unbind(1)
    K[:, 0, 0], K[:, 1, 1] = K[:, 0, 0] / s, K[:, 1, 1] / s
    K[:, 0, 2], K[:, 1, 2] = (K[:, 0, 2] - dx) / s, (K[:, 1, 2] - dy) / s
    zoomed = _render(G, z, cameras.Camera(cam.cam2world, K), resolution=4)
    assert torch.allclose(patch.image, zoomed.image, atol=1e-5)


def test_chunked_equals_unchunked():
    G = _tiny_G(bg_model=True)
    z, cam = torch.randn(2, 8), _camera()
    whole = _render(G, z, cam)
    G_chunked = copy.deepcopy(G)
    G_chunked.point_chunk = 50  # points per decode, not a divisor of anything
    chunked = _render(G_chunked, z, cam, ray_chunk=22)
    for a, b in zip(whole, chunked):
        assert torch.allclose(a, b, atol=1e-5)
    ws = G.mapping(z)
    points = torch.rand(2, 300, 3) - 0.5
    assert torch.allclose(G.density(ws, points), G.density(ws, points, chunk_size=64), atol=1e-6)


def test_checkpointing_gives_the_same_values_and_gradients():
    results = []
    for ckpt in [
        dict(checkpoint_res=None, checkpoint_decode=False),
        dict(checkpoint_res=8, checkpoint_decode=True),
    ]:
        G = _tiny_G(**ckpt)
        G.point_chunk = 100
        z = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
        out = _render(G, z, _camera(), patch_params=torch.tensor([[0.5, 0.1, 0.2], [1.0, 0.0, 0.0]]))
        (out.image.square().sum() + out.depth.sum()).backward()
        results.append((out.image.detach(), {n: p.grad.clone() for n, p in G.named_parameters()}))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    for name, grad in results[0][1].items():
        assert torch.allclose(grad, results[1][1][name], atol=1e-5, rtol=1e-4), name


def test_checkpoint_recompute_replays_the_same_random_noise():
    results = []
    for checkpoint_res in [None, 8]:
        G = _tiny_G(checkpoint_res=checkpoint_res)
        G.synthesis.checkpoint_batch = 2  # one slice: the same random draws as without checkpointing
        with torch.no_grad():
            for name, p in G.named_parameters():
                if 'noise_strength' in name:
                    p.fill_(0.5)
        torch.manual_seed(5)
        planes = G.synthesis(G.mapping(torch.randn(2, 8)), noise_mode='random')
        weights = torch.arange(planes.numel()).reshape(planes.shape).sin()
        results.append(
            (planes.detach(), torch.autograd.grad((planes * weights).sum(), list(G.synthesis.parameters())))
        )
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5, rtol=1e-4) for a, b in zip(results[0][1], results[1][1]))


def test_gradients_reach_every_parameter_and_forward_keeps_state():
    G = _tiny_G(bg_model=True).train()
    before = copy.deepcopy(G.state_dict())
    out = G(torch.randn(2, 8), _camera(), patch_params=torch.tensor([[0.5, 0.1, 0.2], [1.0, 0.0, 0.0]]),
            density_noise_std=0.5)  # fmt: skip
    out.image.sum().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None]
    assert not missing, missing
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_truncation_and_w_average():
    G = _tiny_G()
    z = torch.randn(3, 8)
    G.mapping(z, update_emas=True)
    assert not torch.equal(G.mapping.w_avg, torch.zeros(8))
    ws = G.mapping(z, truncation_psi=0)
    assert torch.allclose(ws, G.mapping.w_avg.expand_as(ws))
    ws = G.mapping(z, truncation_psi=0, truncation_cutoff=2)
    assert torch.allclose(ws[:, :2], G.mapping.w_avg.expand(3, 2, 8)) and not torch.allclose(
        ws[:, 2], ws[:, 1]
    )


def test_sample_multiplier_and_foreground_only():
    G = _tiny_G(bg_model=True)
    z, cam = torch.randn(1, 8), _camera(1)
    hq = _render(G, z, cam, num_samples_multiplier=3)
    base = _render(G, z, cam)
    assert hq.image.shape == base.image.shape and (hq.image - base.image).abs().max() < 0.5
    fg = _render(G, z, cam, foreground_only=True)
    assert (fg.opacity <= base.opacity + 1e-5).all()


def test_user_mistakes_have_clear_errors():
    G = _tiny_G(bg_model=True)
    with pytest.raises(AssertionError):
        G(torch.randn(3, 8), _camera(2))
    with pytest.raises(ValueError, match='noise_mode'):
        G(torch.randn(2, 8), _camera(2), noise_mode='bogus')
    with pytest.raises(ValueError, match='needs ws'):
        G.render(G.synthesis(G.mapping(torch.randn(2, 8))[:, : G.synthesis.num_ws]), _camera(2))
    with pytest.raises(ValueError, match='ray_start'):
        Generator(**{**TINY, 'ray_start': 2.0})
    with pytest.raises(ValueError, match='power of two'):
        Generator(**{**TINY, 'plane_resolution': 24})
