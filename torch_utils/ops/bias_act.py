"""Fused bias + activation + gain + clamp: y = clamp(act(x + b) * gain, -clamp, clamp).

`impl='ref'` (default) is pure PyTorch and the specification. `impl='cuda'` runs the twin in
bias_act.cu (built on first use by torch_utils.custom_ops; falls back to 'ref' with one warning when
it cannot be built or the tensor is not on a GPU).
"""

import math
import os

import torch
import torch.nn.functional as F

from dnnlib import EasyDict
from torch_utils import custom_ops

# ----------------------------------------------------------------------------
# Activations: the function, its defaults, and the ids the CUDA twin uses.
# `cuda_idx` must match the switch in bias_act.cu.


def _lrelu(x, alpha):
    return F.leaky_relu(x, alpha)


def _elu(x, alpha):
    return F.elu(x)


def _selu(x, alpha):
    return F.selu(x)


def _softplus(x, alpha):
    return F.softplus(x)


def _swish(x, alpha):
    return torch.sigmoid(x) * x


activation_funcs = {
    'linear': EasyDict(func=lambda x, alpha: x, def_alpha=0, def_gain=1, cuda_idx=1),
    'relu': EasyDict(func=lambda x, alpha: F.relu(x), def_alpha=0, def_gain=math.sqrt(2), cuda_idx=2),
    'lrelu': EasyDict(func=_lrelu, def_alpha=0.2, def_gain=math.sqrt(2), cuda_idx=3),
    'tanh': EasyDict(func=lambda x, alpha: torch.tanh(x), def_alpha=0, def_gain=1, cuda_idx=4),
    'sigmoid': EasyDict(func=lambda x, alpha: torch.sigmoid(x), def_alpha=0, def_gain=1, cuda_idx=5),
    'elu': EasyDict(func=_elu, def_alpha=0, def_gain=1, cuda_idx=6),
    'selu': EasyDict(func=_selu, def_alpha=0, def_gain=1, cuda_idx=7),
    'softplus': EasyDict(func=_softplus, def_alpha=0, def_gain=1, cuda_idx=8),
    'swish': EasyDict(func=_swish, def_alpha=0, def_gain=math.sqrt(2), cuda_idx=9),
}  # fmt: skip

# ----------------------------------------------------------------------------


def _check_args(x, b, dim, act, impl):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'bias_act: x must be a torch.Tensor, got {type(x).__name__}')
    if act not in activation_funcs:
        raise ValueError(f'bias_act: unknown act="{act}"; choose one of {sorted(activation_funcs)}')
    if impl not in ('ref', 'cuda'):
        raise ValueError(f'bias_act: impl must be "ref" or "cuda", got "{impl}"')
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f'bias_act: dim={dim} is out of range for x of shape {list(x.shape)}')
    if b is not None:
        dim = dim % x.ndim
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(
                f'bias_act: b must have shape [{x.shape[dim]}] (x.shape[{dim}]), got {list(b.shape)}'
            )


def resolve_args(act, alpha, gain, clamp):
    """Fill in the activation's default alpha/gain; clamp None -> -1 (no clamping). Returns floats."""
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    if clamp != -1 and clamp < 0:
        raise ValueError(f'bias_act: clamp must be None or >= 0, got {clamp}')
    return alpha, gain, clamp


def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl='ref'):
    """Add bias `b` along dimension `dim` of `x`, apply `act`, scale by `gain`, clamp to [-clamp, clamp].

    Args:
        x:     Input tensor of any shape.
        b:     Bias [x.shape[dim]], or None.
        dim:   The dimension of `x` that `b` runs along.
        act:   One of `activation_funcs` (linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish).
        alpha: Shape parameter (lrelu's negative slope); None = the activation's default (0.2 for lrelu).
        gain:  Output scale; None = the activation's default (sqrt(2) for relu, lrelu, swish; else 1).
        clamp: Clamp the output to [-clamp, clamp]; None = no clamping.
        impl:  'ref' (pure PyTorch, default) or 'cuda' (opt-in, falls back to 'ref' with one warning).
    Returns:
        A tensor of the shape and dtype of `x`.
    """
    _check_args(x, b, dim, act, impl)
    alpha, gain, clamp = resolve_args(act, alpha, gain, clamp)
    if impl == 'cuda':
        fn = _cuda_impl(x)
        if fn is not None:
            return fn(x, b, dim % x.ndim, act, alpha, gain, clamp)
    return _bias_act_ref(x, b, dim % x.ndim, act, alpha, gain, clamp)


# The CUDA twin's build recipe (also used by `python -m torch_utils.custom_ops bias_act`).
PLUGIN = dict(
    module_name='bias_act_plugin',
    sources=['bias_act.cpp', 'bias_act.cu'],
    headers=['bias_act.h'],
    source_dir=os.path.dirname(os.path.abspath(__file__)),
)


def _plugin():
    return custom_ops.get_plugin_or_none('bias_act', **PLUGIN)


def _cuda_impl(x):
    """The CUDA twin's entry point, or None (after one warning per reason) when it cannot run."""
    return _bias_act_cuda if custom_ops.load_cuda_twin('bias_act', x, PLUGIN) is not None else None


def _bias_act_cuda(x, b, dim, act, alpha, gain, clamp):
    return _BiasActCuda.apply(x, b, (dim, act, alpha, gain, clamp))


class _BiasActCuda(torch.autograd.Function):
    """Forward and first backward run the kernels; a backward that builds a graph (create_graph=True,
    e.g. R1) differentiates the `ref` formula instead, so derivatives of every order exist."""

    @staticmethod
    def forward(ctx, x, b, params):
        dim, act, alpha, gain, clamp = params
        x_c = x.contiguous()
        b_c = b.to(x.dtype).contiguous() if b is not None else x.new_empty([0])
        ctx.save_for_backward(x, b)
        ctx.params = params
        return _plugin().forward(x_c, b_c, dim, activation_funcs[act].cuda_idx, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, dy):
        x, b = ctx.saved_tensors
        dim, act, alpha, gain, clamp = ctx.params
        if torch.is_grad_enabled():
            return (*_ref_grads(x, b, dy, ctx.params, ctx.needs_input_grad), None)
        b_c = b.to(x.dtype).contiguous() if b is not None else x.new_empty([0])
        dx = _plugin().backward(dy.contiguous(), x.contiguous(), b_c, dim, activation_funcs[act].cuda_idx, alpha,
                                gain, clamp)  # fmt: skip
        db = None
        if b is not None and ctx.needs_input_grad[1]:
            db = dx.sum([i for i in range(dx.ndim) if i != dim]).to(b.dtype)
        return (dx if ctx.needs_input_grad[0] else None), db, None


def _ref_grads(x, b, dy, params, needs):
    """(dx, db) as differentiable functions of x, b and dy, from the `ref` formula."""
    with torch.enable_grad():
        x_ = x if x.requires_grad else x.detach().requires_grad_()
        inputs = [x_]
        b_ = None
        if b is not None:
            b_ = b if b.requires_grad else b.detach().requires_grad_()
            inputs.append(b_)
        y = _bias_act_ref(x_, b_, *params)
        grads = torch.autograd.grad(y, inputs, dy, create_graph=True)
    dx = grads[0] if needs[0] else None
    db = grads[1] if b is not None and needs[1] else None
    return dx, db


def _bias_act_ref(x, b, dim, act, alpha, gain, clamp):
    """The specification: plain differentiable PyTorch ops (any order of derivatives)."""
    if b is not None:
        x = x + b.to(x.dtype).reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = activation_funcs[act].func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
