"""conv2d_resample: every fused path against a naive upsample -> conv -> downsample composition."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix, conv2d_resample, upfirdn2d


def naive_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """Literal composition: zero-insert, pad, filter (x up^2), conv, filter, subsample, each a separate step."""
    fh, fw = (f.shape[0], f.shape[-1]) if f is not None else (1, 1)
    f2 = f if f is None or f.ndim == 2 else torch.outer(f, f)
    f2 = torch.ones([1, 1], dtype=x.dtype) if f2 is None else f2.to(x.dtype)
    if not flip_filter:
        f2 = f2.flip([0, 1])
    px0, px1, py0, py1 = upfirdn2d._parse_padding(padding)
    if up > 1:
        px0, px1, py0, py1 = (
            px0 + (fw + up - 1) // 2,
            px1 + (fw - up) // 2,
            py0 + (fh + up - 1) // 2,
            py1 + (fh - up) // 2,
        )
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    N, C, H, W = x.shape
    z = torch.zeros([N, C, H * up, W * up], dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    z = z[:, :, max(-py0, 0) : z.shape[2] - max(-py1, 0), max(-px0, 0) : z.shape[3] - max(-px1, 0)]
    depthwise = lambda t, k: F.conv2d(t, k[None, None].repeat(t.shape[1], 1, 1, 1), groups=t.shape[1])  # noqa: E731
    if up > 1:
        z = depthwise(z, f2 * up**2)
    z = F.conv2d(z, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        z = depthwise(z, f2)[:, :, ::down, ::down]
    return z


CASES = [
    # (Cin, Cout, k, up, down, padding, groups, flip_weight, flip_filter, filter)
    (2, 3, 3, 1, 1, 1, 1, True, False, [1, 3, 3, 1]),
    (2, 3, 3, 1, 1, [2, 0, 1, 1], 1, False, False, [1, 3, 3, 1]),
    (2, 3, 3, 2, 1, 1, 1, False, False, [1, 3, 3, 1]),
    (4, 2, 3, 2, 1, 1, 2, True, True, [1, 2, 1]),
    (2, 3, 1, 2, 1, 0, 1, True, False, [1, 3, 3, 1]),
    (2, 3, 3, 1, 2, 1, 1, True, False, [1, 3, 3, 1]),
    (4, 4, 3, 1, 2, [1, 0, 2, 1], 4, False, True, [1, 2, 1]),
    (2, 3, 1, 1, 2, 0, 1, True, False, [1, 3, 3, 1]),
    (2, 3, 3, 2, 2, 1, 1, True, False, [1, 3, 3, 1]),
    (2, 2, 3, 3, 1, 1, 1, True, False, [[1, 2, 1], [2, 4, 3]]),
    (2, 2, 3, 2, 1, 1, 1, True, False, None),
]


@pytest.mark.parametrize('Cin,Cout,k,up,down,padding,groups,flip_weight,flip_filter,f', CASES)
def test_matches_naive_composition(Cin, Cout, k, up, down, padding, groups, flip_weight, flip_filter, f):
    g = torch.Generator().manual_seed(0)
    x = torch.randn([2, Cin, 6, 6], generator=g, dtype=torch.float64)
    w = torch.randn([Cout, Cin // groups, k, k], generator=g, dtype=torch.float64)
    f = upfirdn2d.setup_filter(f) if f is not None else None
    kw = dict(
        up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight, flip_filter=flip_filter
    )
    y = conv2d_resample.conv2d_resample(x, w, f, **kw)
    expected = naive_conv2d_resample(x, w, f.to(torch.float64) if f is not None else None, **kw)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)


def test_3x3_conv_with_padding_1_maps_size_exactly():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn([1, 2, 8, 8])
    w = torch.randn([3, 2, 3, 3])
    assert conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1).shape == (1, 3, 16, 16)
    assert conv2d_resample.conv2d_resample(x, w, f, down=2, padding=1).shape == (1, 3, 4, 4)
    assert conv2d_resample.conv2d_resample(x, w, f, padding=1).shape == (1, 3, 8, 8)


@pytest.mark.parametrize('up,down', [(1, 1), (2, 1), (1, 2)])
def test_gradcheck_gradgradcheck_and_no_weight_gradients(up, down):
    g = torch.Generator().manual_seed(2)
    x = torch.randn([1, 2, 4, 4], generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn([2, 2, 3, 3], generator=g, dtype=torch.float64, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).to(torch.float64)
    fn = lambda x, w: conv2d_resample.conv2d_resample(x, w, f, up=up, down=down, padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))
    with conv2d_gradfix.no_weight_gradients():
        fn(x, w).sum().backward()
    assert w.grad is None and x.grad is not None


def test_errors_are_clear():
    x = torch.zeros([1, 2, 4, 4])
    with pytest.raises(AssertionError, match='dimension 1'):
        conv2d_resample.conv2d_resample(x, torch.zeros([3, 3, 3, 3]))
    with pytest.raises(ValueError, match='up and down'):
        conv2d_resample.conv2d_resample(x, torch.zeros([3, 2, 3, 3]), up=0)
    with pytest.raises(ValueError, match='setup_filter'):
        conv2d_resample.conv2d_resample(x, torch.zeros([3, 2, 3, 3]), f=[1, 3, 3, 1])
