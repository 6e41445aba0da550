"""G's synthesis network: w -> tri-planes (StyleGAN2 modulated convs, noise inputs, skip architecture).

The planes it makes are read by the tri-plane field (training/networks/triplane.py).
"""

import math

import torch
import torch.utils.checkpoint

from torch_utils import misc
from torch_utils import precision as precision_lib
from torch_utils.ops import conv2d_resample, upfirdn2d
from training.networks.layers import FullyConnectedLayer


class _BiasActInplace(torch.autograd.Function):
    """y = clamp(lrelu(x + b, alpha) * gain, +-clamp), computed in place on x, saving only y.

    The backward pass recovers the slope from the sign of y (gain > 0, the clamp is symmetric), so a layer
    keeps no copy of its pre-activation: at 512^2 x 64 channels x batch 4 each copy is 268 MB.
    """

    @staticmethod
    def forward(ctx, x, b, alpha: float, gain: float, clamp):
        x.add_(b.reshape(1, -1, 1, 1))
        if alpha != 1:
            torch.nn.functional.leaky_relu_(x, alpha)
        if gain != 1:
            x.mul_(gain)
        if clamp is not None:
            x.clamp_(-clamp, clamp)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.alpha, ctx.gain, ctx.clamp = alpha, gain, clamp
        return x

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dx = torch.where(y > 0, dy, dy * ctx.alpha) if ctx.alpha != 1 else dy  # stays in dy's dtype
        if ctx.gain != 1:
            dx = dx * ctx.gain
        if ctx.clamp is not None:
            dx = (
                dx.masked_fill(y.abs() >= ctx.clamp, 0)
                if dx is dy
                else dx.masked_fill_(y.abs() >= ctx.clamp, 0)
            )
        return dx, dx.sum(dim=[0, 2, 3], dtype=torch.float32), None, None, None


def bias_act_inplace(x, b, alpha=0.2, gain=math.sqrt(2), clamp=None):
    """In-place bias + leaky ReLU (alpha = 1: linear) + gain + clamp for [N, C, H, W]; see `_BiasActInplace`."""
    return _BiasActInplace.apply(x, b, alpha, gain, clamp)


# Activation elements below which modulated_conv runs unfused. Demo synthesis (batch 4, <= 64 channels,
# <= 32^2), alternated: forward+backward 20.8 -> 19.0 ms at 2 threads, 17.7 -> 16.2 at 1; forward 6.4 -> 5.5.
UNFUSED_BELOW = 2**21


def modulated_conv(x, weight, styles, up=1, padding=0, resample_filter=None, demodulate=True, fused=None):
    """StyleGAN2 modulated conv (weight modulation and demodulation) choosing the form that keeps least for backward.

    x [N, Cin, H, W], weight [Cout, Cin, k, k], styles [N, Cin]. Demodulation coefficients come from
    d[n, o] = rsqrt(sum_i s[n, i]^2 sum_k W[o, i, k]^2), never from the materialized [N, Cout, Cin, k, k]
    product. Fused (one grouped conv on per-sample weights) keeps that product (N Cout Cin k^2 floats);
    unfused (scale activations, shared conv, scale outputs) keeps its scaled input and its output: the
    smaller one is used when gradients are recorded (at 512 channels and 32^2 that saves 36 MB a layer),
    and unfused for layers too small for memory to matter. `fused` None chooses that way; True/False force
    a form. Styles and demodulation stay float32; the conv runs in x's dtype (bf16/fp16 in low precision).
    """
    N, Cin, H, W = x.shape
    Cout, _, kh, kw = weight.shape
    misc.assert_shape(styles, [N, Cin])
    flip_weight = up == 1  # transposed-conv friendly kernel orientation when upsampling
    dcoefs = None
    if demodulate:
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, Cout]
    if fused is None:
        activations = (Cin + Cout * up * up) * H * W  # per sample: what the unfused form keeps
        # Small layers: unfused is faster (one batched conv beats N groups) and memory is no concern;
        # larger ones keep the form that stores less (fused without gradients).
        fused = N == 1 or (
            N * activations >= UNFUSED_BELOW
            and (not torch.is_grad_enabled() or Cout * Cin * kh * kw <= activations)
        )
    dtype = x.dtype
    if not fused:
        x = conv2d_resample.conv2d_resample(
            x * styles.to(dtype).reshape(N, Cin, 1, 1), weight.to(dtype), resample_filter, up=up,
            padding=padding, flip_weight=flip_weight,
        )  # fmt: skip
        return x * dcoefs.to(dtype).reshape(N, Cout, 1, 1) if demodulate else x
    scale = (
        styles[:, None, :] if dcoefs is None else styles[:, None, :] * dcoefs[:, :, None]
    )  # [N, Cout|1, Cin]
    w = (
        (weight[None] * scale[..., None, None]).reshape(N * Cout, Cin, kh, kw).to(dtype)
    )  # [N*Cout, Cin, kh, kw]
    x = conv2d_resample.conv2d_resample(
        x.reshape(1, N * Cin, H, W),
        w,
        resample_filter,
        up=up,
        padding=padding,
        groups=N,
        flip_weight=flip_weight,
    )  # [1, N*Cout, H', W']
    return x.reshape(N, Cout, *x.shape[2:])


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv (optionally upsampling x2), per-pixel noise, bias, leaky ReLU."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, up=1, use_noise=True, conv_clamp=None):
        super().__init__()
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.register_buffer('resample_filter', upfirdn2d.setup_filter([1, 3, 3, 1]))
        self.use_noise = use_noise
        if use_noise:
            self.register_buffer('noise_const', torch.randn(resolution, resolution))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))

    def forward(self, x, w, noise_mode='random'):
        N = x.shape[0]
        styles = self.affine(w)  # [N, Cin]
        x = modulated_conv(
            x, self.weight, styles, up=self.up, padding=1, resample_filter=self.resample_filter
        )
        if self.use_noise and noise_mode != 'none':
            if noise_mode == 'random':
                # float32 in every precision: noise_strength's gradient is a sum over all its pixels
                noise = torch.randn(N, 1, self.resolution, self.resolution, device=x.device)
            else:
                noise = self.noise_const[None, None]
            x = x.add_(noise * self.noise_strength)
        return bias_act_inplace(x, self.bias, clamp=self.conv_clamp)


