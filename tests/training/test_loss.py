import math
import types

import pytest
import torch

from training import cameras, patches
from training import loss as loss_mod
from training.augment import AugmentPipe
from training.loop import train_step
from training.networks.discriminator import PatchDiscriminator

PAPER = dict(r1_gamma=0.05, blur_init_sigma=0.0)  # the loss's options at their defaults (Sec. 3.4)
TINY_D = dict(
    img_resolution=16, patch_resolution=8, channel_base=32, channel_max=4, hyper_dim=8,
    hyper_table_dim=4, hyper_num_freqs=2, cmap_dim=4, camera_num_freqs=2,
)  # fmt: skip


class TinyG(torch.nn.Module):
    """Stand-in generator with the Generator's call signature: a patch of a smooth z-dependent image."""

    def __init__(self, z_dim=4, patch_resolution=8):
        super().__init__()
        self.z_dim, self.patch_resolution = z_dim, patch_resolution
        self.weight = torch.nn.Parameter(torch.randn(6, z_dim) * 0.5)
        self.calls = []

    def forward(self, z, camera, patch_params=None, resolution=None, **kwargs):
        self.calls.append(dict(camera=camera, patch_params=patch_params, kwargs=kwargs))
        uv = patches.patch_pixel_centres(patch_params.to(z.dtype), resolution or self.patch_resolution)
        a = (z @ self.weight.t())[:, :, None, None]  # [N, 6, 1, 1]
        img = torch.tanh(
            a[:, :3] * uv[None, ..., 0].movedim(0, 1) + a[:, 3:] * uv[None, ..., 1].movedim(0, 1)
        )
        return types.SimpleNamespace(image=img, depth=None, opacity=None)


def _batch(n=4, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    sampler = patches.make_patch_sampler('uniform', 16, 8, anneal_kimg=0)
    cam = cameras.angles_to_camera(
        torch.randn(n, generator=g) * 0.3, torch.full([n], 1.5), torch.full([n], 2.7), 18.0
    )
    return dict(
        real_patches=torch.rand(n, 3, 8, 8, generator=g, dtype=dtype) * 2 - 1,
        real_patch_params=sampler.sample(n, 0, generator=g).to(dtype),
        real_angles=torch.randn(n, 2, generator=g, dtype=dtype),
        gen_z=torch.randn(n, 4, generator=g, dtype=dtype),
        gen_camera=cam,
        gen_patch_params=sampler.sample(n, 0, generator=g).to(dtype),
    )


def _grads(module):
    return {k: (p.grad.clone() if p.grad is not None else None) for k, p in module.named_parameters()}


def _zero(*modules):
    for m in modules:
        for p in m.parameters():
            p.grad = None


def test_r1_penalty_equals_finite_differences_float64():
    torch.manual_seed(0)
    D = PatchDiscriminator(**TINY_D, mbstd_group_size=1).double()  # samples independent: batch the probes
    b = _batch(n=2, dtype=torch.float64)
    x, params = b['real_patches'], b['real_patch_params']
    penalty, _ = loss_mod.r1_penalty(D, x, params)
    eps, P = 1e-6, x[0].numel()
    for n in range(2):
        probes = torch.eye(P, dtype=x.dtype).reshape(P, *x.shape[1:]) * eps  # [P, 3, r, r]
        xs = torch.cat([x[n] + probes, x[n] - probes])  # [2P, 3, r, r]
        with torch.no_grad():
            out = D(xs, params[n : n + 1].expand(2 * P, 3))[:, 0]
        grad = (out[:P] - out[P:]) / (2 * eps)  # central differences, one per pixel and channel
        assert torch.allclose(penalty[n], grad.square().sum(), rtol=1e-6)


def test_dreg_gradient_matches_naive_autograd_float64():
    torch.manual_seed(1)
    G, D = TinyG().double(), PatchDiscriminator(**TINY_D).double()
    b = _batch(dtype=torch.float64)
    loss = loss_mod.PatchLoss('cpu', G, D, r1_gamma=0.7, blur_init_sigma=0)
    loss.accumulate_gradients('Dreg', **b, gain=16, cur_nimg=0)
    got = _grads(D)
    _zero(D)
    x = b['real_patches'].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x, b['real_patch_params']).sum(), x, create_graph=True)
    (g.square().sum(dim=[1, 2, 3]) * 0.7 / 2).mean().mul(16).backward()
    for k, p in D.named_parameters():
        naive = p.grad if p.grad is not None else torch.zeros_like(p)  # e.g. D's last bias: no R1 gradient
        assert torch.allclose(got[k], naive, rtol=1e-8, atol=1e-12), k
    assert all(p.grad is None for p in G.parameters())


