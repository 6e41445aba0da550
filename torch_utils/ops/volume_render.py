"""Alpha compositing along rays (the NeRF quadrature), with a `ref` path and an opt-in `cuda` twin.

For samples i = 0..S-1 along a ray with densities sigma_i >= 0 and interval lengths delta_i:
    tau_i   = sigma_i * delta_i                     (optical thickness of interval i)
    T_i     = exp(-sum_{j<i} tau_j)                 (transmittance up to sample i)
    alpha_i = 1 - exp(-tau_i)                       (opacity of interval i)
    w_i     = T_i * alpha_i                         (Eq. 3 of NeRF: the compositing weights)
    color   = sum_i w_i c_i,   depth_sum = sum_i w_i t_i,   opacity = sum_i w_i = 1 - exp(-sum_i tau_i).
An infinitely long last interval is passed as a large finite delta (see `INFINITE_DELTA`): a true inf
would turn sigma = 0 into NaN.
"""

import torch

from torch_utils import misc

INFINITE_DELTA = 1e10  # interval length standing for "to infinity"


def composite(
    colors: torch.Tensor, sigmas: torch.Tensor, deltas: torch.Tensor, t: torch.Tensor, impl: str = 'ref'
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite samples along rays.

    colors [..., S, C], sigmas [..., S] (>= 0), deltas [..., S], t [..., S] (sample depths)
    -> (color [..., C], depth_sum [..., ] = sum w t, opacity [..., ], weights [..., S]).
    """
    S = colors.shape[-2]
    misc.assert_shape(sigmas, [*colors.shape[:-1]])
    misc.assert_shape(deltas, [*colors.shape[:-2], S])
    misc.assert_shape(t, [*colors.shape[:-2], S])
    if impl == 'cuda':
        from torch_utils.ops import volume_render_cuda  # noqa: PLC0415 (imported on demand only)

        return volume_render_cuda.composite(colors, sigmas, deltas, t)
    if impl != 'ref':
        raise ValueError(f"volume_render.composite: impl must be 'ref' or 'cuda', got {impl!r}")
    return _composite_ref(colors, sigmas, deltas, t)


def _composite_ref(colors, sigmas, deltas, t):
    tau = sigmas * deltas  # [..., S]
    # Exclusive cumulative sum built from the first S-1 terms: subtracting tau from an inclusive cumsum
    # would cancel catastrophically when the last interval is "infinite".
    zeros = torch.zeros_like(tau[..., :1])
    tau_before = torch.cat([zeros, torch.cumsum(tau[..., :-1], dim=-1)], dim=-1)  # [..., S]
    weights = torch.exp(-tau_before) * -torch.expm1(-tau)  # Eq. 3 of NeRF: T_i * alpha_i
    color = torch.einsum('...s,...sc->...c', weights, colors)
    depth_sum = (weights * t).sum(dim=-1)
    opacity = weights.sum(dim=-1)
    return color, depth_sum, opacity, weights
