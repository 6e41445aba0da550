"""CUDA twins vs the `ref` specification: values and gradients (needs a GPU and a CUDA toolkit)."""

import warnings

import pytest
import torch

from torch_utils.ops import bias_act, upfirdn2d

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _no_fallback():
    """A silent fallback to `ref` would make these comparisons vacuous: turn its warning into an error."""
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='.*falls back to impl="ref"')
        yield


@pytest.mark.parametrize('act', sorted(bias_act.activation_funcs))
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_bias_act_cuda_matches_ref(act, dtype):
    g = torch.Generator(device='cuda').manual_seed(0)
    x = torch.randn([4, 8, 5, 3], device='cuda', dtype=dtype, generator=g).requires_grad_()
    b = torch.randn([8], device='cuda', dtype=dtype, generator=g).requires_grad_()
    for kwargs in [dict(), dict(clamp=0.7), dict(alpha=0.1, gain=1.5)]:
        y_ref = bias_act.bias_act(x, b, act=act, **kwargs)
        y_cuda = bias_act.bias_act(x, b, act=act, impl='cuda', **kwargs)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(y_cuda, y_ref, **tol)
        dy = torch.randn_like(y_ref)
        g_ref = torch.autograd.grad(y_ref, [x, b], dy)
        g_cuda = torch.autograd.grad(y_cuda, [x, b], dy)
        for a, r in zip(g_cuda, g_ref):
            torch.testing.assert_close(a, r, **tol)


@pytest.mark.parametrize('act', ['lrelu', 'tanh', 'swish'])
def test_bias_act_cuda_double_backward(act):
    x = torch.randn([2, 3, 4], device='cuda', dtype=torch.float64, requires_grad=True)
    b = torch.randn([3], device='cuda', dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=1.3, impl='cuda')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_cuda_half_and_no_bias():
    x = torch.randn([3, 16, 8, 8], device='cuda', dtype=torch.float16)
    torch.testing.assert_close(
        bias_act.bias_act(x, act='lrelu', impl='cuda'),
        bias_act.bias_act(x, act='lrelu'),
        rtol=1e-3,
        atol=1e-3,
    )


UPFIRDN_CASES = [
    (1, 1, 1, [1, 2, 1], False),
    (2, 1, [2, 1, 2, 1], [1, 3, 3, 1], False),
    (1, 2, [1, 1, 1, 1], [1, 3, 3, 1], True),
    ([3, 2], [1, 2], [1, 2, 0, 3], [[1, 2, 0], [0, 1, 3]], False),
    (2, 2, [-1, 2, 1, -1], [1, 2, 3, 4, 5, 6, 7, 8], False),
]


@pytest.mark.parametrize('up,down,padding,f,flip_filter', UPFIRDN_CASES)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_upfirdn2d_cuda_matches_ref(up, down, padding, f, flip_filter, dtype):
    g = torch.Generator(device='cuda').manual_seed(0)
    x = torch.randn([2, 3, 9, 7], device='cuda', dtype=dtype, generator=g).requires_grad_()
    f = upfirdn2d.setup_filter(f, device='cuda')
    kw = dict(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.5)
    y_ref = upfirdn2d.upfirdn2d(x, f, **kw)
    y_cuda = upfirdn2d.upfirdn2d(x, f, impl='cuda', **kw)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-6, atol=1e-6)  # f is float32
    torch.testing.assert_close(y_cuda, y_ref, **tol)
    dy = torch.randn_like(y_ref)
    (g_ref,) = torch.autograd.grad(y_ref, x, dy)
    (g_cuda,) = torch.autograd.grad(y_cuda, x, dy)
    torch.testing.assert_close(g_cuda, g_ref, **tol)


def test_upfirdn2d_cuda_gradgradcheck():
    x = torch.randn([1, 2, 5, 4], device='cuda', dtype=torch.float64, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device='cuda')
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], impl='cuda')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
