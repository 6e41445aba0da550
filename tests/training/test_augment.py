import math

import pytest
import torch

from training import augment

GEOMETRIC = ['rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac']
COLOUR = ['brightness', 'contrast', 'lumaflip', 'hue', 'saturation']


def _only(name, p=1.0):
    weights = {k: 0.0 for k in GEOMETRIC + COLOUR}
    weights[name] = 1.0
    return augment.AugmentPipe(**weights, init_p=p)


def _images(n=8, res=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, res, res, generator=g) * 2 - 1


def test_p_zero_is_identity():
    images = _images()
    pipe = augment.AugmentPipe(init_p=0.0)
    assert pipe(images) is images


@pytest.mark.parametrize('name', GEOMETRIC)
def test_geometric_transforms_keep_shape_and_range(name):
    torch.manual_seed(0)
    images = _images()
    out = _only(name)(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    # Bilinear resampling with reflection padding is a convex combination of input pixels.
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    hi = images.amax(dim=(1, 2, 3), keepdim=True)
    assert (out >= lo - 1e-5).all() and (out <= hi + 1e-5).all()
    assert not torch.allclose(out, images)


@pytest.mark.parametrize('name', COLOUR)
def test_colour_transforms_keep_shape_and_range(name):
    torch.manual_seed(1)
    images = _images()
    out = _only(name)(images)
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, images)
    if name in ('hue', 'lumaflip'):
        # Rotations/reflections in RGB keep each pixel's distance to the grey axis origin: |x| is kept.
        assert torch.allclose(out.norm(dim=1), images.norm(dim=1), atol=1e-5)
    if name == 'hue':
        luma = torch.tensor(augment.LUMA_AXIS)[None, :, None, None]
        assert torch.allclose((out * luma).sum(1), (images * luma).sum(1), atol=1e-5)


def test_rotate90_and_xint_are_exact_pixel_permutations():
    torch.manual_seed(2)
    images = _images(n=16)
    for name in ['rotate90', 'xint']:
        out = _only(name)(images)
        for n in range(16):
            # Every output pixel is some input pixel (no interpolation blur).
            d = (out[n].reshape(3, -1, 1) - images[n].reshape(3, 1, -1)).abs().sum(0).amin(1)
            assert d.max() < 1e-4


def test_rotate90_matches_torch_rot90():
    torch.manual_seed(3)
    images = _images(n=32)
    out = _only('rotate90')(images)
    for n in range(32):
        assert any(
            torch.allclose(out[n], torch.rot90(images[n], k, dims=(1, 2)), atol=1e-5) for k in range(4)
        )


def test_probability_of_each_transform_is_p():
    torch.manual_seed(4)
    images = _images(n=2000, res=4)
    out = _only('brightness', p=0.3)(images)
    changed = (out - images).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert abs(changed.float().mean().item() - 0.3) < 0.04


def test_reals_and_fakes_are_augmented_alike():
    # One pipeline, no notion of real/fake: the same input statistics give the same output statistics.
    pipe = augment.AugmentPipe(init_p=0.8)
    x = torch.zeros(4000, 3, 4, 4) + 0.25
    torch.manual_seed(5)
    a = pipe(x).mean(dim=(1, 2, 3))
    torch.manual_seed(6)
    b = pipe(x.clone()).mean(dim=(1, 2, 3))
    assert abs(a.mean() - b.mean()) < 0.03 and abs(a.std() - b.std()) < 0.03


