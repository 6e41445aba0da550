"""conv2d_gradfix: same values/gradients as torch, any-order derivatives, and no_weight_gradients()."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix

CONV_CASES = [
    # (Cin, Cout, k, stride, padding, dilation, groups)
    (2, 3, 3, 1, 1, 1, 1),
    (4, 2, 2, 2, 0, 1, 2),
    (2, 2, 3, 2, 1, 2, 1),
]


def _conv_inputs(Cin, Cout, k, groups, transpose, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn([2, Cin, 6, 5], generator=g, dtype=torch.float64, requires_grad=True)
    shape = [Cin, Cout // groups, k, k] if transpose else [Cout, Cin // groups, k, k]
    w = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn([Cout], generator=g, dtype=torch.float64, requires_grad=True)
    return x, w, b


@pytest.mark.parametrize('Cin,Cout,k,stride,padding,dilation,groups', CONV_CASES)
def test_conv2d_matches_torch_and_has_all_derivatives(Cin, Cout, k, stride, padding, dilation, groups):
    x, w, b = _conv_inputs(Cin, Cout, k, groups, transpose=False)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    torch.testing.assert_close(conv2d_gradfix.conv2d(x, w, b, **kw), F.conv2d(x, w, b, **kw))
    fn = lambda x, w, b: conv2d_gradfix.conv2d(x, w, b, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize('Cin,Cout,k,stride,padding,dilation,groups', CONV_CASES)
def test_conv_transpose2d_matches_torch_and_has_all_derivatives(
    Cin, Cout, k, stride, padding, dilation, groups
):
    x, w, b = _conv_inputs(Cin, Cout, k, groups, transpose=True, seed=1)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, output_padding=stride - 1)
    torch.testing.assert_close(
        conv2d_gradfix.conv_transpose2d(x, w, b, **kw), F.conv_transpose2d(x, w, b, **kw)
    )
    fn = lambda x, w, b: conv2d_gradfix.conv_transpose2d(x, w, b, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize('op', ['conv2d', 'conv_transpose2d'])
def test_no_weight_gradients_skips_weight_grad_only(op):
    transpose = op == 'conv_transpose2d'
    x, w, _ = _conv_inputs(2, 4, 3, 2, transpose=transpose)
    fn = getattr(conv2d_gradfix, op)
    ref_fn = getattr(F, op)
    y = fn(x, w, padding=1, groups=2)
    gy = torch.randn_like(y)
    with conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled()
        y.backward(gy)
    assert not conv2d_gradfix.weight_gradients_disabled()
    assert w.grad is None
    gx_ref = torch.autograd.grad(ref_fn(x, w, padding=1, groups=2), x, gy)[0]
    torch.testing.assert_close(x.grad, gx_ref)


def test_r1_style_double_backward_reaches_weights():
    """R1: grad of D w.r.t. input (weight grads off), then its squared norm differentiated w.r.t. weights."""
    x, w, _ = _conv_inputs(2, 3, 3, 1, transpose=False)
    w2 = torch.randn([1, 3, 3, 3], dtype=torch.float64, requires_grad=True)

    def D(conv, x):
        h = torch.tanh(conv(x, w, padding=1))
        return conv(h, w2).sum()

    def r1(conv, disable):
        with conv2d_gradfix.no_weight_gradients(disable):
            (gx,) = torch.autograd.grad(D(conv, x), x, create_graph=True)
        return gx.square().sum()

    ours = torch.autograd.grad(r1(conv2d_gradfix.conv2d, True), [w, w2])
    ref = torch.autograd.grad(r1(F.conv2d, False), [w, w2])
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)
