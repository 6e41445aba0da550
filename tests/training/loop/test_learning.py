"""Training improves the model: tests that fail when the loop does not learn.

They drive the real loop (training_loop.setup + train_step) on the tiny CPU config and check what a
broken loop cannot fake: one step moves G and D, G_ema moves toward G by exactly the configured beta,
lazy R1's gradient and adjusted Adam settings are the ones D's optimizer uses, the patch parameters
that crop the reals and render the fakes are the ones D is conditioned on, and a few dozen steps on a
one-colour dataset pull G_ema's colour toward the reals' while D learns to tell reals from fakes.
"""

import copy
import math
import os

import numpy as np
import PIL.Image
import pytest
import torch
from test_train_fixtures import make_tiny_setup, setup_train_state, take_step

from training import patches
from training.loop import train_step, training_loop

REAL_RGB = (200, 30, 30)  # every real disc is this red, on white


def _state(tmp_path, red=False, **overrides):
    """A TrainState of the tiny config (no augmentation), ready for train_step."""
    setup = make_tiny_setup(tmp_path, aug='noaug', kimg=1, **overrides)
    if red:
        for name in os.listdir(setup['data']):
            if name.endswith('.png'):
                path = os.path.join(setup['data'], name)
                img = np.array(PIL.Image.open(path))
                img[(img != 255).any(axis=-1)] = REAL_RGB
                PIL.Image.fromarray(img).save(path)
    return setup_train_state(setup)


def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_one_step_changes_every_part_of_G_and_D(tmp_path):
    s = _state(tmp_path)
    before = {name: _params(getattr(s, name)) for name in ('G', 'D')}
    take_step(s)
    for name, old in before.items():
        new = _params(getattr(s, name))
        changed = {k.split('.')[0] for k in old if not torch.equal(old[k], new[k])}
        parts = {k.split('.')[0] for k in old}
        # Every sub-network (G: mapping, synthesis, decoder; D: blocks, embedding, H, head, epilogue).
        assert changed == parts, f'{name}: unchanged parts {sorted(parts - changed)}'


@pytest.mark.parametrize('ema_rampup', [None, 0.05])
def test_G_ema_moves_toward_G_by_exactly_the_configured_beta(tmp_path, ema_rampup):
    s = _state(tmp_path, ema_kimg=0.01, ema_rampup=ema_rampup)
    take_step(s)  # cur_nimg 0 -> 4
    ema_before = _params(s.G_ema)
    cur_nimg = s.progress.cur_nimg
    take_step(s)
    ema_nimg = 10.0 if ema_rampup is None else min(10.0, cur_nimg * ema_rampup)
    beta = 0.5 ** (4 / ema_nimg)  # half-life ema_kimg: beta = 0.5^(batch / ema_nimg)
    assert 0 < beta < 1
    G, ema = _params(s.G), _params(s.G_ema)
    for k, old in ema_before.items():
        expected = beta * old + (1 - beta) * G[k]
        assert torch.allclose(ema[k], expected, atol=1e-6, rtol=1e-5), k
    assert any(not torch.equal(ema[k], ema_before[k]) for k in ema)


def _naive_r1_grads(D, reals, params, angles, gamma, gain):
    """d/dtheta of gain * gamma / 2 * mean ||grad_x D(x)||^2, written out directly."""
    x = reals.detach().requires_grad_(True)
    (grad_x,) = torch.autograd.grad(D(x, params, angles).sum(), x, create_graph=True)
    penalty = grad_x.square().sum(dim=[1, 2, 3]).mean() * (gamma / 2) * gain
    names = [k for k, p in D.named_parameters()]
    grads = torch.autograd.grad(penalty, [p for p in D.parameters()], allow_unused=True)
    return {k: g for k, g in zip(names, grads) if g is not None}