def test_gmain_trains_g_only_with_non_saturating_loss():
    torch.manual_seed(2)
    G, D = TinyG(), PatchDiscriminator(**TINY_D)
    b = _batch()
    loss_mod.PatchLoss('cpu', G, D, **PAPER).accumulate_gradients('Gmain', **b, gain=2.0, cur_nimg=0)
    got = _grads(G)
    assert all(p.grad is None for p in D.parameters()) and all(p.requires_grad for p in D.parameters())
    _zero(G)
    fake = G(b['gen_z'], b['gen_camera'], patch_params=b['gen_patch_params']).image
    torch.nn.functional.softplus(-D(fake, b['gen_patch_params'])).mean().mul(2.0).backward()
    assert torch.allclose(got['weight'], G.weight.grad, atol=1e-7)


def test_dmain_and_dboth_gradients():
    torch.manual_seed(3)
    G, D = TinyG(), PatchDiscriminator(**TINY_D, mbstd_group_size=1)
    b = _batch()
    pipe = AugmentPipe(init_p=0.0)  # p = 0: identity, but it still collects ADA's sign(D(real))
    loss = loss_mod.PatchLoss('cpu', G, D, augment_pipe=pipe, r1_gamma=0.3, blur_init_sigma=0)
    value = loss.accumulate_gradients('Dmain', **b, gain=1.0, cur_nimg=0)
    main = _grads(D)
    assert all(p.grad is None for p in G.parameters()) and pipe.real_signs[1] == 4
    _zero(D)
    fake = G(b['gen_z'], b['gen_camera'], patch_params=b['gen_patch_params']).image.detach()
    sp = torch.nn.functional.softplus
    naive = (
        sp(D(fake, b['gen_patch_params'])).mean() + sp(-D(b['real_patches'], b['real_patch_params'])).mean()
    )
    naive.backward()
    assert torch.allclose(value, naive.detach())
    for k, p in D.named_parameters():
        assert torch.allclose(main[k], p.grad, atol=1e-6), k
    _zero(D)
    loss.accumulate_gradients('Dreg', **b, gain=1.0, cur_nimg=0)
    reg = _grads(D)
    _zero(D)
    loss.accumulate_gradients('Dboth', **b, gain=1.0, cur_nimg=0)
    for k, p in D.named_parameters():
        assert torch.allclose(main[k] + reg[k], p.grad, atol=1e-5), k


def test_reals_and_fakes_see_the_same_preprocessing_and_g_gets_its_kwargs():
    seen = []

    class SpyD(torch.nn.Module):
        img_resolution = 16

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, img, patch_params, camera_angles=None):
            seen.append(dict(img=img.detach(), params=patch_params, angles=camera_angles))
            return img.mean(dim=[1, 2, 3])[:, None] * self.w

    marker = lambda x: x + 100  # noqa: E731  (an "augmentation" that is easy to spot)
    G, D = TinyG(), SpyD()
    b = _batch()
    loss = loss_mod.PatchLoss(
        'cpu', G, D, augment_pipe=marker, r1_gamma=0.05, blur_init_sigma=1.0, blur_fade_kimg=10
    )
    loss.accumulate_gradients('Dmain', **b, gain=1, cur_nimg=20_000, gen_kwargs=dict(density_noise_std=0.5))
    assert G.calls[-1]['kwargs'] == dict(density_noise_std=0.5)
    fake_in, real_in = seen[0], seen[1]
    assert torch.allclose(real_in['img'], b['real_patches'] + 100)  # blur has faded out at 20 kimg
    assert (fake_in['img'] > 90).all() and torch.equal(real_in['params'], b['real_patch_params'])
    yaw, pitch, _ = cameras.camera_to_angles(b['gen_camera'].cam2world)
    assert torch.allclose(fake_in['angles'], torch.stack([yaw, pitch], 1))
    assert torch.equal(real_in['angles'], b['real_angles'])
    seen.clear()
    loss.accumulate_gradients('Dmain', **b, gain=1, cur_nimg=5_000)  # blur sigma 0.5: both sides blurred
    blurred = loss_mod.gaussian_blur(b['real_patches'], 0.5) + 100
    assert torch.allclose(seen[1]['img'], blurred, atol=1e-6) and not torch.allclose(
        seen[1]['img'], b['real_patches'] + 100
    )


