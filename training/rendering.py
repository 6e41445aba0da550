"""Volume rendering of a patch: rays, stratified + hierarchical sampling, compositing, NeRF++ background.

A patch (s, dx, dy) rendered at r x r pixels casts one ray through each pixel centre of
`patches.patch_pixel_centres` (the same points the real-image crop samples), so a full image is the
patch (1, 0, 0) at r = R. Depths `t` are distances along unit ray directions from the camera centre.
Per-ray tensors are [N, R, ...] (R rays per sample), per-sample ones [N, R, S, ...].

The radiance field is given as a function `field(points [N, P, 3]) -> (rgb [N, P, 3], sigma [N, P, 1])`
(colours in [-1, 1], densities >= 0), so this file knows nothing about tri-planes.
"""

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import torch

from torch_utils import misc
from torch_utils.ops import volume_render
from training import cameras, patches

BACKGROUND_COLOURS = {'white': 1.0, 'black': -1.0}  # in the [-1, 1] image range


class RenderOutput(NamedTuple):
    """What G renders: images in [-1, 1], expected depth (distance along the ray) and opacity."""

    image: torch.Tensor  # [N, 3, r, r]
    depth: torch.Tensor  # [N, 1, r, r]
    opacity: torch.Tensor  # [N, 1, r, r]


@dataclasses.dataclass(frozen=True)
class RayMarchOptions:
    """How rays are sampled and composited (built by the Generator from its constructor kwargs)."""

    ray_start: float  # Near bound of the foreground samples (distance from the camera centre).
    ray_end: float  # Far bound of the foreground samples.
    num_coarse: int = 48  # Stratified samples per ray.
    num_fine: int = 48  # Importance samples per ray drawn from the coarse weights (0 = none).
    background: str = 'white'  # Colour behind everything: 'white' or 'black'.
    last_to_infinity: bool = (
        True  # Last foreground interval reaches infinity (False with a background model).
    )
    jitter: bool = True  # Random stratified/importance positions (False = deterministic midpoints).

    def __post_init__(self):
        if not 0 <= self.ray_start < self.ray_end:
            raise ValueError(
                f'rendering: need 0 <= ray_start < ray_end, got {self.ray_start}, {self.ray_end} '
                '(set ray_start/ray_end in the dataset preset, configs/datasets/<name>.yaml)'
            )
        if self.num_coarse < 2 or self.num_fine < 0:
            raise ValueError(
                f'rendering: need num_coarse >= 2 and num_fine >= 0, got {self.num_coarse}, {self.num_fine} '
                '(the Generator kwargs num_coarse/num_fine, e.g. --ray-steps)'
            )
        if self.background not in BACKGROUND_COLOURS:
            raise ValueError(
                f'rendering: background must be one of {list(BACKGROUND_COLOURS)}, got {self.background!r} '
                '(the dataset preset\'s "background")'
            )


# ----------------------------------------------------------------------------
# Rays and samples.


def patch_rays(camera: cameras.Camera, patch_params: torch.Tensor, resolution: int):
    """Rays through the r x r pixel centres of each patch: origins and unit directions, each [N, r*r, 3].

    Rays are in row-major pixel order (row i = v, column j = u), so `.reshape(N, r, r, C)` gives the image.
    """
    N = camera.batch_size
    misc.assert_shape(patch_params, [N, 3])
    uv = patches.patch_pixel_centres(patch_params.to(camera.cam2world.dtype), resolution)  # [N, r, r, 2]
    return cameras.pixels_to_rays(uv.reshape(N, resolution * resolution, 2), camera)


def stratified_depths(batch_shape, num_samples: int, ray_start: float, ray_end: float, jitter: bool, like):
    """One depth in each of `num_samples` equal bins of [ray_start, ray_end] (bin middles unless jitter).

    -> (t [*batch_shape, S], edges [S + 1]) where edges are the bin boundaries shared by every ray.
    """
    edges = torch.linspace(ray_start, ray_end, num_samples + 1, dtype=like.dtype, device=like.device)
    if jitter:
        u = torch.rand(*batch_shape, num_samples, dtype=like.dtype, device=like.device)
    else:
        u = torch.full((*batch_shape, num_samples), 0.5, dtype=like.dtype, device=like.device)
    t = edges[:-1] + u * (edges[1:] - edges[:-1])
    return t, edges