def test_lazy_r1_gradient_and_adjusted_adam_are_what_the_optimizer_uses(tmp_path):
    s = _state(
        tmp_path, batch_gpu=4
    )  # one round per step; r1_interval 4, gamma 0.05, dlr 0.002, betas (0, .99)
    k = s.c.r1_interval
    dreg = [p for p in s.phases if p.name == 'Dreg']
    assert len(dreg) == 1 and dreg[0].interval == k and dreg[0].opt is s.optimizers['D']
    [group] = s.optimizers['D'].param_groups
    assert group['lr'] == pytest.approx(s.c.dlr * k / (k + 1))
    assert group['betas'] == pytest.approx((0.0, 0.99 ** (k / (k + 1))))
    assert s.optimizers['G'].param_groups[0]['lr'] == s.c.glr  # G has no lazy regularizer
    # Dreg's gradient is gain * gamma / 2 * ||grad_x D(real)||^2 with gain = the interval.
    [real] = train_step.prepare_reals(s, training_loop.next_real_batches(s))
    [fake] = train_step.gen_inputs(s)
    s.D.requires_grad_(True)
    s.D.eval()  # no camera-feature dropout: two passes see the same D
    expected = _naive_r1_grads(s.D, real.img, real.params, real.angles, s.loss.r1_gamma, k)
    s.D.zero_grad(set_to_none=True)
    s.loss.accumulate_gradients(
        'Dreg', real.img, real.params, real.angles, fake.z, fake.camera, fake.params, gain=k, cur_nimg=0
    )
    got = {n: p.grad for n, p in s.D.named_parameters() if p.grad is not None}
    assert set(expected) <= set(got) and any(g.abs().max() > 0 for g in expected.values())
    for n, g in expected.items():
        assert torch.allclose(got[n], g, atol=1e-7, rtol=1e-4), n
    # ... and the loop runs it every k-th step.
    ran = []
    original = train_step.run_phase
    train_step.run_phase = lambda s_, ph, *a: (
        ran.append((s_.progress.batch_idx, ph.name)),
        original(s_, ph, *a),
    )
    try:
        s.D.train()
        for _ in range(k + 1):
            take_step(s)
    finally:
        train_step.run_phase = original
    assert [step for step, name in ran if name == 'Dreg'] == [0, k]
    assert [step for step, name in ran if name == 'Dmain'] == list(range(k + 1))


def test_D_is_conditioned_on_the_patch_parameters_that_made_its_inputs(tmp_path, monkeypatch):
    # One accumulation round per phase; Dmain renders its own fakes (the public code's phase order).
    s = _state(tmp_path, batch_gpu=4, reuse_fakes=False)
    crops, renders, seen = [], [], []
    crop = patches.crop_patches
    monkeypatch.setattr(patches, 'crop_patches', lambda img, p, r: (crops.append(p), crop(img, p, r))[1])
    G_forward, D_forward = s.G.forward, s.D.forward
    monkeypatch.setattr(
        s.G, 'forward', lambda *a, **kw: (renders.append(kw['patch_params']), G_forward(*a, **kw))[1]
    )
    monkeypatch.setattr(
        s.D, 'forward', lambda img, p, *a, **kw: (seen.append(p), D_forward(img, p, *a, **kw))[1]
    )
    s.progress.cur_nimg = 60  # mid-way through the 100-image scale annealing: scales below 1
    take_step(s)  # Gmain (fake), Dmain (fake, real), Dreg (real)
    assert len(crops) == 1 and len(renders) == 2 and len(seen) == 4
    assert torch.equal(seen[0], renders[0]) and torch.equal(seen[1], renders[1])  # fakes
    assert torch.equal(seen[2], crops[0]) and torch.equal(seen[3], crops[0])  # reals
    assert crops[0][:, 0].std() > 0 and not torch.equal(renders[0], renders[1])  # drawn, not constant


@pytest.mark.parametrize('reuse', [False, True])
def test_reused_fakes_are_the_patches_G_rendered_in_its_step(tmp_path, monkeypatch, reuse):
    """reuse_fakes: Dmain trains D on Gmain's own patches (same images, same patch parameters, same
    classes), so G renders once per step; without it, Dmain renders fresh fakes from new inputs."""
    s = _state(tmp_path, batch_gpu=4, reuse_fakes=reuse)
    renders, seen = [], []
    G_forward, D_forward = s.G.forward, s.D.forward
    monkeypatch.setattr(s.G, 'forward', lambda *a, **kw: renders.append(G_forward(*a, **kw)) or renders[-1])
    monkeypatch.setattr(
        s.D, 'forward', lambda img, p, *a, **kw: (seen.append((img, p)), D_forward(img, p, *a, **kw))[1]
    )
    s.progress.cur_nimg = 60  # scales below 1: patch parameters differ between draws
    take_step(s)  # Gmain (fake), Dmain (fake, real), Dreg (real)
    assert len(seen) == 4 and len(renders) == (1 if reuse else 2)
    (g_img, g_params), (d_img, d_params) = seen[0], seen[1]
    assert torch.equal(d_img, g_img.detach()) == reuse and torch.equal(d_params, g_params) == reuse
    assert not d_img.requires_grad  # D's loss must not reach G


