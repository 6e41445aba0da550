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

import os

import torch
from torch.autograd.function import once_differentiable

from torch_utils import custom_ops, misc

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
    if impl not in ('ref', 'cuda'):
        raise ValueError(f"volume_render.composite: impl must be 'ref' or 'cuda', got {impl!r}")
    if impl == 'cuda' and _plugin(colors) is not None:
        return _CompositeCuda.apply(colors, sigmas, deltas, t)
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


# ----------------------------------------------------------------------------
# The CUDA twin (opt-in; compile-checked only until verified on a GPU: tests/torch_utils/ops/test_ops_cuda_twins.py).

PLUGIN = dict(
    module_name='volume_render_plugin',
    sources=['volume_render.cpp', 'volume_render.cu'],
    headers=['volume_render.h'],
    source_dir=os.path.dirname(os.path.abspath(__file__)),
)


def _plugin(x: torch.Tensor):
    """The built extension, or None (after one warning per reason) when the twin cannot run on x."""
    return custom_ops.load_cuda_twin('volume_render', x, PLUGIN)


class _CompositeCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, colors, sigmas, deltas, t):
        *lead, S, C = colors.shape
        flat = [v.reshape(-1, S).contiguous() for v in (sigmas, deltas, t)]  # [R, S]
        colors_flat = colors.reshape(-1, S, C).contiguous()  # [R, S, C]
        color, depth_sum, opacity, weights = _plugin(colors).forward(colors_flat, *flat)
        ctx.save_for_backward(colors_flat, *flat, weights)
        ctx.lead = lead
        return (
            color.reshape(*lead, C),
            depth_sum.reshape(lead),
            opacity.reshape(lead),
            weights.reshape(*lead, S),
        )

    @staticmethod
    @once_differentiable
    def backward(ctx, g_color, g_depth, g_opacity, g_weights):
        colors, sigmas, deltas, t, weights = ctx.saved_tensors
        R, S, C = colors.shape
        grads = [g_color, g_depth, g_opacity, g_weights]
        shapes = [(R, C), (R,), (R,), (R, S)]
        grads = [torch.zeros(s, dtype=colors.dtype, device=colors.device) if g is None else g.reshape(s).contiguous()
                 for g, s in zip(grads, shapes)]  # fmt: skip
        d_colors, d_sigmas, d_deltas, d_t = _plugin(colors).backward(
            colors, sigmas, deltas, t, weights, *grads
        )
        lead = ctx.lead
        return (
            d_colors.reshape(*lead, S, C),
            d_sigmas.reshape(*lead, S),
            d_deltas.reshape(*lead, S),
            d_t.reshape(*lead, S),
        )