def sample_pdf(edges: torch.Tensor, weights: torch.Tensor, num_samples: int, jitter: bool, eps: float = 1e-5):
    """Inverse-CDF samples of the piecewise-constant PDF with mass `weights` on the bins `edges`.

    edges [..., B + 1] (or [B + 1] shared by all rays), weights [..., B] >= 0 -> t [..., F], sorted.
    The quantiles are stratified: (j + u_j) / F with u_j ~ U[0, 1) (or 1/2 without jitter).
    Differentiable in `edges` and `weights` (except where a quantile crosses a CDF knot).
    """
    B = weights.shape[-1]
    edges = edges.expand(*weights.shape[:-1], B + 1)
    weights = weights + eps  # every bin keeps a little mass, so the CDF is strictly increasing
    cdf = torch.cumsum(weights / weights.sum(dim=-1, keepdim=True), dim=-1)  # [..., B]
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], dim=-1)  # [..., B + 1]
    steps = torch.arange(num_samples, dtype=weights.dtype, device=weights.device)
    if jitter:
        u = steps + torch.rand(*weights.shape[:-1], num_samples, dtype=weights.dtype, device=weights.device)
    else:
        u = (steps + 0.5).expand(*weights.shape[:-1], num_samples)
    u = (u / num_samples).contiguous()
    idx = torch.searchsorted(cdf.detach().contiguous(), u, right=True) - 1  # bin of each quantile
    idx = idx.clamp(0, B - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, idx), cdf.gather(-1, idx + 1)
    edge_lo, edge_hi = edges.gather(-1, idx), edges.gather(-1, idx + 1)
    frac = (u - cdf_lo) / (cdf_hi - cdf_lo).clamp_min(1e-12)
    return edge_lo + frac.clamp(0, 1) * (edge_hi - edge_lo)


def interval_lengths(t: torch.Tensor, last: float | torch.Tensor) -> torch.Tensor:
    """delta_i = t_{i+1} - t_i for sorted depths t [..., S]; the last interval has length `last`."""
    last = torch.as_tensor(last, dtype=t.dtype, device=t.device).expand_as(t[..., :1])
    return torch.cat([t[..., 1:] - t[..., :-1], last], dim=-1)


def merge_samples(t_a, values_a, t_b, values_b):
    """Merge two sample sets of the same rays and sort them by depth.

    t_* [..., S_*], values_* [..., S_*, C] -> (t [..., S_a + S_b], values [..., S_a + S_b, C]).
    """
    t = torch.cat([t_a, t_b], dim=-1)
    values = torch.cat([values_a, values_b], dim=-2)
    t, order = torch.sort(t, dim=-1)
    values = values.gather(-2, order[..., None].expand(*order.shape, values.shape[-1]))
    return t, values


# ----------------------------------------------------------------------------
# The foreground: coarse pass, importance pass, composite.


def _query(field, origins, dirs, t):
    """Evaluate the field at o + t d. origins/dirs [N, R, 3], t [N, R, S] -> [N, R, S, 4] (rgb, sigma)."""
    N, R, S = t.shape
    points = origins[:, :, None] + t[..., None] * dirs[:, :, None]  # [N, R, S, 3]
    rgb, sigma = field(points.reshape(N, R * S, 3))
    return torch.cat([rgb, sigma], dim=-1).reshape(N, R, S, 4)  # [N, R, S, 4]


def march_foreground(field: Callable, origins, dirs, opts: RayMarchOptions):
    """Hierarchical sampling along rays [N, R, 3]: 48 stratified + 48 importance samples, merged.

    -> (t [N, R, S], samples [N, R, S, 4] (rgb, sigma), deltas [N, R, S]) with S = num_coarse + num_fine.
    """
    N, R, _ = origins.shape
    t, edges = stratified_depths((N, R), opts.num_coarse, opts.ray_start, opts.ray_end, opts.jitter, origins)
    samples = _query(field, origins, dirs, t)  # [N, R, Sc, 4]
    if opts.num_fine > 0:
        with torch.no_grad():
            # The coarse weights only say where to look; each coarse sample weighs its own bin.
            bin_width = (edges[1:] - edges[:-1]).expand_as(t)  # [N, R, Sc]
            _, _, _, weights = volume_render.composite(samples[..., :3], samples[..., 3], bin_width, t)
            t_fine = sample_pdf(edges, weights, opts.num_fine, opts.jitter)  # [N, R, Sf]
        fine = _query(field, origins, dirs, t_fine)  # [N, R, Sf, 4]
        t, samples = merge_samples(t, samples, t_fine, fine)
    if opts.last_to_infinity:
        deltas = interval_lengths(t, volume_render.INFINITE_DELTA)
    else:
        deltas = interval_lengths(t, (opts.ray_end - t[..., -1:]).clamp_min(0))
    return t, samples, deltas


# ----------------------------------------------------------------------------
# NeRF++ background: inverse-sphere parametrization outside the sphere of radius `radius`.