def test_a_run_whose_options_predate_reuse_fakes_keeps_rendering_new_fakes(tmp_path, monkeypatch):
    # An in-place resume takes the run's stored training_options.json: one written before the option
    # existed has no `reuse_fakes` key, and that run must continue in the order it was trained with.
    s = _state(tmp_path, batch_gpu=4)
    del s.c['reuse_fakes']
    renders = []
    G_forward = s.G.forward
    monkeypatch.setattr(s.G, 'forward', lambda *a, **kw: renders.append(1) or G_forward(*a, **kw))
    take_step(s)
    assert len(renders) == 2


def _redness(s, G) -> float:
    """Mean of R - (G + B) / 2 over 8 fixed samples of G, in [-1, 1] units (reals: about +0.46)."""
    gen = torch.Generator().manual_seed(123)
    z = torch.randn(8, G.z_dim, generator=gen)
    with torch.no_grad():
        img = G(z, s.camera_prior.sample(8, generator=gen)).image
    return float((img[:, 0] - img[:, 1:].mean(dim=1)).mean())


def _real_minus_fake_score(s, G) -> float:
    """D's mean logit on 8 full real images minus that on 8 fakes of G, at the same patch parameters."""
    reals = torch.stack([torch.as_tensor(s.dataset[i][0]) for i in range(8)]).float() / 127.5 - 1
    reals = patches.crop_patches(reals, patches.full_image_patch_params(8), s.c.patch_res)
    labels = torch.stack([torch.as_tensor(s.dataset.get_label(i)) for i in range(8)])
    angles = train_step.real_angles(labels).float()
    params = patches.full_image_patch_params(8)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        fakes = G(torch.randn(8, G.z_dim, generator=gen), s.camera_prior.sample(8, generator=gen))
        fakes = patches.crop_patches(fakes.image, params, s.c.patch_res)
        s.D.eval()
        gap = s.D(reals, params, angles).mean() - s.D(fakes, params, angles).mean()
        s.D.train()
    return float(gap)


@pytest.mark.parametrize('reuse_fakes', [False, True])
def test_a_tiny_run_pulls_G_ema_toward_the_reals_and_D_separates_them(tmp_path, reuse_fakes):
    torch.set_num_threads(1)  # a few dozen small steps: threads only contend on a shared machine
    s = _state(tmp_path, red=True, glr=0.01, dlr=0.01, ema_kimg=0.02, reuse_fakes=reuse_fakes)
    G_init = copy.deepcopy(s.G_ema)
    start = _redness(s, s.G_ema)
    gap0 = _real_minus_fake_score(s, G_init)
    for _ in range(8):
        take_step(s)
    gap = _real_minus_fake_score(s, G_init)  # the fakes D saw first: it must have learned to reject them
    for _ in range(12):
        take_step(s)
    end = _redness(s, s.G_ema)
    # Measured: start -0.02, end +0.39 (reals +0.46); a loop without steps or EMA stays at the start.
    reals = torch.stack([torch.as_tensor(s.dataset[i][0]) for i in range(len(s.dataset))]).float() / 127.5 - 1
    target = float((reals[:, 0] - reals[:, 1:].mean(dim=1)).mean())  # about +0.46
    assert abs(end - target) < 0.6 * abs(start - target), (start, end, target)
    assert end - start > 0.15, (start, end)
    # D, trained 8 steps, scores reals above the first fakes (measured: -0.12 before, +0.23 after).
    assert gap > 0.1 and gap > gap0 + 0.2, (gap0, gap)
    assert math.isfinite(end)
