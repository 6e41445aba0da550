"""Tri-plane radiance field: named feature planes, bilinear sampling, the tiny decoder MLP, density noise.

World points x in the box [-b, b]^3 (b = the preset's cube scale, `scene_bounds`) are normalized to
[-1, 1]^3 and projected onto three axis-aligned planes. The planes are NAMED, in this order
(EG3D's code projects onto an unintended pair, their issue #67; a test pins ours):
    plane 0 = xy: width axis x, height axis y
    plane 1 = xz: width axis x, height axis z
    plane 2 = yz: width axis y, height axis z
A plane tensor [N, 3, C, H, W] covers its square edge to edge: grid_sample with align_corners=False,
so -1 and +1 are the outer pixel edges; points outside the box read zero features.
"""

import torch

from torch_utils import misc
from torch_utils.ops import bias_act
from training.networks.layers import FullyConnectedLayer

PLANE_NAMES = ('xy', 'xz', 'yz')
PLANE_AXES = ((0, 1), (0, 2), (1, 2))  # (width axis, height axis) of each plane, as indices into (x, y, z)


def project_onto_planes(coords: torch.Tensor) -> torch.Tensor:
    """Normalized points [N, P, 3] -> their 2D coordinates on each named plane [N, 3, P, 2]."""
    # Each PLANE_AXES pair as a strided view (0:2 = xy, 0::2 = xz, 1:3 = yz): no gather, no scatter in backward.
    views = {(0, 1): coords[..., 0:2], (0, 2): coords[..., 0::2], (1, 2): coords[..., 1:3]}
    return torch.stack([views[axes] for axes in PLANE_AXES], dim=1)


