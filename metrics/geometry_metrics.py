"""3D metrics: non-flatness of depth maps, multi-view reprojection consistency, Chamfer distance.

- Non-flatness: the entropy of the histogram of a sample's foreground depth values over a fixed depth
  range. A flat "billboard" puts all its depth in a few bins (entropy near 0); a solid object spreads it.
- Reprojection consistency: lift every foreground pixel of view A to 3D with A's rendered depth, project it
  into a nearby view B, and compare colours where B sees the same surface (its own depth agrees, so
  occluded points are left out). A pure NeRF renders one radiance field, so the error is near 0.
- Chamfer distance between point sets sampled from two surfaces, after normalizing both to a unit box.
"""

import math

import torch
import torch.nn.functional as F

from torch_utils import misc
from training.cameras import Camera, pixels_to_rays, world_to_pixels
from training.patches import full_image_patch_params, patch_pixel_centres

# ----------------------------------------------------------------------------
# Non-flatness.


def depth_histogram_entropy(
    depth: torch.Tensor, mask: torch.Tensor, value_range: torch.Tensor, num_bins: int = 64
) -> torch.Tensor:
    """Entropy (nats) of each sample's foreground depth histogram.

    depth, mask: [N, 1, H, W] (mask is boolean); value_range: [N, 2] (near, far) per sample. Returns [N];
    a sample with no foreground pixel has entropy 0.
    """
    misc.assert_shape(depth, [None, 1, None, None])
    misc.assert_shape(mask, list(depth.shape))
    N = depth.shape[0]
    misc.assert_shape(value_range, [N, 2])
    near, far = value_range[:, :1], value_range[:, 1:]
    t = (depth.flatten(1) - near) / (far - near).clamp_min(1e-8)  # [N, H*W] in [0, 1] inside the range
    bins = (t.clamp(0, 1) * num_bins).long().clamp_max(num_bins - 1)
    counts = torch.zeros(N, num_bins, dtype=torch.float64, device=depth.device)
    counts.scatter_add_(1, bins, mask.flatten(1).to(torch.float64))
    p = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    return -(p * p.clamp_min(1e-300).log()).sum(dim=1)


def scene_depth_range(camera: Camera, scene_bounds: float) -> torch.Tensor:
    """Depth range [N, 2] that any point of the cube [-b, b]^3 can have from each camera (centre +- b sqrt 3)."""
    radius = camera.cam2world[:, :3, 3].norm(dim=-1)
    half = scene_bounds * math.sqrt(3)
    return torch.stack([(radius - half).clamp_min(0), radius + half], dim=1)


# ----------------------------------------------------------------------------
# Multi-view reprojection consistency.


def lift_to_world(depth: torch.Tensor, camera: Camera, depth_kind: str = 'ray') -> torch.Tensor:
    """World points [N, H*W, 3] of every pixel of depth maps [N, 1, H, W] ('ray' distance or camera 'z')."""
    N, _, H, W = depth.shape
    if H != W:
        raise ValueError(f'lift_to_world: depth maps must be square (full renders), got {H}x{W}')
    params = full_image_patch_params(N, device=depth.device, dtype=depth.dtype)
    uv = patch_pixel_centres(params, H).reshape(N, H * W, 2)  # [N, H, W, 2] -> [N, H*W, 2], row-major
    origins, dirs = pixels_to_rays(uv, camera)
    t = depth.reshape(N, H * W, 1)
    if depth_kind == 'z':
        forward = camera.cam2world[:, None, :3, 2]
        t = t / (dirs * forward).sum(dim=-1, keepdim=True)
    elif depth_kind != 'ray':
        raise ValueError(f'unknown depth_kind "{depth_kind}"; use "ray" (distance along the ray) or "z"')
    return origins + dirs * t