def inverse_sphere_samples(origins, dirs, num_samples: int, jitter: bool, radius: float = 1.0):
    """Background samples of NeRF++ on rays [N, R, 3] that start inside the sphere of radius `radius`.

    Inverse distances q = radius / |x| are stratified over (0, 1] (from the sphere out towards infinity);
    each sample is where the ray leaves the sphere of radius radius / q.
    -> (coords [N, R, S, 4] = (x/|x|, q), t [N, R, S] increasing along the ray).
    """
    N, R, _ = origins.shape
    steps = torch.arange(num_samples, dtype=origins.dtype, device=origins.device)
    u = torch.rand(N, R, num_samples, dtype=origins.dtype, device=origins.device) if jitter else 0.5
    q = 1 - (steps + u) / num_samples  # [N, R, S] decreasing in (0, 1]: depth increases along S
    q = torch.as_tensor(q).expand(N, R, num_samples)
    b = (origins * dirs).sum(dim=-1, keepdim=True)  # [N, R, 1]: o . d
    c = (origins * origins).sum(dim=-1, keepdim=True)  # [N, R, 1]: |o|^2
    rho = radius / q  # [N, R, S]
    # |o + t d| = rho  <=>  t^2 + 2 b t + c - rho^2 = 0; the far root is the exit point.
    t = -b + (b * b - c + rho * rho).clamp_min(0).sqrt()  # [N, R, S]
    points = origins[:, :, None] + t[..., None] * dirs[:, :, None]  # [N, R, S, 3]
    unit = points / points.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.cat([unit, q[..., None]], dim=-1), t


# ----------------------------------------------------------------------------
# Rays -> pixels.


def composite_rays(t, samples, deltas, background: str, behind=None):
    """Composite samples [N, R, S, 4] over `behind` = (rgb [N, R, 3], depth_sum [N, R], opacity [N, R]).

    The background colour fills whatever is left transparent. -> (rgb [N, R, 3], depth [N, R], opacity [N, R]).
    """
    rgb, depth_sum, opacity, _ = volume_render.composite(samples[..., :3], samples[..., 3], deltas, t)
    if behind is not None:
        transmittance = (1 - opacity)[..., None]  # [N, R, 1]
        rgb = rgb + transmittance * behind[0]
        depth_sum = depth_sum + transmittance[..., 0] * behind[1]
        opacity = opacity + transmittance[..., 0] * behind[2]
    rgb = rgb + (1 - opacity)[..., None] * BACKGROUND_COLOURS[background]
    depth = depth_sum / opacity.clamp_min(1e-6)  # expected depth of what is visible
    return rgb, depth, opacity


def rays_to_image(rgb, depth, opacity, resolution: int) -> RenderOutput:
    """Per-ray results [N, r*r, ...] in row-major order -> RenderOutput of [N, C, r, r] images."""
    N = rgb.shape[0]
    image = rgb.reshape(N, resolution, resolution, 3).permute(0, 3, 1, 2)  # [N, 3, r, r]
    depth = depth.reshape(N, 1, resolution, resolution)
    opacity = opacity.reshape(N, 1, resolution, resolution)
    return RenderOutput(image.contiguous(), depth, opacity)


def render_rays(
    field,
    origins,
    dirs,
    opts: RayMarchOptions,
    background_field=None,
    num_bg_samples: int = 16,
    bg_radius: float = 1.0,
):
    """Render rays [N, R, 3]: foreground field, then (optionally) the NeRF++ background behind it.

    `background_field(coords [N, P, 4]) -> (rgb [N, P, 3], sigma [N, P, 1])` on inverse-sphere coordinates.
    -> (rgb [N, R, 3], depth [N, R], opacity [N, R]).
    """
    t, samples, deltas = march_foreground(field, origins, dirs, opts)
    behind = None
    if background_field is not None:
        N, R, _ = origins.shape
        coords, t_bg = inverse_sphere_samples(origins, dirs, num_bg_samples, opts.jitter, bg_radius)
        rgb_bg, sigma_bg = background_field(coords.reshape(N, R * num_bg_samples, 4))  # [N, P, 3], [N, P, 1]
        rgb_bg = rgb_bg.reshape(N, R, num_bg_samples, 3)
        sigma_bg = sigma_bg.reshape(N, R, num_bg_samples)
        deltas_bg = interval_lengths(t_bg, volume_render.INFINITE_DELTA)
        rgb_b, depth_b, opacity_b, _ = volume_render.composite(rgb_bg, sigma_bg, deltas_bg, t_bg)
        behind = (rgb_b, depth_b, opacity_b)
    return composite_rays(t, samples, deltas, opts.background, behind)


def render_rays_chunked(ray_chunk: int | None, origins, dirs, **render_kwargs):
    """`render_rays` over chunks of at most `ray_chunk` rays in total (None = all at once).

    Bounds the memory of full-resolution renders; results equal the unchunked ones (up to random jitter).
    """
    N, R, _ = origins.shape
    per_sample = R if ray_chunk is None else max(1, ray_chunk // N)
    if per_sample >= R:
        return render_rays(origins=origins, dirs=dirs, **render_kwargs)
    outputs = [
        render_rays(origins=origins[:, i : i + per_sample], dirs=dirs[:, i : i + per_sample], **render_kwargs)
        for i in range(0, R, per_sample)
    ]
    return tuple(torch.cat(parts, dim=1) for parts in zip(*outputs))