def sample_triplane(planes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample each plane [N, 3, C, H, W] at normalized points coords [N, P, 3] -> [N, 3, P, C]."""
    N, _, C, H, W = planes.shape
    P = coords.shape[1]
    misc.assert_shape(coords, [N, P, 3])
    grid = project_onto_planes(coords).reshape(N * 3, 1, P, 2)  # [N*3, 1, P, 2] (x -> width, y -> height)
    feats = torch.nn.functional.grid_sample(
        planes.reshape(N * 3, C, H, W), grid, mode='bilinear', padding_mode='zeros', align_corners=False
    )  # [N*3, C, 1, P]
    return feats.reshape(N, 3, C, P).transpose(2, 3)  # [N, 3, P, C]


def density_noise_std(cur_nimg: float, init_std: float = 1.0, anneal_kimg: float = 5000) -> float:
    """Std of the Gaussian noise added to raw densities: init_std at the start, linearly 0 at anneal_kimg.

    A pure function of the training progress (the loop passes the result to G as `density_noise_std`).
    """
    if anneal_kimg <= 0:
        return 0.0
    return float(init_std * max(0.0, 1.0 - cur_nimg / (anneal_kimg * 1000)))


class TriPlaneDecoder(torch.nn.Module):
    """Mean plane feature (C) -> FC(hidden, lrelu) -> FC(4): RGB in [-1, 1] and a raw density logit.

    No view direction input (it hurts multi-view consistency, paper §3.1).
    """

    @misc.record_init_kwargs
    def __init__(
        self,
        feature_dim: int = 32,      # Channels per plane.
        hidden_dim: int = 64,       # Width of the hidden layer.
        density_shift: float = 0.0,  # Added to the raw density before softplus (negative = emptier start).
        density_scale: float = 1.0,  # Multiplies softplus's output: the densities a sharp edge needs, sooner.
    ):  # fmt: skip
        super().__init__()
        self.feature_dim = feature_dim
        self.density_shift, self.density_scale = density_shift, density_scale
        self.hidden = FullyConnectedLayer(feature_dim, hidden_dim, activation='lrelu')
        self.out = FullyConnectedLayer(hidden_dim, 4)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Plane features [N, 3, P, C] -> raw outputs [N, P, 4] (rgb logits, density logit)."""
        N, _, P, C = features.shape
        misc.assert_shape(features, [N, 3, P, self.feature_dim])
        x = features.mean(dim=1).reshape(N * P, C)  # [N*P, C]: mean over the three planes
        x = self.out(self.hidden(x))  # [N*P, 4]
        return x.reshape(N, P, 4)

    def decode(self, planes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """`forward(sample_triplane(planes, coords))` with fewer passes: [N, 3, C, H, W], [N, P, 3] -> [N, P, 4].

        The planes are summed in the grid_sample layout [N, C, P], then the MLP runs points-major as two
        addmm over all N*P points (25 % faster than batched matmuls over [N, C, P] at the demo's sizes);
        the mean over planes and the hidden activation's gain are folded into the weights, and the leaky
        ReLU runs in place.
        """
        N, _, C, H, W = planes.shape
        P = coords.shape[1]
        grid = project_onto_planes(coords)[:, :, None]  # [N, 3, 1, P, 2]
        sample = lambda p, g: torch.nn.functional.grid_sample(  # noqa: E731
            p, g, mode='bilinear', padding_mode='zeros', align_corners=False
        )
        # The backward copies either the samples' gradient (one call on [N*3, ...]: the sum's expanded
        # gradient goes back into grid_sample's layout) or the planes' (a call per plane: each gets the
        # same contiguous gradient, and their plane gradients are stacked). Copy the smaller.
        if H * W <= P:  # the demo (32^2 planes, 8192 points a sample)
            xy, xz, yz = (sample(p, g) for p, g in zip(planes.unbind(1), grid.unbind(1)))
            feats = xy.add_(xz).add_(yz)  # [N, C, 1, P], in place: no new 4 x 8192 x C buffers
        else:  # the paper (512^2 planes, 65536 points a chunk)
            feats = sample(planes.reshape(N * 3, C, H, W), grid.reshape(N * 3, 1, P, 2))  # [N*3, C, 1, P]
            feats = feats.reshape(N, 3, C, P).sum(dim=1)  # 3x the mean over planes
        feats = feats.reshape(N, C, P).transpose(1, 2).reshape(N * P, C)  # [N*P, C]
        hidden, out = self.hidden, self.out
        w1 = hidden.weight * (hidden.weight_gain / 3)  # [64, C]
        x = torch.addmm(hidden.bias * hidden.bias_gain, feats, w1.t())  # [N*P, 64]
        x = torch.nn.functional.leaky_relu_(x, 0.2)
        gain = bias_act.activation_funcs['lrelu'].def_gain
        w2 = out.weight * (out.weight_gain * gain)  # [4, 64]
        x = torch.addmm(out.bias * out.bias_gain, x, w2.t())  # [N*P, 4]
        return x.reshape(N, P, 4)

    def activate(self, raw: torch.Tensor, noise_std: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw outputs [N, P, 4] -> (rgb [N, P, 3] in [-1, 1], sigma [N, P, 1] >= 0); see `activate_outputs`."""
        return activate_outputs(raw, self.density_shift, noise_std, self.density_scale)


def activate_outputs(
    raw: torch.Tensor, density_shift: float = 0.0, noise_std: float = 0.0, density_scale: float = 1.0
):
    """Raw field outputs [N, P, 4] -> (rgb [N, P, 3] in [-1, 1], sigma [N, P, 1] >= 0).

    Density: scale * softplus(raw + shift + noise_std * n), n ~ N(0, 1) (the noise regularizes early training).
    """
    # DEVIATION: colours go through a (slightly widened) sigmoid so images stay in [-1, 1] as the
    # interface promises; the public EpiGRAF code leaves them unbounded.
    rgb = torch.sigmoid(raw[..., :3]) * (2 + 2e-3) - (1 + 1e-3)
    logit = raw[..., 3:] + density_shift
    if noise_std > 0:
        logit = logit + noise_std * torch.randn_like(logit)
    return rgb, torch.nn.functional.softplus(logit) * density_scale