def test_blur_schedule_and_kernel():
    loss = loss_mod.PatchLoss(
        'cpu', TinyG(), PatchDiscriminator(**TINY_D), r1_gamma=0.05, blur_init_sigma=10, blur_fade_kimg=200
    )
    assert (
        loss.blur_sigma(0) == 10
        and loss.blur_sigma(100_000) == pytest.approx(5)
        and loss.blur_sigma(1e6) == 0
    )
    # The public code's kernel: taps exp2(-(x / sigma)^2) for |x| <= floor(3 sigma), normalised.
    x = torch.zeros(1, 1, 15, 15)
    x[0, 0, 7, 7] = 1
    y = loss_mod.gaussian_blur(x, 2.0)[0, 0]
    taps = torch.exp2(-(torch.arange(-6, 7.0) / 2.0).square())
    taps = taps / taps.sum()
    assert torch.allclose(y[7, 1:14], taps * taps[6], atol=1e-7) and y[7, 0] == 0  # 13 taps, no more
    r2 = (torch.arange(15) - 7.0).square()
    var = (y.sum(0) * r2).sum()  # spread along x: a Gaussian of std sigma / sqrt(2 ln 2)
    assert var.item() == pytest.approx(4.0 / (2 * math.log(2)), rel=0.01)
    assert torch.equal(loss_mod.gaussian_blur(x, 0.3), x)  # floor(3 sigma) = 0: no taps, no blur


def test_r1_gamma_must_be_a_number_and_phase_errors():
    D = PatchDiscriminator(**TINY_D)
    assert loss_mod.PatchLoss('cpu', TinyG(), D, r1_gamma=2, blur_init_sigma=0).r1_gamma == 2.0
    for bad in (-1, 'auto', float('nan')):  # 'auto' is resolved by the options, never by the loss
        with pytest.raises(ValueError, match='r1_gamma'):
            loss_mod.PatchLoss('cpu', TinyG(), D, r1_gamma=bad, blur_init_sigma=0)
    loss = loss_mod.PatchLoss('cpu', TinyG(), D, **PAPER)
    with pytest.raises(ValueError, match='unknown phase'):
        loss.accumulate_gradients('Dmian', **_batch(), gain=1, cur_nimg=0)
    loss.accumulate_gradients('Greg', **_batch(), gain=1, cur_nimg=0)  # no generator regularizer
    assert all(p.grad is None for p in D.parameters())


def test_lazy_r1_scales_d_adam_by_the_interval_and_gamma_0_drops_dreg():
    """StyleGAN2 App. B: with R1 every k steps, D's lr and betas are adjusted by k / (k + 1)."""
    c = types.SimpleNamespace(
        betas=[0.0, 0.99], glr=0.0025, dlr=0.002, r1_interval=16, loss_kwargs=dict(r1_gamma=0.05)
    )
    D = PatchDiscriminator(**TINY_D)
    phases, opts = train_step.make_phases(c, TinyG(), D)
    assert [p.name for p in phases] == ['Gmain', 'Dmain', 'Dreg'] and phases[2].interval == 16
    d = opts['D'].param_groups[0]
    assert d['lr'] == pytest.approx(0.002 * 16 / 17) and d['betas'][1] == pytest.approx(0.99 ** (16 / 17))
    assert opts['G'].param_groups[0]['lr'] == 0.0025 and opts['G'].param_groups[0]['betas'] == (0.0, 0.99)
    c.loss_kwargs = dict(r1_gamma=0.0)
    assert [p.name for p in train_step.make_phases(c, TinyG(), D)[0]] == ['Gmain', 'Dmain']
