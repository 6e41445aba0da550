"""Low precision (bf16) against fp32 on small configs: G's planes and gradients, D's logits, R1 and gradients,
the rendered image; plus how 'auto' resolves and how the options reach the constructors.

Bounds (relative L2 error ||low - fp32|| / ||fp32||, same weights and inputs): bf16 keeps 8 mantissa
bits (unit roundoff 2^-9 = 0.2 %); through a dozen convs the forward values stay within 2 %, the backward
compounds rounding in every layer to about 7 % on the synthesis network, far below the minibatch noise of
a GAN gradient. The decoder and compositing are fp32 in every precision, so the same planes give the
same image exactly.
"""

import os
import subprocess
import sys

import pytest
import torch
from repo_paths import REPO_ROOT

import dnnlib
from torch_utils import precision
from training import cameras
from training.loss import r1_penalty
from training.networks import discriminator as disc
from training.networks.generator import Generator
from training.networks.synthesis import TriPlaneSynthesis
from training.options import config, derive

FORWARD_BOUND = 0.02  # planes, D logits, R1 penalty
G_GRAD_BOUND = 0.12  # all synthesis parameter gradients together
D_GRAD_BOUND = 0.03  # all D parameter gradients (logits + R1) together
ROOT = REPO_ROOT

SYNTH = dict(w_dim=32, plane_resolution=32, plane_channels=8, channel_base=512, channel_max=32)
TINY_D = dict(
    img_resolution=32, patch_resolution=16, channel_base=64, channel_max=16, hyper_dim=16,
    hyper_table_dim=8, hyper_num_freqs=3, cmap_dim=8, camera_num_freqs=2, camera_cond=True,
)  # fmt: skip


def _rel(a, b):
    return float((a.detach().double() - b.double()).norm() / b.double().norm())


def _flat_grads(module):
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


def _pair(cls, **kw):
    """The same module (same weights) in fp32 and bf16, in eval mode with gradients on."""
    torch.manual_seed(0)
    ref = cls(**kw, precision='fp32').eval().requires_grad_(True)
    low = cls(**kw, precision='bf16').eval().requires_grad_(True)
    low.load_state_dict(ref.state_dict())
    return ref, low


@pytest.mark.parametrize('checkpoint_res', [None, 16])
def test_bf16_synthesis_matches_fp32_within_bounds(checkpoint_res):
    ref, low = _pair(TriPlaneSynthesis, **SYNTH, checkpoint_res=checkpoint_res)
    ws = torch.randn(2, ref.num_ws, 32, generator=torch.Generator().manual_seed(1))
    proj = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(2))
    planes = {}
    for name, S in (('fp32', ref), ('bf16', low)):
        p = S(ws, noise_mode='const')
        (p * proj).sum().backward()
        planes[name] = p.detach()
    assert (
        planes['bf16'].dtype == torch.float32 and planes['bf16'].is_contiguous()
    )  # what the decoder expects
    assert 1e-4 < _rel(planes['bf16'], planes['fp32']) < FORWARD_BOUND  # > 1e-4: bf16 really ran
    assert _rel(_flat_grads(low), _flat_grads(ref)) < G_GRAD_BOUND
    assert all(torch.isfinite(p.grad).all() for p in low.parameters() if p.grad is not None)


def test_bf16_discriminator_logits_r1_and_gradients_match_fp32():
    ref, low = _pair(disc.PatchDiscriminator, **TINY_D)
    g = torch.Generator().manual_seed(3)
    img = torch.randn(4, 3, 16, 16, generator=g)
    params = torch.tensor([[0.5, 0.1, 0.2]]).repeat(4, 1)
    angles = torch.randn(4, 2, generator=g) * 0.3
    out = {}
    for name, D in (('fp32', ref), ('bf16', low)):
        logits = D(img, params, angles)
        penalty, _ = r1_penalty(D, img, params, angles)  # R1's double backward through the bf16 convs
        (logits.sum() + penalty.sum()).backward()
        out[name] = (logits.detach(), penalty.detach(), _flat_grads(D))
    assert out['bf16'][0].dtype == torch.float32  # the epilogue and loss see fp32
    assert 1e-4 < _rel(out['bf16'][0], out['fp32'][0]) < FORWARD_BOUND
    assert _rel(out['bf16'][1], out['fp32'][1]) < FORWARD_BOUND
    assert _rel(out['bf16'][2], out['fp32'][2]) < D_GRAD_BOUND


def test_decoder_and_compositing_give_the_same_image_in_every_precision():
    kw = dict(
        z_dim=16, w_dim=16, img_resolution=16, patch_resolution=8, plane_resolution=16, plane_channels=4,
        channel_base=128, channel_max=16, decoder_hidden=8, num_coarse=4, num_fine=4, scene_bounds=1.0,
        ray_start=0.5, ray_end=1.5, checkpoint_res=None,
    )  # fmt: skip
    ref, low = _pair(Generator, **kw)
    camera = cameras.angles_to_camera([0.2, -0.3], [1.4, 1.7], 1.0, fov_deg=50)
    planes = ref.synthesis(ref.mapping(torch.randn(2, 16)), noise_mode='const')
    torch.testing.assert_close(
        low.render(planes, camera).image, ref.render(planes, camera).image, rtol=0, atol=0
    )
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(4))
    images = [G(z, camera, noise_mode='const').image for G in (ref, low)]
    assert _rel(images[1], images[0]) < FORWARD_BOUND


