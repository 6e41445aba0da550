"""The Python side of the CUDA twins (autograd glue, adjoint backward, argument packing), run on CPU by
standing in for the compiled kernels with Python functions that follow the kernels' documented contract."""

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act, upfirdn2d

ACT_BY_IDX = {spec.cuda_idx: name for name, spec in bias_act.activation_funcs.items()}


class FakeBiasActPlugin:
    """bias_act.cpp's forward/backward contract: contiguous x, b empty for no bias, activation by id."""

    @staticmethod
    def forward(x, b, dim, act, alpha, gain, clamp):
        assert x.is_contiguous() and b.is_contiguous()
        return bias_act._bias_act_ref(x, b if b.numel() else None, dim, ACT_BY_IDX[act], alpha, gain, clamp)

    @staticmethod
    def backward(dy, x, b, dim, act, alpha, gain, clamp):
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            y = FakeBiasActPlugin.forward(x, b, dim, act, alpha, gain, clamp)
            return torch.autograd.grad(y, x, dy)[0]


class FakeUpFirDn2dPlugin:
    """upfirdn2d.cpp's contract: a correlation with the 2D float32 filter it is given (gain folded in)."""

    calls = []

    @staticmethod
    def upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1):
        assert f.ndim == 2 and f.dtype == torch.float32
        FakeUpFirDn2dPlugin.calls.append((upx, upy, downx, downy))
        return upfirdn2d._upfirdn2d_ref(x, f, (upx, upy), (downx, downy), (px0, px1, py0, py1), True, 1)


@pytest.fixture
def fake_plugins(monkeypatch):
    def load(op_name, x, recipe):
        return FakeBiasActPlugin if op_name == 'bias_act' else FakeUpFirDn2dPlugin

    monkeypatch.setattr(custom_ops, 'load_cuda_twin', load)
    monkeypatch.setattr(bias_act, '_plugin', lambda: FakeBiasActPlugin)
    monkeypatch.setattr(upfirdn2d, '_plugin', lambda: FakeUpFirDn2dPlugin)


@pytest.mark.parametrize('act', ['lrelu', 'swish', 'softplus'])
def test_bias_act_twin_glue_grads_and_double_backward(fake_plugins, act):
    g = torch.Generator().manual_seed(0)
    x = (
        torch.randn([2, 3, 4], generator=g, dtype=torch.float64).transpose(1, 2).requires_grad_()
    )  # non-contiguous
    b = torch.randn([3], generator=g, dtype=torch.float64, requires_grad=True)
    kw = dict(dim=2, act=act, clamp=1.1, gain=1.3)
    y_ref = bias_act.bias_act(x, b, **kw)
    y_twin = bias_act.bias_act(x, b, impl='cuda', **kw)
    assert y_twin.grad_fn is not None and 'BiasActCuda' in type(y_twin.grad_fn).__name__
    torch.testing.assert_close(y_twin, y_ref)
    dy = torch.randn(y_ref.shape, generator=g, dtype=torch.float64)
    for a, r in zip(torch.autograd.grad(y_twin, [x, b], dy), torch.autograd.grad(y_ref, [x, b], dy)):
        torch.testing.assert_close(a, r)
    fn = lambda x, b: bias_act.bias_act(x, b, impl='cuda', **kw)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (x, b))
    # Only x needs a gradient (bias frozen); no bias at all.
    (gx,) = torch.autograd.grad(bias_act.bias_act(x, b.detach(), impl='cuda', **kw), x, dy)
    torch.testing.assert_close(gx, torch.autograd.grad(bias_act.bias_act(x, b, **kw), x, dy)[0])
    torch.testing.assert_close(bias_act.bias_act(x, impl='cuda', act=act), bias_act.bias_act(x, act=act))


@pytest.mark.parametrize('up,down,padding,f,flip_filter', [(2, 1, [2, 1, 2, 1], [1, 3, 3, 1], False),
                                                           ([1, 3], 2, [1, 0, 2, -1], [[1, 2], [3, 5]], True),
                                                           (2, 2, 1, [1, 2, 3, 4, 5, 6, 7, 8], False)])  # fmt: skip
def test_upfirdn2d_twin_glue_values_and_adjoint_backward(fake_plugins, up, down, padding, f, flip_filter):
    g = torch.Generator().manual_seed(1)
    x = torch.randn([1, 2, 5, 6], generator=g, dtype=torch.float64, requires_grad=True)
    f = upfirdn2d.setup_filter(f)
    kw = dict(up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.7)
    FakeUpFirDn2dPlugin.calls.clear()
    y_twin = upfirdn2d.upfirdn2d(x, f, impl='cuda', **kw)
    y_ref = upfirdn2d.upfirdn2d(x, f, **kw)
    torch.testing.assert_close(y_twin, y_ref)
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, impl='cuda', **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    # The backward ran the "kernel" with up and down swapped.
    ux, uy = upfirdn2d._parse_scaling(up)
    dx, dy = upfirdn2d._parse_scaling(down)
    assert (dx, dy, ux, uy) in FakeUpFirDn2dPlugin.calls


def test_load_cuda_twin_refuses_cpu_tensors_with_one_warning(monkeypatch):
    monkeypatch.setattr(custom_ops, '_warned', set())
    with pytest.warns(RuntimeWarning, match='my_op: impl="cuda" falls back .* not on a CUDA device'):
        assert custom_ops.load_cuda_twin('my_op', torch.zeros(1), dict(module_name='x', sources=[])) is None


def test_layers_and_conv2d_resample_thread_impl_to_the_twins(fake_plugins):
    """impl='cuda' on a layer reaches the upfirdn2d and bias_act twins, with the ref path's values."""
    from torch_utils.ops import conv2d_resample
    from training.networks.layers import Conv2dLayer, FullyConnectedLayer

    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    FakeUpFirDn2dPlugin.calls.clear()
    for kw in (dict(down=2), dict(up=2)):
        ref = Conv2dLayer(4, 6, 3, activation='lrelu', **kw)
        twin = Conv2dLayer(4, 6, 3, activation='lrelu', impl='cuda', **kw)
        twin.load_state_dict(ref.state_dict())
        torch.testing.assert_close(twin(x), ref(x))
    assert len(FakeUpFirDn2dPlugin.calls) == 2  # one filtering per resampling layer went to the twin
    fc_ref, fc_twin = (
        FullyConnectedLayer(4, 3, activation='lrelu'),
        FullyConnectedLayer(4, 3, activation='lrelu', impl='cuda'),
    )
    fc_twin.load_state_dict(fc_ref.state_dict())
    torch.testing.assert_close(fc_twin(x[:, :, 0, 0]), fc_ref(x[:, :, 0, 0]))
    with pytest.raises(ValueError, match='impl must be'):
        conv2d_resample.conv2d_resample(x, torch.randn(3, 4, 3, 3), impl='gpu')
