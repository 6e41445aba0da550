"""conv2d / conv_transpose2d whose weight gradient can be switched off, with any-order derivatives.

The R1 penalty differentiates D's output w.r.t. the real images (`create_graph=True`) and then
differentiates that gradient w.r.t. D's weights. The first backward needs only input gradients;
`with no_weight_gradients(): torch.autograd.grad(...)` skips the (costly, unused) weight gradients there,
while the input gradient stays an ordinary differentiable function of the weights, so the second
backward still reaches them. Backward passes are written with the same two ops, so derivatives of
every order exist.
"""

import contextlib

import torch
import torch.nn.functional as F

from torch_utils import threads

_weight_gradients_disabled = 0  # Nesting depth of no_weight_gradients().


@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Inside this context, backward passes through these convolutions compute no weight gradient."""
    global _weight_gradients_disabled
    if not disable:
        yield
        return
    _weight_gradients_disabled += 1
    try:
        yield
    finally:
        _weight_gradients_disabled -= 1


def weight_gradients_disabled() -> bool:
    return _weight_gradients_disabled > 0


# ----------------------------------------------------------------------------


def _pair(v, name):
    v = (v, v) if isinstance(v, int) else tuple(v)
    if len(v) != 2 or not all(isinstance(i, int) for i in v):
        raise ValueError(f'conv2d_gradfix: {name} must be an int or a pair of ints, got {v!r}')
    return v


def _autocast_inputs(x, w):
    """Under torch.autocast, cast x and w to its dtype up front: the backward passes run outside autocast,
    so the tensors they save must already agree in dtype (else a bf16 gradient meets a float32 weight)."""
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return x, w
    dtype = torch.get_autocast_dtype(device_type)
    return x.to(dtype), w.to(dtype)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same as torch.nn.functional.conv2d (numeric padding only), honouring no_weight_gradients()."""
    if isinstance(padding, str):
        raise ValueError('conv2d_gradfix.conv2d: padding must be numbers, not "same"/"valid"')
    params = (_pair(stride, 'stride'), _pair(padding, 'padding'), _pair(dilation, 'dilation'), int(groups))
    input, weight = _autocast_inputs(input, weight)
    y = _Conv2d.apply(input, weight, params)
    if bias is not None:
        y = y + bias.reshape([1, -1, 1, 1])
    return y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Same as torch.nn.functional.conv_transpose2d, honouring no_weight_gradients()."""
    params = (
        _pair(stride, 'stride'),
        _pair(padding, 'padding'),
        _pair(dilation, 'dilation'),
        int(groups),
        _pair(output_padding, 'output_padding'),
    )
    input, weight = _autocast_inputs(input, weight)
    y = _ConvTranspose2d.apply(input, weight, params)
    if bias is not None:
        y = y + bias.reshape([1, -1, 1, 1])
    return y


# ----------------------------------------------------------------------------
# Each op's backward is expressed with the other op (plus a weight-gradient op), so autograd can
# differentiate the backward again.


def _output_padding(in_size, out_size, kernel, stride, padding, dilation):
    """output_padding that makes conv_transpose2d map `out_size` back onto exactly `in_size`."""
    return tuple(
        in_size[i] - ((out_size[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (kernel[i] - 1) + 1)
        for i in range(2)
    )


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, params):
        stride, padding, dilation, groups = params
        ctx.save_for_backward(x, w)
        ctx.params = params
        macs = x.numel() * w.shape[0] * w.shape[2] * w.shape[3] / (groups * stride[0] * stride[1])
        with threads.serial_if_small(macs, x.device):
            return F.conv2d(x, w, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.params
        gx = gw = None
        if ctx.needs_input_grad[0]:
            op = _output_padding(x.shape[2:], gy.shape[2:], w.shape[2:], stride, padding, dilation)
            gx = _ConvTranspose2d.apply(gy, w, (stride, padding, dilation, groups, op))
        if ctx.needs_input_grad[1] and not weight_gradients_disabled():
            gw = _Conv2dWeightGrad.apply(gy, x, w.shape, ctx.params)
        return gx, gw, None


class _ConvTranspose2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, params):
        stride, padding, dilation, groups, output_padding = params
        ctx.save_for_backward(x, w)
        ctx.params = params
        with threads.serial_if_small(x.numel() * w[0].numel(), x.device):
            return F.conv_transpose2d(x, w, None, stride, padding, output_padding, groups, dilation)

    @staticmethod
    def backward(ctx, gy):
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups, _ = ctx.params
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = _Conv2d.apply(gy, w, (stride, padding, dilation, groups))
        if ctx.needs_input_grad[1] and not weight_gradients_disabled():
            # conv_transpose2d(x, w) is the adjoint of conv2d(., w): its weight gradient is conv2d's
            # weight gradient with the roles of input (here gy) and output gradient (here x) swapped.
            gw = _Conv2dWeightGrad.apply(x, gy, w.shape, (stride, padding, dilation, groups))
        return gx, gw, None


class _Conv2dWeightGrad(torch.autograd.Function):
    """gw = d<gy, conv2d(x, w)>/dw; bilinear in (gy, x), so its own gradients are two convolutions."""

    @staticmethod
    def forward(ctx, gy, x, weight_shape, params):
        stride, padding, dilation, groups = params
        ctx.save_for_backward(gy, x)
        ctx.params = params
        macs = gy.numel() * weight_shape[1] * weight_shape[2] * weight_shape[3]
        with threads.serial_if_small(macs, x.device):
            return torch.nn.grad.conv2d_weight(x, weight_shape, gy, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, ggw):
        gy, x = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.params
        g_gy = g_x = None
        if ctx.needs_input_grad[0]:
            g_gy = _Conv2d.apply(x, ggw, ctx.params)
        if ctx.needs_input_grad[1]:
            op = _output_padding(x.shape[2:], gy.shape[2:], ggw.shape[2:], stride, padding, dilation)
            g_x = _ConvTranspose2d.apply(gy, ggw, (stride, padding, dilation, groups, op))
        return g_gy, g_x, None, None
