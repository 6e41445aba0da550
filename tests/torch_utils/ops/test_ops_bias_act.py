"""bias_act ref path: known answers per activation, argument errors, float64 gradcheck/gradgradcheck."""

import math

import pytest
import torch

from torch_utils.ops import bias_act


def _inputs(seed=0, shape=(2, 3, 4)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    b = torch.randn([shape[1]], generator=g, dtype=torch.float64)
    return x, b


NAIVE = {
    'linear': lambda v: v,
    'relu': lambda v: max(v, 0.0),
    'lrelu': lambda v: v if v > 0 else 0.2 * v,
    'tanh': math.tanh,
    'sigmoid': lambda v: 1 / (1 + math.exp(-v)),
    'elu': lambda v: v if v > 0 else math.exp(v) - 1,
    'selu': lambda v: 1.0507009873554805 * (v if v > 0 else 1.6732632423543772 * (math.exp(v) - 1)),
    'softplus': lambda v: math.log1p(math.exp(v)),
    'swish': lambda v: v / (1 + math.exp(-v)),
}


@pytest.mark.parametrize('act', sorted(NAIVE))
def test_known_answers_with_default_gain(act):
    x, b = _inputs()
    y = bias_act.bias_act(x, b, act=act)
    gain = {'relu': math.sqrt(2), 'lrelu': math.sqrt(2), 'swish': math.sqrt(2)}.get(act, 1.0)
    for idx in [(0, 0, 0), (1, 2, 3), (0, 1, 2), (1, 0, 1)]:
        v = float(x[idx] + b[idx[1]])
        assert float(y[idx]) == pytest.approx(NAIVE[act](v) * gain, rel=1e-12, abs=1e-12)


def test_alpha_gain_clamp_and_dim():
    x, _ = _inputs(shape=(3, 5, 2))
    b = torch.linspace(-1, 1, 2, dtype=torch.float64)
    y = bias_act.bias_act(x, b, dim=2, act='lrelu', alpha=0.1, gain=3.0, clamp=0.5)
    v = x + b.reshape(1, 1, 2)
    expected = (torch.where(v > 0, v, 0.1 * v) * 3.0).clamp(-0.5, 0.5)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    # No bias, linear, no gain: identity.
    torch.testing.assert_close(bias_act.bias_act(x), x, rtol=0, atol=0)


def test_errors_are_clear():
    x, b = _inputs()
    with pytest.raises(ValueError, match='unknown act'):
        bias_act.bias_act(x, b, act='gelu2')
    with pytest.raises(ValueError, match='b must have shape'):
        bias_act.bias_act(x, b[:2])
    with pytest.raises(ValueError, match='impl'):
        bias_act.bias_act(x, b, impl='triton')
    with pytest.raises(ValueError, match='clamp'):
        bias_act.bias_act(x, b, clamp=-2)


def test_cuda_impl_on_cpu_falls_back_with_one_warning():
    from torch_utils import custom_ops

    custom_ops._warned.discard(('bias_act', 'the input is not on a CUDA device'))
    x, b = _inputs()
    with pytest.warns(RuntimeWarning, match='falls back'):
        y = bias_act.bias_act(x, b, act='lrelu', impl='cuda')
    torch.testing.assert_close(y, bias_act.bias_act(x, b, act='lrelu'))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter('error')
        bias_act.bias_act(x, b, act='lrelu', impl='cuda')  # second call: silent


@pytest.mark.parametrize('act', sorted(NAIVE))
def test_gradcheck_and_gradgradcheck(act):
    x, b = _inputs(seed=1, shape=(2, 3, 3))
    x = x.requires_grad_()
    b = b.requires_grad_()
    # Clamp at a level the outputs cross, away from the kinks (inputs are continuous random numbers).
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=1.3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))
