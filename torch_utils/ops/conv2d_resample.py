"""2D convolution with optional up/down-sampling, fused into as few ops as the case allows.

Specification (what every path computes; `_conv2d_resample_generic` does it literally):
  1. x = upfirdn2d(x, f, up=up, padding=P, gain=up^2)   (upsampling with the filter; skipped if up == 1)
  2. x = conv2d(x, w, groups=groups)                   (valid; correlation if flip_weight else convolution)
  3. x = upfirdn2d(x, f, down=down)                      (filter + downsample; skipped if down == 1)
where P is `padding` widened by the filter's own padding for up/down, so that a 3x3 conv with padding 1
maps H -> H * up / down exactly. Faster paths (strided conv for down, transposed conv for up) compute the
same thing because valid convolutions commute.
"""

import torch

from torch_utils import misc
from torch_utils.ops import conv2d_gradfix, upfirdn2d
from torch_utils.ops.upfirdn2d import _get_filter_size, _parse_padding


def _flipped(w, flip_weight):
    """conv2d correlates; flip the kernel when the caller wants a true convolution."""
    return w if flip_weight else w.flip([2, 3])


def _transpose_groups(w, groups):
    """conv2d weight [Cout, Cin/g, kh, kw] -> conv_transpose2d weight [Cin, Cout/g, kh, kw]."""
    Cout, Cin_g, kh, kw = w.shape
    w = w.reshape(groups, Cout // groups, Cin_g, kh, kw)  # [g, Cout/g, Cin/g, kh, kw]
    return w.transpose(1, 2).reshape(groups * Cin_g, Cout // groups, kh, kw)  # [Cin, Cout/g, kh, kw]


def _full_padding(f, up, down, padding):
    """Step 1's padding P: the caller's padding plus what the up/down filtering needs to stay centred."""
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    return px0, px1, py0, py1


IMPLS = ('ref', 'cuda')


def conv2d_resample(
    x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False, impl='ref'
):
    """Upsample by `up`, convolve with `w`, downsample by `down`, with FIR filter `f` for the resampling.

    Args:
        x:           [N, Cin, H, W].
        w:           [Cout, Cin / groups, kh, kw].
        f:           Filter from upfirdn2d.setup_filter, or None (box/no filtering).
        up, down:    Integer factors (>= 1).
        padding:     int, [x, y] or [x0, x1, y0, y1] padding of the (upsampled) input; negative crops.
        groups:      Convolution groups.
        flip_weight: True = correlation (as torch conv2d), False = true convolution.
        flip_filter: Correlate with `f` instead of convolving.
        impl:        Twin of the FIR filtering (upfirdn2d): 'ref' (default, pure PyTorch) or 'cuda' (opt-in
                     until a GPU run verifies it; falls back to 'ref' with one warning).
    Returns:
        [N, Cout, H', W'].
    """
    if impl not in IMPLS:
        raise ValueError(f'conv2d_resample: impl must be "ref" or "cuda", got {impl!r}')
    if not (isinstance(up, int) and isinstance(down, int) and up >= 1 and down >= 1):
        raise ValueError(f'conv2d_resample: up and down must be ints >= 1, got up={up!r}, down={down!r}')
    if not (isinstance(w, torch.Tensor) and w.ndim == 4):
        raise ValueError(
            f'conv2d_resample: w must be [Cout, Cin/groups, kh, kw], got {getattr(w, "shape", w)}'
        )
    if not (isinstance(groups, int) and groups >= 1 and w.shape[0] % groups == 0):
        raise ValueError(f'conv2d_resample: groups={groups!r} must be an int >= 1 dividing Cout={w.shape[0]}')
    misc.assert_shape(x, [None, w.shape[1] * groups, None, None])
    if f is not None and not (isinstance(f, torch.Tensor) and f.is_floating_point()):
        raise ValueError(
            f'conv2d_resample: filter must be a float tensor from upfirdn2d.setup_filter, got {f!r}'
        )
    P = _full_padding(f, up, down, padding)
    kh, kw = w.shape[2:]

    if up == 1 and down == 1:
        return _conv_padded(x, w, P, groups, flip_weight, impl)
    if up == 1:
        # Filter (with all the padding), then a strided conv: filtering and conv commute.
        x = upfirdn2d.upfirdn2d(x, f, padding=P, flip_filter=flip_filter, impl=impl)
        return conv2d_gradfix.conv2d(x, _flipped(w, flip_weight), stride=down, groups=groups)
    if down == 1:
        # A transposed conv does zero-insertion + conv in one op; then filter with the remaining padding.
        wt = _transpose_groups(_flipped(w, not flip_weight), groups)
        x = conv2d_gradfix.conv_transpose2d(x, wt, stride=up, groups=groups)
        px0, px1, py0, py1 = P
        rest = [px0 - kw + 1, px1 + up - kw, py0 - kh + 1, py1 + up - kh]
        return upfirdn2d.upfirdn2d(x, f, padding=rest, gain=up**2, flip_filter=flip_filter, impl=impl)
    return _conv2d_resample_generic(x, w, f, up, down, P, groups, flip_weight, flip_filter, impl)


def _conv_padded(x, w, P, groups, flip_weight, impl='ref'):
    """Plain conv with arbitrary (asymmetric, possibly negative) padding."""
    px0, px1, py0, py1 = P
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return conv2d_gradfix.conv2d(x, _flipped(w, flip_weight), padding=[py0, px0], groups=groups)
    x = upfirdn2d.upfirdn2d(x, None, padding=P, impl=impl)
    return conv2d_gradfix.conv2d(x, _flipped(w, flip_weight), groups=groups)


def _conv2d_resample_generic(x, w, f, up, down, P, groups, flip_weight, flip_filter, impl='ref'):
    """The specification, step by step (see the module docstring)."""
    x = upfirdn2d.upfirdn2d(x, f, up=up, padding=P, gain=up**2, flip_filter=flip_filter, impl=impl)
    x = conv2d_gradfix.conv2d(x, _flipped(w, flip_weight), groups=groups)
    return upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl=impl)
