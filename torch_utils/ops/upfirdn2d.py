"""Upsample, FIR-filter, downsample in one op (and the resampling helpers built on it).

upfirdn2d(x, f, up, down, padding) does, per channel:
  1. upsample: insert `up - 1` zeros after every pixel (H -> H * up),
  2. pad by `padding` (negative values crop),
  3. convolve with the 2D filter `f` (a true convolution; `flip_filter=True` makes it a correlation),
     keeping only fully covered positions,
  4. downsample: keep every `down`-th pixel, starting at the first.
Output size: (H * up + pad_y0 + pad_y1 - filter_h) // down + 1 (likewise for W).
`impl='ref'` (default) is pure PyTorch and the specification; `impl='cuda'` is the opt-in twin.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import custom_ops

# ----------------------------------------------------------------------------
# Argument parsing.


def _parse_scaling(scaling, what='up/down'):
    """int or [sx, sy] -> (sx, sy), each >= 1."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    if not (
        isinstance(scaling, (list, tuple)) and len(scaling) == 2 and all(isinstance(s, int) for s in scaling)
    ):
        raise ValueError(f'upfirdn2d: {what} must be an int or [x, y] ints, got {scaling!r}')
    sx, sy = scaling
    if sx < 1 or sy < 1:
        raise ValueError(f'upfirdn2d: {what} factors must be >= 1, got {scaling!r}')
    return sx, sy


def _parse_padding(padding):
    """int, [px, py] or [x0, x1, y0, y1] -> (x0, x1, y0, y1)."""
    if isinstance(padding, int):
        padding = [padding, padding]
    if not (isinstance(padding, (list, tuple)) and all(isinstance(p, int) for p in padding)):
        raise ValueError(f'upfirdn2d: padding must be an int or a list of ints, got {padding!r}')
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    if len(padding) != 4:
        raise ValueError(f'upfirdn2d: padding must have 1, 2 or 4 entries (x0, x1, y0, y1), got {padding!r}')
    return tuple(padding)


def _get_filter_size(f):
    """(filter_w, filter_h) of a 2D [fh, fw] or separable 1D [fw] filter; (1, 1) for None."""
    if f is None:
        return 1, 1
    if not (isinstance(f, torch.Tensor) and f.ndim in (1, 2)):
        raise ValueError(f'upfirdn2d: filter must be a 1D or 2D tensor, got {type(f).__name__}')
    fw = f.shape[-1]
    fh = f.shape[0]
    if fw < 1 or fh < 1:
        raise ValueError(f'upfirdn2d: filter must not be empty, got shape {list(f.shape)}')
    return fw, fh


# ----------------------------------------------------------------------------


