"""Speed policies that must not change results: when G recomputes its decoder, and when an op runs on one thread."""

import pytest
import torch
from shared_doubles import naive_modulated_conv

from torch_utils import threads
from torch_utils.ops import conv2d_gradfix
from training.options import config, derive


def _model_kwargs(preset: str, **flags):
    opts = config.resolve(config.load_preset(preset), dict(batch=4, batch_gpu=4, **flags))
    return derive.model_kwargs(opts, derive.load_dataset_preset(opts.dataset, preset), 4, preset)


@pytest.mark.parametrize(
    'preset, flags, expected',
    [
        ('demo', {}, False),  # 16 MB of decoder activations: recomputing them only costs time
        ('ffhq256', {}, True),  # 0.7 GB: keeping them would take the paper step past its 4.7 GB target
        ('demo', dict(checkpoint='on'), True),
        ('ffhq256', dict(checkpoint='off'), False),
        ('ffhq256', dict(memory_budget_gb=16.0), False),
    ],
)
def test_decoder_checkpointing_follows_the_memory_budget(preset, flags, expected):
    c = _model_kwargs(preset, **flags)
    assert c.G_kwargs['checkpoint_decode'] is expected
    assert derive.decoder_activation_gb(_model_kwargs('demo').G_kwargs, 4) == pytest.approx(
        4 * 32**2 * 16 * (16 + 32 + 16) * 4 / 2**30
    )


def test_serial_if_small_uses_one_thread_inside_and_restores_the_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cpu = torch.device('cpu')
        with threads.serial_if_small(threads.SERIAL_MACS - 1, cpu):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with threads.serial_if_small(threads.SERIAL_MACS, cpu):
            assert torch.get_num_threads() == 2  # big work keeps every thread
        with pytest.raises(RuntimeError), threads.serial_if_small(0, cpu):
            raise RuntimeError('the count is restored on errors too')
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_small_convs_give_the_same_values_and_gradients_on_one_thread():
    """conv2d_gradfix runs small convs single-threaded: values and first/second-order grads match F.conv2d."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(4, 8, 16, 16, generator=g, dtype=torch.float64, requires_grad=True)
        w = torch.randn(16, 8, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
        outs = []
        for conv in (conv2d_gradfix.conv2d, torch.nn.functional.conv2d):
            y = conv(x, w, stride=2, padding=1)
            (gx,) = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
            (gw,) = torch.autograd.grad(gx.square().sum(), [w])  # R1's double backward
            outs.append((y.detach(), gx.detach(), gw))
            assert torch.get_num_threads() == 2
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    finally:
        torch.set_num_threads(before)


def test_the_training_adam_step_equals_the_for_loop_adam():
    """make_adam's fused step makes the same updates as the reference for-loop Adam (float32 round-off)."""
    from training.loop import train_step

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    b = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    b.load_state_dict(a.state_dict())
    start = [p.detach().clone() for p in a.parameters()]
    opt_a = train_step.make_adam(a, lr=0.01, betas=(0, 0.99))
    opt_b = torch.optim.Adam(b.parameters(), lr=0.01, betas=(0.0, 0.99), eps=1e-8, foreach=False)
    assert opt_a.defaults['fused']
    for _ in range(5):
        x = torch.randn(4, 5)
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    for p, q, p0 in zip(a.parameters(), b.parameters(), start):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
        assert (p - p0).abs().max() > 1e-3  # it trained