def test_fp16_computes_in_fp32_on_the_cpu():
    torch.manual_seed(0)
    ref = TriPlaneSynthesis(**SYNTH, precision='fp32')
    half = TriPlaneSynthesis(**SYNTH, precision='fp16')
    half.load_state_dict(ref.state_dict())
    ws = torch.randn(1, ref.num_ws, 32)
    torch.testing.assert_close(half(ws, noise_mode='const'), ref(ws, noise_mode='const'))


def test_auto_resolves_by_hardware(tmp_path, monkeypatch):
    with_bf16, without = tmp_path / 'a', tmp_path / 'b'
    with_bf16.write_text('processor : 0\nflags : fpu sse2 avx512f avx512_bf16\n')
    without.write_text('processor : 0\nflags : fpu sse2 avx2\n')
    assert precision.cpu_has_bf16(str(with_bf16)) and not precision.cpu_has_bf16(str(without))
    monkeypatch.setattr(precision, 'cpu_has_bf16', lambda: False)
    assert precision.resolve('auto', 'cpu') == 'fp32' and precision.resolve('bf16', 'cpu') == 'bf16'
    monkeypatch.setattr(precision, 'cpu_has_bf16', lambda: True)
    assert precision.resolve('auto', 'cpu') == 'bf16'
    for bf16_gpu, expected in ((True, 'bf16'), (False, 'fp16')):  # A100/H100 vs V100
        monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True, v=bf16_gpu: v)
        assert precision.resolve('auto', 'cuda') == expected
    with pytest.raises(ValueError, match='precision must be one of'):
        precision.resolve('half')
    assert precision.CHOICES == config.CHOICES['precision']


def _model_kwargs(**flags):
    opts = config.resolve(config.load_preset('ffhq256'), dict(batch=4, **flags))
    dp = derive.load_dataset_preset(opts.dataset, 'ffhq256')
    return derive.model_kwargs(opts, dp, 4, 'ffhq256')


def test_options_reach_the_constructors_and_paper_setting_is_one_flag_away():
    c = _model_kwargs(precision='bf16')
    assert (c.G_kwargs['precision'], c.D_kwargs['precision']) == ('bf16', 'bf16')
    assert c.resolved_precision == dict(G='bf16', D='bf16')
    c = _model_kwargs(precision='fp16', g_fp32=True)  # the paper: G fp32, D mixed precision
    assert (c.G_kwargs['precision'], c.D_kwargs['precision']) == ('fp32', 'fp16')
    assert _model_kwargs(precision='bf16', fp32=True).resolved_precision == dict(G='fp32', D='fp32')
    D = dnnlib.construct_class_by_name(**dict(c.D_kwargs, channel_base=256, channel_max=8, hyper_dim=8))
    assert sum(b.use_fp16 for b in D.blocks) == 4  # the paper's four fp16 blocks (on CUDA)


def test_checkpointing_is_a_memory_budget_decision():
    # Paper config, batch 4: about 1.6 GB of synthesis activations in bf16, 2.3 GB in fp32.
    assert _model_kwargs(precision='bf16').G_kwargs['checkpoint_res'] is None
    assert _model_kwargs(precision='bf16', memory_budget_gb=1.0).G_kwargs['checkpoint_res'] == 128
    assert _model_kwargs(precision='fp32', memory_budget_gb=2.0).G_kwargs['checkpoint_res'] == 128
    assert _model_kwargs(checkpoint='on').G_kwargs['checkpoint_res'] == 128
    assert _model_kwargs(checkpoint='off', memory_budget_gb=0.1).G_kwargs['checkpoint_res'] is None
    G_kwargs = dict(precision='bf16')
    assert derive.synthesis_activation_gb(dict(G_kwargs), 8) == pytest.approx(
        2 * derive.synthesis_activation_gb(G_kwargs, 4)
    )


def test_threads_are_configured_before_torch_loads():
    code = (
        'from torch_utils import threads; threads.configure(1); import os, torch; '
        'print(torch.get_num_threads(), os.environ["OMP_WAIT_POLICY"])'
    )
    env = {k: v for k, v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS')}
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.split() == ['1', 'PASSIVE'], out.stderr


def test_evaluation_and_export_clis_sleep_their_idle_threads_unless_told_otherwise():
    """calc_metrics.py and gen_samples.py beside a training run: passive OpenMP waits, set before torch loads."""
    code = 'import os, calc_metrics, gen_samples; print(os.environ["OMP_WAIT_POLICY"])'
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.split() == ['PASSIVE'], out.stderr
    env['OMP_WAIT_POLICY'] = 'ACTIVE'  # a user's own choice stands
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.split() == ['ACTIVE'], out.stderr