class ToPlanesLayer(torch.nn.Module):
    """Modulated 1x1 conv (no demodulation) to the plane channels of the skip output."""

    def __init__(self, in_channels, out_channels, w_dim, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv(x, self.weight, styles, demodulate=False)
        return bias_act_inplace(x, self.bias, alpha=1, gain=1, clamp=self.conv_clamp)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """`upfirdn2d.upsample2d(x, setup_filter([1, 3, 3, 1]))` as one depthwise stride-2 transposed conv.

    [N, C, H, W] -> [N, C, 2H, 2W]. Per axis the kernel [1, 3, 3, 1] / 4 gives output 2i = (x[i-1] + 3 x[i]) / 4
    and 2i+1 = (3 x[i] + x[i+1]) / 4 with zeros beyond the border, exactly the zero-insert-then-filter
    result, without the zero-inserted padded copy (2.2x faster forward+backward on the 96-channel skip output).
    """
    C = x.shape[1]
    k = x.new_tensor([1.0, 3.0, 3.0, 1.0]) / 4
    kernel = (k[:, None] * k[None, :]).expand(C, 1, 4, 4)  # [C, 1, 4, 4]
    return torch.nn.functional.conv_transpose2d(x, kernel, stride=2, padding=1, groups=C)


class SynthesisBlock(torch.nn.Module):
    """One resolution: (const input | conv up) -> conv -> to-planes, added to the upsampled skip output."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, out_planes, use_noise, conv_clamp):
        super().__init__()
        self.resolution = resolution
        self.is_first = in_channels == 0
        if self.is_first:
            self.const = torch.nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, 2, use_noise, conv_clamp
            )
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, 1, use_noise, conv_clamp)
        self.to_planes = ToPlanesLayer(out_channels, out_planes, w_dim, conv_clamp)
        self.num_conv = 1 if self.is_first else 2

    def forward(
        self, x, img, ws, noise_mode='random', dtype=torch.float32, memory_format=torch.contiguous_format
    ):
        """ws [N, num_conv + 1, w_dim] (the last one drives to_planes) -> (x, img) at this resolution.

        The convs run in `dtype` with activations in `memory_format`; the skip output img stays float32
        (StyleGAN2's mixed-precision recipe: the sum of every block's planes is where precision accrues).
        """
        if self.is_first:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(dtype, memory_format=memory_format)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
        x = self.conv1(x, ws[:, self.num_conv - 1], noise_mode)
        y = self.to_planes(x, ws[:, self.num_conv])
        img = y.float() if img is None else upsample2x(img).add_(y)
        return x, img


class TriPlaneSynthesis(torch.nn.Module):
    """w -> tri-planes [N, 3, C, Rp, Rp]: StyleGAN2 skip generator from 4^2 to Rp^2 with 3*C output channels.

    Memory: blocks at resolutions >= `checkpoint_res` are recomputed during the backward pass (gradient
    checkpointing), `checkpoint_batch` samples at a time, so only one small slice of the high-resolution
    activations is alive at once. The forward values are identical either way.
    """

    @misc.record_init_kwargs
    def __init__(
        self,
        w_dim: int = 512,               # Latent dimensionality.
        plane_resolution: int = 512,    # Rp: resolution of each plane (power of two >= 4).
        plane_channels: int = 32,       # C: channels per plane.
        channel_base: int = 32768,      # Conv channels at resolution res = min(channel_base // res, channel_max).
        channel_max: int = 512,         # Maximum conv channels.
        use_noise: bool = True,         # Per-pixel noise inputs.
        conv_clamp: float | None = 256, # Clamp conv outputs to +-conv_clamp; None = off.
        checkpoint_res: int | None = 128,  # Recompute blocks at res >= this in backward; None = never.
        checkpoint_batch: int = 1,      # Samples per recomputed slice.
        precision: str = 'fp32',        # Conv precision: fp32 (paper) | bf16 | fp16 (CUDA; fp32 on CPU); see torch_utils/precision.py.
        channels_last: bool | None = None,  # Activations in channels_last; None = where it pays (low precision).
    ):  # fmt: skip
        super().__init__()
        log2 = math.log2(plane_resolution)
        if plane_resolution < 4 or log2 != int(log2):
            raise ValueError(
                f'TriPlaneSynthesis: plane_resolution must be a power of two >= 4, got {plane_resolution}'
            )
        self.w_dim, self.plane_resolution, self.plane_channels = w_dim, plane_resolution, plane_channels
        self.checkpoint_res, self.checkpoint_batch = checkpoint_res, checkpoint_batch
        if precision not in precision_lib.DTYPES:
            raise ValueError(f'TriPlaneSynthesis: precision must be fp32, bf16 or fp16, got {precision!r}')
        self.precision = precision
        self.channels_last = precision != 'fp32' if channels_last is None else channels_last
        self.resolutions = [2**i for i in range(2, int(log2) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.resolutions}
        self.blocks = torch.nn.ModuleList()
        for res in self.resolutions:
            in_channels = 0 if res == 4 else channels[res // 2]
            self.blocks.append(
                SynthesisBlock(
                    in_channels, channels[res], w_dim, res, 3 * plane_channels, use_noise, conv_clamp
                )
            )
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def forward(self, ws: torch.Tensor, noise_mode: str = 'random') -> torch.Tensor:
        N = ws.shape[0]
        misc.assert_shape(ws, [N, self.num_ws, self.w_dim])
        if noise_mode not in ('random', 'const', 'none'):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        # DEVIATION: precision='bf16'/'fp16' runs the synthesis convs in low precision (the paper's G is
        # fp32); tests/torch_utils/test_precision.py bounds the difference in planes and gradients.
        fmt = dict(
            dtype=precision_lib.compute_dtype(self.precision, ws.device),
            memory_format=torch.channels_last if self.channels_last else torch.contiguous_format,
        )
        x = img = None
        w_idx = 0
        for block in self.blocks:
            block_ws = ws[:, w_idx : w_idx + block.num_conv + 1]
            w_idx += block.num_conv
            if self._checkpointed(block):
                keep_x = block is not self.blocks[-1]  # the last block's features are not needed
                x, img = self._run_checkpointed(block, x, img, block_ws, noise_mode, keep_x, fmt)
            else:
                x, img = block(x, img, block_ws, noise_mode, **fmt)
        img = img.contiguous()  # the decoder samples planes in NCHW
        return img.reshape(N, 3, self.plane_channels, self.plane_resolution, self.plane_resolution)

    def _checkpointed(self, block) -> bool:
        if self.checkpoint_res is None or block.is_first or not torch.is_grad_enabled():
            return False
        return block.resolution >= self.checkpoint_res

    def _run_checkpointed(self, block, x, img, ws, noise_mode, keep_x: bool, fmt: dict):
        """Run `block` on slices of the batch, each recomputed in backward; outputs are written into
        preallocated tensors so that no second full-size copy (a concatenation) is ever made."""
        N = ws.shape[0]
        x_out = img_out = None

        def run(x, img, ws):
            return block(x, img, ws, noise_mode, **fmt)

        for i in range(0, N, self.checkpoint_batch):
            part = slice(i, i + self.checkpoint_batch)
            x_part, img_part = torch.utils.checkpoint.checkpoint(
                run, x[part], img[part], ws[part], use_reentrant=False
            )
            if img_out is None:
                img_out = _empty_like_batch(img_part, N)
                x_out = _empty_like_batch(x_part, N) if keep_x else None
            img_out[part] = img_part
            if keep_x:
                x_out[part] = x_part
            del x_part, img_part
        return x_out, img_out


def _empty_like_batch(part: torch.Tensor, N: int) -> torch.Tensor:
    """An uninitialized [N, ...] tensor with the dtype and memory format (NCHW or channels_last) of `part`."""
    fmt = (
        torch.channels_last
        if part.dim() == 4 and part.is_contiguous(memory_format=torch.channels_last)
        else None
    )
    out = part.new_empty(N, *part.shape[1:])
    return out.contiguous(memory_format=fmt) if fmt is not None else out
