"""NeRF++ background model: a small style-modulated MLP on inverse-sphere coordinates (x', y', z', 1/r).

Paper Appendix B: the INR-GAN MLP with 4 input coordinates, 2 blocks of 2 linear layers, 16 samples per
ray without hierarchical sampling; composited behind the foreground (`rendering.render_rays`).
"""

import math

import torch

from torch_utils import misc
from training.networks.layers import FourierFeatures, FullyConnectedLayer


class ModulatedLinear(torch.nn.Module):
    """A linear layer whose weight is modulated (and demodulated) per sample by a style from w."""

    def __init__(self, in_features: int, out_features: int, w_dim: int, activation: bool = True):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_features, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features))
        self.bias = torch.nn.Parameter(torch.zeros(out_features))
        self.activation = activation

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [N, P, in], w [N, w_dim] -> [N, P, out]."""
        styles = self.affine(w)  # [N, in]
        weight = self.weight[None] * styles[:, None, :]  # [N, out, in]
        weight = weight * (weight.square().sum(dim=2, keepdim=True) + 1e-8).rsqrt()  # demodulate
        x = torch.baddbmm(self.bias[None, None], x, weight.transpose(1, 2))  # [N, P, out]
        if self.activation:
            x = torch.nn.functional.leaky_relu(x, 0.2) * math.sqrt(2)
        return x


class BackgroundMLP(torch.nn.Module):
    """(x', y', z', 1/r) -> Fourier features -> num_blocks x 2 modulated linear layers -> (rgb, density) logits."""

    @misc.record_init_kwargs
    def __init__(
        self,
        w_dim: int = 512,       # Latent dimensionality (one w per modulated layer).
        hidden_dim: int = 128,  # Width of the hidden layers.
        num_blocks: int = 2,    # Blocks of two modulated linear layers.
        num_freqs: int = 6,     # Octaves of Fourier features per coordinate (1 .. 2^(num_freqs-1) cycles).
    ):  # fmt: skip
        super().__init__()
        self.encoding = FourierFeatures(4, num_freqs, min_freq=1.0, include_input=True)
        dims = [self.encoding.out_features] + [hidden_dim] * (2 * num_blocks)
        self.layers = torch.nn.ModuleList(ModulatedLinear(a, b, w_dim) for a, b in zip(dims[:-1], dims[1:]))
        self.out = FullyConnectedLayer(hidden_dim, 4)
        self.num_ws = len(self.layers)
        self.w_dim = w_dim

    def forward(self, coords: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        """coords [N, P, 4], ws [N, num_ws, w_dim] -> raw outputs [N, P, 4] (rgb logits, density logit)."""
        N, P, _ = coords.shape
        misc.assert_shape(ws, [N, self.num_ws, self.w_dim])
        x = self.encoding(coords)  # [N, P, F]
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i])
        return self.out(x.reshape(N * P, -1)).reshape(N, P, 4)  # [N, P, 4]
