"""Layers shared by G and D: equalized-learning-rate FC and conv layers, Fourier features.

Equalized learning rate (StyleGAN): parameters are stored at unit scale (N(0, 1) / lr_multiplier) and
multiplied by their He constant 1/sqrt(fan_in) (times lr_multiplier) at every forward, so Adam's
per-parameter step sizes act uniformly on every layer.
"""

import math

import numpy as np
import torch

from torch_utils import misc
from torch_utils.ops import bias_act, conv2d_resample, upfirdn2d

# ----------------------------------------------------------------------------


class FullyConnectedLayer(torch.nn.Module):
    """y = act(x @ (W * lr_multiplier / sqrt(in_features))^T + b * lr_multiplier)."""

    def __init__(
        self,
        in_features,            # Number of input features.
        out_features,           # Number of output features.
        bias=True,              # Add a bias?
        activation='linear',    # Activation name from bias_act.activation_funcs.
        lr_multiplier=1,        # Learning-rate multiplier of weight and bias.
        bias_init=0,            # Initial value of the bias (a number or a list of out_features numbers).
        impl='ref',             # Op twin for bias_act: 'ref' (default until a GPU run verifies 'cuda') or 'cuda'.
    ):  # fmt: skip
        super().__init__()
        self.impl = impl
        if activation not in bias_act.activation_funcs:
            raise ValueError(f'FullyConnectedLayer: unknown activation "{activation}"')
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        bias_init = np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features])
        self.bias = torch.nn.Parameter(torch.from_numpy(bias_init / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        misc.assert_shape(x, [None, self.in_features])
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation, impl=self.impl)

    def extra_repr(self):
        return (
            f'in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}'
        )


# ----------------------------------------------------------------------------


class Conv2dLayer(torch.nn.Module):
    """Equalized-lr conv with optional up/down-sampling, bias, activation and output clamping."""

    def __init__(
        self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        kernel_size,                    # Width and height of the kernel.
        bias=True,                      # Add a bias?
        activation='linear',            # Activation name from bias_act.activation_funcs.
        up=1,                           # Integer upsampling factor.
        down=1,                         # Integer downsampling factor.
        resample_filter=(1, 3, 3, 1),   # Low-pass filter for up/down-sampling.
        conv_clamp=None,                # Clamp the output to +-conv_clamp (scaled by forward's gain); None = off.
        channels_last=False,            # Store the weight in channels_last memory format?
        trainable=True,                 # False = weight and bias are buffers (fixed).
        impl='ref',                     # Op twins (bias_act, upfirdn2d): 'ref' (default until verified) or 'cuda'.
    ):  # fmt: skip
        super().__init__()
        self.impl = impl
        if activation not in bias_act.activation_funcs:
            raise ValueError(f'Conv2dLayer: unknown activation "{activation}"')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(
            memory_format=memory_format
        )
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer('weight', weight)
            self.register_buffer('bias', bias)

    def forward(self, x, gain=1):
        misc.assert_shape(x, [None, self.in_channels, None, None])
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        flip_weight = self.up == 1  # Transposed-conv friendly kernel orientation for upsampling layers.
        x = conv2d_resample.conv2d_resample(
            x, w.to(x.dtype), self.resample_filter, self.up, self.down, self.padding, flip_weight=flip_weight,
            impl=self.impl,
        )  # fmt: skip
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp, impl=self.impl)

    def extra_repr(self):
        return (
            f'in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, '
            f'up={self.up}, down={self.down}'
        )


# ----------------------------------------------------------------------------


class FourierFeatures(torch.nn.Module):
    """Log-spaced sin/cos encoding: [..., in] -> [..., in * num_freqs * 2] = [sin(2 pi f x), cos(2 pi f x)].

    Frequencies run log-uniformly from min_freq to max_freq (cycles per unit of input). The patch
    hypernetwork and D's camera conditioning encode (s, dx, dy) and (yaw, pitch) with it.
    """

    def __init__(
        self,
        in_features,        # Number of input coordinates.
        num_freqs,          # Number of frequencies per coordinate.
        min_freq=1.0,       # Lowest frequency (cycles per unit).
        max_freq=None,      # Highest frequency; None = min_freq * 2^(num_freqs - 1) (octaves).
        include_input=False,  # Also output the raw input (prepended)?
    ):  # fmt: skip
        super().__init__()
        if num_freqs < 1 or min_freq <= 0:
            raise ValueError(
                f'FourierFeatures: need num_freqs >= 1 and min_freq > 0, got {num_freqs}, {min_freq}'
            )
        if max_freq is None:
            max_freq = min_freq * 2 ** (num_freqs - 1)
        if max_freq < min_freq:
            raise ValueError(f'FourierFeatures: max_freq={max_freq} is below min_freq={min_freq}')
        self.in_features = in_features
        self.num_freqs = num_freqs
        self.include_input = include_input
        self.out_features = in_features * num_freqs * 2 + (in_features if include_input else 0)
        t = torch.linspace(0, 1, num_freqs, dtype=torch.float64)
        freqs = min_freq * (max_freq / min_freq) ** t  # [F], log-spaced
        self.register_buffer('freqs', freqs.to(torch.float32), persistent=False)

    def forward(self, x):
        misc.assert_shape(x, [*([None] * (x.ndim - 1)), self.in_features])
        angles = (2 * math.pi) * x.unsqueeze(-1) * self.freqs.to(x.dtype)  # [..., in, F]
        angles = angles.flatten(-2)  # [..., in*F]
        parts = [x] if self.include_input else []
        return torch.cat([*parts, angles.sin(), angles.cos()], dim=-1)

    def extra_repr(self):
        return f'in_features={self.in_features}, num_freqs={self.num_freqs}, out_features={self.out_features}'