def test_augmentation_is_differentiable_twice():
    # R1 is taken through the pipeline, so D's double backward must pass through it.
    torch.manual_seed(7)
    pipe = augment.AugmentPipe(init_p=1.0)
    x = _images(n=2, res=8).double().requires_grad_(True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(8)
    y = torch.nn.functional.conv2d(pipe(x), w).square().sum()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    g.square().sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_ada_p_rises_when_overfitting_and_falls_otherwise():
    pipe = augment.AugmentPipe(init_p=0.5)
    ada = augment.AdaController(target=0.6, interval=4, speed_kimg=500, batch_size=64)
    step = 64 * 4 / 500_000
    for _ in range(4):
        pipe.accumulate_real_signs(torch.ones(64, 1))  # r_t = 1 > 0.6: D is overfitting
        ada.step(pipe)
    assert float(pipe.p) == pytest.approx(0.5 + step)
    for _ in range(4):
        pipe.accumulate_real_signs(torch.tensor([1.0, -1.0, -1.0, 1.0]).repeat(16)[:, None])  # r_t = 0 < 0.6
        ada.step(pipe)
    assert float(pipe.p) == pytest.approx(0.5)
    assert ada.last_rt == pytest.approx(0.0) and pipe.real_signs.tolist() == [0.0, 0.0]


def test_ada_adjusts_every_interval_and_reaches_one_in_speed_kimg():
    pipe = augment.AugmentPipe(init_p=0.0)
    ada = augment.AdaController(target=0.6, interval=4, speed_kimg=1, batch_size=50)  # 0 -> 1 in 1000 images
    ps = []
    for _ in range(20):
        pipe.accumulate_real_signs(torch.ones(50))
        ps.append(ada.step(pipe))
    assert ps[:3] == [0.0, 0.0, 0.0] and ps[3] == pytest.approx(0.2)
    assert ps[19] == pytest.approx(1.0)
    for _ in range(8):
        pipe.accumulate_real_signs(-torch.ones(50))
        ada.step(pipe)
    assert float(pipe.p) == pytest.approx(0.6)


def test_ada_state_resumes_exactly():
    # The signs since the last adjustment live in the pipe's buffers; the step count in the controller.
    pipe = augment.AugmentPipe(init_p=0.3)
    ada = augment.AdaController(target=0.6, interval=4, speed_kimg=1, batch_size=10)
    for _ in range(2):
        pipe.accumulate_real_signs(torch.ones(10))
        ada.step(pipe)
    state, pipe_state = ada.state_dict(), {k: v.clone() for k, v in pipe.state_dict().items()}
    assert all(isinstance(v, (int, float, type(None))) for v in state.values())
    pipe2, ada2 = (
        augment.AugmentPipe(**pipe.init_kwargs),
        augment.AdaController(target=0.6, interval=4, speed_kimg=1, batch_size=10),
    )
    pipe2.load_state_dict(pipe_state)
    ada2.load_state_dict(state)
    for p, a in [(pipe, ada), (pipe2, ada2)]:
        for _ in range(2):
            p.accumulate_real_signs(-torch.ones(10) * 0.5)
            a.step(p)
    assert float(pipe2.p) == float(pipe.p) and ada2.last_rt == ada.last_rt == 0.0


def test_ada_without_signs_is_a_clear_error():
    ada = augment.AdaController(target=0.6, interval=1, speed_kimg=500, batch_size=64)
    with pytest.raises(RuntimeError, match='PatchLoss'):
        ada.step(augment.AugmentPipe())


def test_clear_errors():
    with pytest.raises(ValueError, match='AdaController'):
        augment.AdaController(target=1.5, interval=4, speed_kimg=500, batch_size=64)
    with pytest.raises(ValueError, match='weights'):
        augment.AugmentPipe(hue=2.0)
    with pytest.raises(ValueError, match='3 channels'):
        _only('hue')(torch.zeros(2, 1, 8, 8))
    assert math.isclose(sum(v * v for v in augment.LUMA_AXIS), 1.0)


def test_checkpoint_round_trip_keeps_p_and_signs(tmp_path):
    from torch_utils import checkpoint

    pipe = augment.AugmentPipe(hue=0.5, init_p=0.25)
    pipe.accumulate_real_signs(torch.tensor([1.0, -1.0, 1.0]))
    path = str(tmp_path / 'a.pt')
    checkpoint.save(
        path, dict(format_version=checkpoint.FORMAT_VERSION, modules={'a': checkpoint.module_state(pipe)})
    )
    pipe2 = checkpoint.build_module(checkpoint.load(path)['modules']['a'])
    assert float(pipe2.p) == 0.25 and pipe2.weights['hue'] == 0.5 and pipe2.real_signs.tolist() == [1.0, 3.0]
