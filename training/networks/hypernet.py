"""The patch hypernetwork H: (s, dx, dy) -> p in R^512 -> per-layer modulations sigma_l (Sec. 3.2, App. B.1).

Embedding (828 dims, Appendix B.1): for each of the 3 scalars, a learned 256-d table entry indexed by
round(1000 x) plus 10 log-spaced sin/cos pairs (276 dims each). D computes it once and shares it between
H and its projection head (Sec. 3.2: "we also use the projection strategy"), as the public code does.
H is "very similar to the generator's mapping network" (B.1): an input embedding layer, 2nd-moment
normalisation, then 2 FC layers with LeakyReLU(0.2) at learning-rate multiplier 0.01, giving p in R^512.
Every modulated layer l has its own affine adapter (W_l, b_l):
    Eq. 7: sigma_l = tanh(W_l p + b_l) + 1, in (0, 2)^{c_l}.
"""

import torch

from torch_utils import misc
from training.networks.layers import FourierFeatures, FullyConnectedLayer


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2)) over the features (StyleGAN's mapping-network input normalisation)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class PatchEmbedding(torch.nn.Module):
    """(s, dx, dy) [N, 3] -> [N, 3 * (table_dim + 2 * num_freqs)] (828 with the defaults)."""

    def __init__(
        self,
        table_dim=256,  # Width of the learned lookup table per scalar.
        table_size=1000,  # Table resolution: a scalar x in [0, 1] reads entry round(table_size * x).
        num_freqs=10,  # Log-spaced sin/cos pairs per scalar.
        min_freq=0.25,  # Lowest frequency (cycles per unit of s or offset).
        max_freq=128.0,  # Highest frequency: 128 cycles = one per 2 pixels of a 256^2 image.
    ):
        super().__init__()
        self.table_size = table_size
        self.tables = torch.nn.ModuleList([torch.nn.Embedding(table_size + 1, table_dim) for _ in range(3)])
        self.fourier = FourierFeatures(1, num_freqs, min_freq=min_freq, max_freq=max_freq)
        self.out_features = 3 * (table_dim + self.fourier.out_features)

    def forward(self, patch_params: torch.Tensor) -> torch.Tensor:
        misc.assert_shape(patch_params, [None, 3])
        idx = torch.round(patch_params.detach() * self.table_size).long().clamp(0, self.table_size)  # [N, 3]
        parts = []
        for i, table in enumerate(self.tables):
            x = patch_params[:, i : i + 1]  # [N, 1]
            parts += [table(idx[:, i]).to(x.dtype), self.fourier(x)]  # [N, 256], [N, 20]
        return torch.cat(parts, dim=1)  # [N, 828]


class ConditionMLP(torch.nn.Module):
    """features -> embed FC -> 2nd-moment norm -> num_layers x FC + LeakyReLU(0.2) at lr_multiplier.

    The structure of StyleGAN's mapping network for a conditioning input (B.1); the hypernetwork and D's
    projection head both use it. lr_multiplier 0.01 is the mapping network's: its FC layers learn 100x
    slower than D's convs, which keeps the conditioning from racing ahead of the features it scales.
    c_dim > 0: a one-hot class gets its own embedding FC and normalisation, concatenated with the
    features' (as StyleGAN2's mapping embeds c next to z). Embedded together with the 156-828 patch
    features, a class moved the demo's conditioning vector by about a tenth of its norm, and D's
    score told the right class from a wrong one by 0.6 (49 % argmax accuracy) after 16 kimg.
    """

    def __init__(self, in_features, out_features, num_layers=2, lr_multiplier=0.01, c_dim=0):
        super().__init__()
        self.embed = FullyConnectedLayer(in_features, out_features) if in_features > 0 else None
        self.embed_c = FullyConnectedLayer(c_dim, out_features) if c_dim > 0 else None
        if self.embed is None and self.embed_c is None:
            raise ValueError('ConditionMLP: needs features (in_features > 0) or classes (c_dim > 0)')
        width = out_features * ((self.embed is not None) + (self.embed_c is not None))
        dims = [width] + [out_features] * num_layers
        self.layers = torch.nn.Sequential(
            *[
                FullyConnectedLayer(a, b, activation='lrelu', lr_multiplier=lr_multiplier)
                for a, b in zip(dims[:-1], dims[1:])
            ]
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].weight.dtype

    def forward(self, x: torch.Tensor | None, c: torch.Tensor | None = None) -> torch.Tensor:
        parts = []
        if self.embed is not None:
            parts.append(normalize_2nd_moment(self.embed(x.to(self.dtype))))
        if self.embed_c is not None:
            parts.append(normalize_2nd_moment(self.embed_c(c.to(self.dtype))))
        return self.layers(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])


class HyperNetwork(torch.nn.Module):
    """H: patch embedding [N, E] -> p [N, hyper_dim] -> {layer name: sigma [N, c_l]} (Eq. 7)."""

    def __init__(
        self,
        layer_channels: dict,  # {layer name: number of channels that layer's sigma scales}.
        in_features: int,  # Width of the patch embedding (828 in the paper).
        hyper_dim=512,  # Width of p and of the MLP.
        num_layers=2,  # MLP depth (App. B.1: 2, like G's mapping network).
        lr_multiplier=0.01,  # Learning-rate multiplier of the MLP (B.1: like the mapping network).
        adapter_init=1.0,  # Scale of the adapters' initial weights W_l (1 = the public code's; 0 = sigma = 1).
    ):
        super().__init__()
        self.mlp = ConditionMLP(in_features, hyper_dim, num_layers, lr_multiplier)
        # Module names cannot contain '.', so adapters are keyed with '_' and looked up through a map.
        self.names = {name: name.replace('.', '_') for name in layer_channels}
        self.adapters = torch.nn.ModuleDict(
            {key: FullyConnectedLayer(hyper_dim, layer_channels[name]) for name, key in self.names.items()}
        )
        # With adapter_init 1, tanh starts saturated (sigma spans 0.01-1.99) and, since the embedding's table
        # rows are independent random vectors, differs at random between neighbouring patches: noise D must
        # first learn away. A smaller scale starts D closer to the standard one (W_l = 0: exactly).
        with torch.no_grad():
            for adapter in self.adapters.values():
                adapter.weight.mul_(adapter_init)

    def forward(self, embedding: torch.Tensor) -> dict:
        p = self.mlp(embedding)  # [N, hyper_dim]
        return {name: torch.tanh(self.adapters[key](p)) + 1 for name, key in self.names.items()}  # Eq. 7
