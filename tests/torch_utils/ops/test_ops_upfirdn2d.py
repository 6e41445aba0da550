"""upfirdn2d ref path against a naive per-pixel loop, resampling helpers, float64 gradients."""

import numpy as np
import pytest
import torch

from torch_utils.ops import upfirdn2d


def naive_upfirdn2d(x, f, up, down, pad, flip_filter, gain):
    """Per-output-pixel sum over filter taps on the virtual zero-inserted, padded image."""
    x = x.numpy()
    f = f.numpy()
    if f.ndim == 1:
        f = np.outer(f, f)
    f = f * gain
    if not flip_filter:
        f = f[::-1, ::-1]  # convolution = correlation with the flipped filter
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    N, C, H, W = x.shape
    fh, fw = f.shape
    out_h = (H * upy + py0 + py1 - fh) // downy + 1
    out_w = (W * upx + px0 + px1 - fw) // downx + 1
    out = np.zeros([N, C, out_h, out_w])
    for oy in range(out_h):
        for ox in range(out_w):
            for ty in range(fh):
                for tx in range(fw):
                    uy = oy * downy + ty - py0  # position in the zero-inserted image
                    ux = ox * downx + tx - px0
                    if uy % upy or ux % upx:
                        continue
                    iy, ix = uy // upy, ux // upx
                    if 0 <= iy < H and 0 <= ix < W:
                        out[:, :, oy, ox] += x[:, :, iy, ix] * f[ty, tx]
    return torch.from_numpy(out)


CASES = [
    # (up, down, padding, filter, flip_filter, gain)
    (1, 1, 0, [1, 2, 1], False, 1),
    (2, 1, [2, 1, 2, 1], [1, 3, 3, 1], False, 4),
    (1, 2, [1, 1, 1, 1], [1, 3, 3, 1], False, 1),
    (3, 2, [1, 2, 0, 3], [[1, 2, 0], [0, 1, 3]], False, 1),
    ([2, 1], [1, 2], [2, 1, 0, 1], [[1, 2, 3], [4, 5, 6]], True, 2),
    (1, 1, [-1, 2, 1, -1], [[0.5, -1], [2, 1]], False, 1),
    (2, 2, 3, [1, 2, 3, 4, 5, 6, 7, 8], False, 1),  # 8 taps: separable path
    (1, 2, [2, 2, 1, 1], [1, 3, 3, 1], False, 1),  # equal per axis: the conv pads (x 2, y 1)
    (1, 1, [2, 2, 3, 3], [1, 2, 3, 4, 5, 6, 7, 8], False, 1),  # the same on the separable path
    (1, 1, [1, 1, 2, 0], [1, 3, 3, 1], False, 1),  # unequal on one axis: padded copy
]


@pytest.mark.parametrize('up,down,padding,f,flip_filter,gain', CASES)
def test_matches_naive_loop(up, down, padding, f, flip_filter, gain):
    g = torch.Generator().manual_seed(0)
    x = torch.randn([2, 3, 5, 4], generator=g, dtype=torch.float64)
    f = upfirdn2d.setup_filter(f, normalize=False).to(torch.float64)
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    expected = naive_upfirdn2d(
        x,
        f,
        upfirdn2d._parse_scaling(up),
        upfirdn2d._parse_scaling(down),
        upfirdn2d._parse_padding(padding),
        flip_filter,
        gain,
    )
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def test_setup_filter():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    assert float(f.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(
        f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
    )
    fs = upfirdn2d.setup_filter([1, 3, 3, 1], separable=True, gain=4)
    assert fs.shape == (4,) and float(fs.sum()) == pytest.approx(2.0)
    assert upfirdn2d.setup_filter([1] * 8).shape == (8,)  # >= 8 taps: separable by default
    with pytest.raises(ValueError, match='separable'):
        upfirdn2d.setup_filter([[1, 2], [3, 4]], separable=True)


def test_resampling_helpers_keep_size_and_constants():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.full([1, 2, 8, 8], 0.7)
    up = upfirdn2d.upsample2d(x, f)
    down = upfirdn2d.downsample2d(x, f)
    same = upfirdn2d.filter2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4) and same.shape == (1, 2, 8, 8)
    # Away from the zero-padded border, a constant image stays constant (brightness preserved).
    torch.testing.assert_close(up[..., 3:-3, 3:-3], torch.full_like(up[..., 3:-3, 3:-3], 0.7))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 0.7))
    torch.testing.assert_close(same[..., 2:-2, 2:-2], torch.full_like(same[..., 2:-2, 2:-2], 0.7))


def test_errors_are_clear():
    x = torch.zeros([1, 1, 4, 4])
    f = upfirdn2d.setup_filter([1, 1])
    with pytest.raises(ValueError, match='4D'):
        upfirdn2d.upfirdn2d(torch.zeros([4, 4]), f)
    with pytest.raises(ValueError, match='empty output'):
        upfirdn2d.upfirdn2d(x, f, padding=-3)
    with pytest.raises(ValueError, match='padding'):
        upfirdn2d.upfirdn2d(x, f, padding=[1, 2, 3])
    with pytest.raises(ValueError, match='down factors'):
        upfirdn2d.upfirdn2d(x, f, down=0)


@pytest.mark.parametrize('up,down,padding,f', [(2, 1, [2, 1, 2, 1], [1, 3, 3, 1]), (1, 2, 1, [1, 2, 1]),
                                               (1, 1, [1, -1, 0, 1], [[1, 2], [0, 3]])])  # fmt: skip
def test_gradcheck_and_gradgradcheck(up, down, padding, f):
    g = torch.Generator().manual_seed(1)
    x = torch.randn([1, 2, 4, 3], generator=g, dtype=torch.float64, requires_grad=True)
    f = upfirdn2d.setup_filter(f).to(torch.float64)
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, gain=1.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize('up,down,padding,f,flip_filter', [(c[0], c[1], c[2], c[3], c[4]) for c in CASES])
def test_adjoint_used_by_the_cuda_twin(up, down, padding, f, flip_filter):
    """The CUDA twin's backward is upfirdn2d with swapped factors (grad_params); check it with `ref` here."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn([1, 2, 7, 5], generator=g, dtype=torch.float64, requires_grad=True)
    f = upfirdn2d.setup_filter(f, normalize=False).to(torch.float64)
    up, down, pad = (
        upfirdn2d._parse_scaling(up),
        upfirdn2d._parse_scaling(down),
        upfirdn2d._parse_padding(padding),
    )
    y = upfirdn2d._upfirdn2d_ref(x, f, up, down, pad, flip_filter, 1.7)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    (expected,) = torch.autograd.grad(y, x, dy)
    sizes = (5, 7), (y.shape[3], y.shape[2]), upfirdn2d._get_filter_size(f)
    g_up, g_down, g_pad, g_flip = upfirdn2d.grad_params(*sizes, up, down, pad, flip_filter)
    torch.testing.assert_close(upfirdn2d._upfirdn2d_ref(dy, f, g_up, g_down, g_pad, g_flip, 1.7), expected)