def _sample(maps: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of maps [N, C, H, W] at normalized uv [N, P, 2] -> [N, P, C]."""
    grid = (uv * 2 - 1)[:, :, None]  # [N, P, 1, 2]
    return F.grid_sample(maps, grid, mode='bilinear', padding_mode='border', align_corners=False)[
        ..., 0
    ].transpose(1, 2)


def reprojection_error(
    view_a: dict,
    view_b: dict,
    depth_kind: str = 'ray',
    opacity_threshold: float = 0.5,
    depth_tolerance: float = 0.02,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean |colour_A - colour_B(reprojected)| per sample, colours scaled to [0, 1].

    Each view is dict(image [N,3,H,W] in [-1,1], depth [N,1,H,W], opacity [N,1,H,W], camera). A pixel
    counts if it is foreground in A, lands inside B, is foreground in B, and B's depth there agrees with
    the point's depth from B within `depth_tolerance` (relative): otherwise B sees another surface.
    Returns (error [N], fraction of A's pixels that counted [N]).
    """
    image_a, depth_a = view_a['image'], view_a['depth']
    N, _, H, W = image_a.shape
    for view in (view_a, view_b):
        misc.assert_shape(view['image'], [N, 3, H, W])
        misc.assert_shape(view['depth'], [N, 1, H, W])
        misc.assert_shape(view['opacity'], [N, 1, H, W])
    points = lift_to_world(depth_a, view_a['camera'], depth_kind)  # [N, H*W, 3]
    uv_b, z_b = world_to_pixels(points, view_b['camera'])
    expected = (
        z_b if depth_kind == 'z' else (points - view_b['camera'].cam2world[:, None, :3, 3]).norm(dim=-1)
    )
    looked_up = _sample(torch.cat([view_b['image'], view_b['depth'], view_b['opacity']], dim=1), uv_b)
    colour_b, depth_b, opacity_b = looked_up[..., :3], looked_up[..., 3], looked_up[..., 4]
    inside = (uv_b >= 0).all(dim=-1) & (uv_b <= 1).all(dim=-1) & (z_b > 0)
    valid = (view_a['opacity'].reshape(N, H * W) > opacity_threshold) & inside
    valid &= (opacity_b > opacity_threshold) & (
        (depth_b - expected).abs() <= depth_tolerance * expected.abs()
    )
    colour_a = image_a.reshape(N, 3, H * W).transpose(1, 2)  # [N, H*W, 3]
    per_pixel = (colour_a - colour_b).abs().mean(dim=-1) / 2  # [-1, 1] -> [0, 1] units
    count = valid.sum(dim=1)
    error = (per_pixel * valid).sum(dim=1) / count.clamp_min(1)
    return error, count / (H * W)


# ----------------------------------------------------------------------------
# Chamfer distance.


def chamfer_distance(a: torch.Tensor, b: torch.Tensor, batch_size: int = 4096) -> float:
    """Symmetric Chamfer distance: mean_a min_b |a - b| + mean_b min_a |a - b| for points [P, 3], [Q, 3]."""
    misc.assert_shape(a, [None, 3])
    misc.assert_shape(b, [None, 3])

    def one_way(src, dst):
        nearest = [
            torch.cdist(
                src[i : i + batch_size].double(), dst.double(), compute_mode='donot_use_mm_for_euclid_dist'
            )
            .min(dim=1)
            .values
            for i in range(0, src.shape[0], batch_size)
        ]
        return torch.cat(nearest).mean().item()

    return one_way(a, b) + one_way(b, a)


def sample_surface(
    vertices: torch.Tensor, faces: torch.Tensor, num_points: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Points [num_points, 3] uniformly distributed over a triangle mesh's area."""
    misc.assert_shape(vertices, [None, 3])
    misc.assert_shape(faces, [None, 3])
    tri = vertices.double()[faces.long()]  # [F, 3 corners, 3]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1)
    if not (area.sum() > 0):
        raise ValueError('the mesh has no surface area (no faces, or all faces degenerate)')
    idx = torch.multinomial(area / area.sum(), num_points, replacement=True, generator=generator)
    r1, r2 = torch.rand(2, num_points, 1, dtype=torch.float64, generator=generator)
    s = r1.sqrt()  # uniform barycentric coordinates: (1 - s, s (1 - r2), s r2)
    t = tri[idx]
    return (1 - s) * t[:, 0] + s * (1 - r2) * t[:, 1] + s * r2 * t[:, 2]


def normalize_to_unit_box(points: torch.Tensor) -> torch.Tensor:
    """Centre the bounding box at the origin and scale its longest side to 1. [P, 3] -> [P, 3]"""
    lo, hi = points.min(dim=0).values, points.max(dim=0).values
    return (points - (lo + hi) / 2) / (hi - lo).max().clamp_min(1e-12)


def mesh_chamfer_distance(mesh_a, mesh_b, num_points: int = 30_000, normalize: bool = True, seed: int = 0):
    """Chamfer distance between two meshes given as (vertices [V, 3], faces [F, 3]) pairs.

    The two meshes are sampled independently (seeds `seed` and `seed + 1`): the distance of a mesh to itself
    is then the estimate's sampling floor (about 0.03 at 3k and 0.01 at 30k points on a unit-box sphere),
    not a misleading 0.
    """
    points = []
    for k, (vertices, faces) in enumerate((mesh_a, mesh_b)):
        generator = torch.Generator().manual_seed(seed + k)
        p = sample_surface(torch.as_tensor(vertices), torch.as_tensor(faces), num_points, generator)
        points.append(normalize_to_unit_box(p) if normalize else p)
    return chamfer_distance(*points)