def test_plane_projection_views_equal_indexing_by_the_named_axes():
    from training.networks.triplane import PLANE_AXES, project_onto_planes

    coords = torch.randn(2, 5, 3, requires_grad=True)
    naive = torch.stack([coords[..., list(axes)] for axes in PLANE_AXES], dim=1)  # [N, 3, P, 2]
    assert torch.equal(project_onto_planes(coords), naive)
    assert [tuple(a) for a in PLANE_AXES] == [(0, 1), (0, 2), (1, 2)]  # xy, xz, yz
    weights = torch.randn(2, 3, 5, 2)
    (g,) = torch.autograd.grad((project_onto_planes(coords) * weights).sum(), [coords])
    (g_naive,) = torch.autograd.grad((naive * weights).sum(), [coords])
    assert torch.equal(g, g_naive)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_channels_last_discriminator_matches_a_float64_reference():
    """D runs its conv blocks in channels_last; logits and gradients equal a float64 copy's to fp32 round-off."""
    import copy

    from training.networks.discriminator import PatchDiscriminator

    torch.manual_seed(0)
    D = PatchDiscriminator(64, 32, channel_base=512, channel_max=32, hyper_dim=16, hyper_table_dim=8)
    D64 = copy.deepcopy(D).double()
    img, params = torch.randn(4, 3, 32, 32), torch.rand(4, 3)
    seen = []
    hook = D.blocks[0].conv0.register_forward_hook(
        lambda m, i, o: seen.append(o.is_contiguous(memory_format=torch.channels_last))
    )
    grads = []
    for model, dtype in ((D, torch.float32), (D64, torch.float64)):
        x = img.to(dtype).requires_grad_(True)
        logits = model(x, params.to(dtype))
        weights = [model.blocks[0].fromrgb.weight, model.blocks[1].conv1.weight, model.epilogue.fc.weight]
        grads.append([logits, *torch.autograd.grad(logits.square().sum(), [x, *weights])])
    hook.remove()
    assert seen == [True]  # the optimisation is active
    for a, b in zip(*grads):
        assert _rel(a.double(), b) < 1e-5


@pytest.mark.parametrize('fused', [None, True, False])
@pytest.mark.parametrize('N,H,up', [(3, 4, 2), (3, 8, 1), (1, 4, 1)])
def test_modulated_conv_forms_equal_the_reference(fused, N, H, up):
    """Both forms of G's modulated conv, and the default choice between them, equal a naive per-sample conv."""
    from torch_utils.ops import upfirdn2d
    from training.networks import synthesis

    torch.manual_seed(0)
    x = torch.randn(N, 6, H, H, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(N, 6, dtype=torch.float64, requires_grad=True)
    kw = dict(up=up, padding=1, resample_filter=upfirdn2d.setup_filter([1, 3, 3, 1]).to(torch.float64))
    ours = synthesis.modulated_conv(x, weight, styles, fused=fused, **kw)
    ref = naive_modulated_conv(x, weight, styles, flip_weight=(up == 1), **kw)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(ref)
    for a, b in zip(
        torch.autograd.grad(ours, [x, weight, styles], g), torch.autograd.grad(ref, [x, weight, styles], g)
    ):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize('points', [30, 200])  # fewer / more points than plane pixels: both sampling layouts
def test_decode_equals_sample_then_forward_in_both_layouts(points):
    from training.networks import triplane

    torch.manual_seed(0)
    dec = triplane.TriPlaneDecoder(4, 8).double()
    with torch.no_grad():
        dec.hidden.bias.normal_()
        dec.out.bias.normal_()
    planes = torch.randn(2, 3, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    coords = torch.rand(2, points, 3, dtype=torch.float64) * 2.2 - 1.1
    fast, slow = dec.decode(planes, coords), dec(triplane.sample_triplane(planes, coords))
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(fast)
    inputs = [planes, *dec.parameters()]
    for a, b in zip(torch.autograd.grad(fast, inputs, g), torch.autograd.grad(slow, inputs, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_small_modulated_convs_run_unfused():
    from training.networks import synthesis

    torch.manual_seed(0)
    x, weight, styles = torch.randn(4, 8, 16, 16), torch.randn(8, 8, 3, 3), torch.randn(4, 8)
    default = synthesis.modulated_conv(x, weight, styles, padding=1)
    assert torch.equal(default, synthesis.modulated_conv(x, weight, styles, padding=1, fused=False))
    assert not torch.equal(default, synthesis.modulated_conv(x, weight, styles, padding=1, fused=True))