def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    """Turn a filter given as numbers (list, array or tensor) into the float32 tensor that upfirdn2d expects.

    Args:
        f:           None (identity), a 1D [taps] or 2D [fh, fw] array-like. A 1D filter is separable:
                     it acts as outer(f, f) (or is applied along x then y).
        normalize:   Scale so that the 2D filter sums to 1 (keeps brightness).
        flip_filter: Flip the filter (turns convolution into correlation).
        gain:        Overall gain of the 2D filter (a 1D filter is scaled by sqrt(gain)).
        separable:   Return 1D (True) or 2D (False); None = 1D when the input is 1D and has >= 8 taps.
    Returns:
        float32 tensor [taps] or [fh, fw] on `device`.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(np.asarray(f, dtype=np.float32) if not isinstance(f, torch.Tensor) else f)
    f = f.to(torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(
            f'setup_filter: filter must be a scalar, 1D or 2D and non-empty, got shape {list(f.shape)}'
        )
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = f.outer(f)  # [fh, fw]
    if separable and f.ndim != 1:
        raise ValueError('setup_filter: separable=True needs a 1D filter')
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


# ----------------------------------------------------------------------------


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='ref'):
    """Upsample by `up`, pad, FIR-filter with `f`, downsample by `down` (see the module docstring).

    Args:
        x:           [N, C, H, W].
        f:           float32 filter from `setup_filter` ([fh, fw] or separable [taps]), or None (identity).
        up, down:    int or [x, y].
        padding:     int, [x, y] or [x0, x1, y0, y1]; negative crops.
        flip_filter: Correlate instead of convolve.
        gain:        Overall gain of the filter (the 2D filter is scaled by `gain`).
        impl:        'ref' (default) or 'cuda' (opt-in; falls back to 'ref' with one warning).
    Returns:
        [N, C, (H * up + y0 + y1 - fh) // down + 1, (W * up + x0 + x1 - fw) // down + 1].
    """
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError(f'upfirdn2d: x must be a 4D tensor [N, C, H, W], got {getattr(x, "shape", type(x))}')
    if impl not in ('ref', 'cuda'):
        raise ValueError(f'upfirdn2d: impl must be "ref" or "cuda", got "{impl}"')
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    upx, upy = _parse_scaling(up, 'up')
    downx, downy = _parse_scaling(down, 'down')
    pad = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    out_h = (x.shape[2] * upy + pad[2] + pad[3] - fh) // downy + 1
    out_w = (x.shape[3] * upx + pad[0] + pad[1] - fw) // downx + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f'upfirdn2d: input {list(x.shape)} with up={up}, down={down}, padding={padding} and a '
            f'{fh}x{fw} filter gives an empty output; increase padding or the input size'
        )
    if impl == 'cuda':
        fn = _cuda_impl(x)
        if fn is not None:
            return fn(x, f, (upx, upy), (downx, downy), pad, flip_filter, gain)
    return _upfirdn2d_ref(x, f, (upx, upy), (downx, downy), pad, flip_filter, gain)


# The CUDA twin's build recipe (also used by `python -m torch_utils.custom_ops upfirdn2d`).
PLUGIN = dict(
    module_name='upfirdn2d_plugin',
    sources=['upfirdn2d.cpp', 'upfirdn2d.cu'],
    headers=['upfirdn2d.h'],
    source_dir=os.path.dirname(os.path.abspath(__file__)),
)


def _plugin():
    return custom_ops.get_plugin_or_none('upfirdn2d', **PLUGIN)


def _cuda_impl(x):
    """The CUDA twin's entry point, or None (after one warning per reason) when it cannot run."""
    return _upfirdn2d_cuda if custom_ops.load_cuda_twin('upfirdn2d', x, PLUGIN) is not None else None


def _upfirdn2d_cuda(x, f, up, down, pad, flip_filter, gain):
    return _UpFirDn2dCuda.apply(x, f, (up, down, pad, flip_filter, gain))


def grad_params(in_size, out_size, f_size, up, down, pad, flip_filter):
    """upfirdn2d's adjoint is another upfirdn2d: d(out)/d(x)^T = upfirdn2d(dy, f, up=down, down=up, padding=
    these, flip_filter=not flip_filter) with the same gain. Sizes are (w, h); returns (up, down, pad, flip)."""
    (in_w, in_h), (out_w, out_h), (fw, fh) = in_size, out_size, f_size
    (upx, upy), (downx, downy), (px0, _, py0, _) = up, down, pad
    # Zero-insert dy by `down`, fully convolve (pad f - 1) minus the forward's leading pad, crop to H * up.
    grad_pad = (
        fw - 1 - px0,
        in_w * upx + px0 - out_w * downx,
        fh - 1 - py0,
        in_h * upy + py0 - out_h * downy,
    )
    return (downx, downy), (upx, upy), grad_pad, not flip_filter


class _UpFirDn2dCuda(torch.autograd.Function):
    """The kernel forward; the backward is the kernel again (its adjoint), so it is differentiable to any order."""

    @staticmethod
    def forward(ctx, x, f, params):
        up, down, pad, flip_filter, gain = params
        fk = f.to(device=x.device, dtype=torch.float32) * (gain ** (f.ndim / 2))
        if fk.ndim == 1:
            fk = fk.outer(fk)  # [fh, fw]
        if not flip_filter:
            fk = fk.flip([0, 1])  # The kernel correlates.
        y = _plugin().upfirdn2d(x, fk, *up, *down, *pad)
        ctx.save_for_backward(f)
        ctx.params = params
        ctx.sizes = (x.shape[3], x.shape[2]), (y.shape[3], y.shape[2])
        return y

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        up, down, pad, flip_filter, gain = ctx.params
        in_size, out_size = ctx.sizes
        g_up, g_down, g_pad, g_flip = grad_params(
            in_size, out_size, _get_filter_size(f), up, down, pad, flip_filter
        )
        dx = None
        if ctx.needs_input_grad[0]:
            dx = _UpFirDn2dCuda.apply(dy, f, (g_up, g_down, g_pad, g_flip, gain))
        return dx, None, None


def _upfirdn2d_ref(x, f, up, down, pad, flip_filter, gain):
    """The specification: zero-insertion, pad/crop, depthwise conv2d, strided slice (any-order differentiable)."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    N, C, H, W = x.shape

    # 1. Upsample by inserting zeros after each pixel.
    if upx > 1 or upy > 1:
        x = x.reshape([N, C, H, 1, W, 1])
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape([N, C, H * upy, W * upx])  # [N, C, H*up, W*up]

    # 2. Pad (positive) and crop (negative). Equal non-negative padding per axis is left to the conv,
    # which pads without a padded copy of x (and keeps its memory format).
    conv_pad = (py0, px0) if px0 == px1 >= 0 and py0 == py1 >= 0 else (0, 0)
    if conv_pad == (0, 0) and any(p != 0 for p in (px0, px1, py0, py1)):
        x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
        x = x[:, :, max(-py0, 0) : x.shape[2] - max(-py1, 0), max(-px0, 0) : x.shape[3] - max(-px1, 0)]

    # 3. Filter: conv2d correlates, so flip unless flip_filter asks for correlation.
    f = f.to(x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        weight = f[None, None].expand([C, 1, *f.shape])  # [C, 1, fh, fw]
        x = F.conv2d(x, weight, padding=conv_pad, groups=C)
    else:
        x = F.conv2d(
            x, f[None, None, None, :].expand([C, 1, 1, f.shape[0]]), padding=(0, conv_pad[1]), groups=C
        )  # along x
        x = F.conv2d(
            x, f[None, None, :, None].expand([C, 1, f.shape[0], 1]), padding=(conv_pad[0], 0), groups=C
        )  # along y

    # 4. Downsample.
    return x[:, :, ::downy, ::downx]


# ----------------------------------------------------------------------------
# Resampling helpers with the padding that keeps the image centred.


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='ref'):
    """Filter with `f`, padded so that the output has the input's size (plus `padding`)."""
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='ref'):
    """Upsample by `up` with filter `f` (gain up^2 keeps brightness): [N, C, H, W] -> [N, C, H*up, W*up]."""
    upx, upy = _parse_scaling(up, 'up')
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(
        x, f, up=[upx, upy], padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl
    )


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='ref'):
    """Filter with `f` and downsample by `down`: [N, C, H, W] -> [N, C, H/down, W/down]."""
    downx, downy = _parse_scaling(down, 'down')
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=[downx, downy], padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
