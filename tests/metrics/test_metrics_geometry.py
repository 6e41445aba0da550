"""3D metrics on analytic scenes: non-flatness, reprojection consistency, Chamfer distance."""

import math

import pytest
import torch

from metrics import geometry_metrics as gm
from training.cameras import angles_to_camera, pixels_to_rays
from training.patches import full_image_patch_params, patch_pixel_centres


def _render_sphere(camera, res=64, radius=0.6, view_dependent=0.0):
    """Ray-cast a textured sphere at the origin: image [N,3,r,r] in [-1,1], ray depth, opacity."""
    N = camera.batch_size
    params = full_image_patch_params(N, dtype=torch.float64, device=camera.cam2world.device)
    uv = patch_pixel_centres(params, res).reshape(N, res * res, 2)  # [N, r, r, 2] -> [N, r*r, 2]
    origins, dirs = pixels_to_rays(uv, camera.to(torch.float64))
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius**2
    disc = b * b - c
    hit = disc > 0
    t = torch.where(hit, -b - disc.clamp_min(0).sqrt(), torch.zeros_like(b))
    points = origins + dirs * t[..., None]
    colour = torch.sin(4 * points + points.new_tensor([0.0, 1.0, 2.0]))  # a smooth texture
    colour = colour + view_dependent * dirs  # a view-dependent term breaks multi-view consistency
    colour = torch.where(hit[..., None], colour.clamp(-1, 1), torch.ones_like(colour))
    as_map = lambda x: x.transpose(1, 2).reshape(N, -1, res, res)  # noqa: E731  # [N, P, C] -> [N, C, r, r]
    return dict(
        image=as_map(colour).float(),
        depth=as_map(t[..., None]).float(),
        opacity=as_map(hit[..., None].double()).float(),
        camera=camera,
    )


def _two_cameras(delta=0.08):
    yaw = torch.tensor([0.3, -0.5])
    cam_a = angles_to_camera(yaw, math.pi / 2 - 0.2, 2.5, 30)
    cam_b = angles_to_camera(yaw + delta, math.pi / 2 - 0.2 + delta / 2, 2.5, 30)
    return cam_a, cam_b


def test_reprojection_error_near_zero_for_analytic_sphere():
    cam_a, cam_b = _two_cameras()
    error, coverage = gm.reprojection_error(_render_sphere(cam_a), _render_sphere(cam_b))
    assert (coverage > 0.25).all()
    assert (error < 0.01).all()
    # Negative control: a view-dependent colour is not consistent across views.
    error_vd, _ = gm.reprojection_error(
        _render_sphere(cam_a, view_dependent=0.5), _render_sphere(cam_b, view_dependent=0.5)
    )
    assert (error_vd > 5 * error).all() and (error_vd > 0.01).all()


def test_reprojection_with_z_depth_matches_ray_depth():
    cam_a, cam_b = _two_cameras()
    va, vb = _render_sphere(cam_a), _render_sphere(cam_b)
    points = gm.lift_to_world(va['depth'], cam_a, 'ray')
    z = ((points - cam_a.cam2world[:, None, :3, 3]) * cam_a.cam2world[:, None, :3, 2]).sum(-1)
    as_z = lambda v, z: dict(v, depth=z.reshape(v['depth'].shape))  # noqa: E731
    points_b = gm.lift_to_world(vb['depth'], cam_b, 'ray')
    z_b = ((points_b - cam_b.cam2world[:, None, :3, 3]) * cam_b.cam2world[:, None, :3, 2]).sum(-1)
    err_ray, cov_ray = gm.reprojection_error(va, vb, depth_kind='ray')
    err_z, cov_z = gm.reprojection_error(as_z(va, z), as_z(vb, z_b), depth_kind='z')
    assert torch.allclose(err_ray, err_z, atol=1e-3) and torch.allclose(cov_ray, cov_z, atol=0.01)
    assert torch.allclose(gm.lift_to_world(z.reshape(va['depth'].shape), cam_a, 'z'), points, atol=1e-4)


def test_reprojection_excludes_occluded_points():
    # Camera B looks from behind: the front of the sphere seen by A is hidden there, so nothing counts.
    cam_a = angles_to_camera(0.0, math.pi / 2, 2.5, 30)
    cam_b = angles_to_camera(math.pi, math.pi / 2, 2.5, 30)
    _, coverage = gm.reprojection_error(_render_sphere(cam_a), _render_sphere(cam_b))
    assert coverage.item() < 0.02


def test_nonflatness_low_for_constant_depth_and_higher_for_varied():
    depth_flat = torch.full((1, 1, 32, 32), 2.5)
    mask = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    value_range = torch.tensor([[1.0, 4.0]])
    flat = gm.depth_histogram_entropy(depth_flat, mask, value_range)
    assert flat.item() == pytest.approx(0.0, abs=1e-12)
    # Depth uniformly spread over the range -> entropy log(num_bins).
    depth_ramp = torch.linspace(1.0, 4.0, 64 * 16).reshape(1, 1, 32, 32).clamp_max(4.0 - 1e-4)
    uniform = gm.depth_histogram_entropy(depth_ramp, mask, value_range, num_bins=64)
    assert uniform.item() == pytest.approx(math.log(64), abs=1e-6)
    sphere = _render_sphere(angles_to_camera(0.0, math.pi / 2, 2.5, 30))
    ent = gm.depth_histogram_entropy(
        sphere['depth'], sphere['opacity'] > 0.5, gm.scene_depth_range(sphere['camera'], 1.0)
    )
    assert 1.0 < ent.item() < math.log(64)
    # Background pixels are ignored; an empty mask scores 0.
    assert gm.depth_histogram_entropy(depth_ramp, ~mask, value_range).item() == 0.0


def _icosphere_like(n=12):
    """A UV sphere mesh (vertices, faces)."""
    theta = torch.linspace(0, math.pi, n)
    phi = torch.linspace(0, 2 * math.pi, 2 * n + 1)[:-1]
    t, p = torch.meshgrid(theta, phi, indexing='ij')
    verts = torch.stack([t.sin() * p.cos(), t.cos(), t.sin() * p.sin()], -1).reshape(-1, 3)
    faces = []
    m = 2 * n
    for i in range(n - 1):
        for j in range(m):
            a, b, c, d = i * m + j, i * m + (j + 1) % m, (i + 1) * m + j, (i + 1) * m + (j + 1) % m
            faces += [[a, c, b], [b, c, d]]
    return verts, torch.tensor(faces)


def test_chamfer_self_distance_is_the_sampling_floor():
    """Independent samples of one mesh: a floor that shrinks as 1/sqrt(points), blind to position and scale."""
    mesh = _icosphere_like()
    floors = [gm.mesh_chamfer_distance(mesh, mesh, num_points=n) for n in (750, 3000)]
    assert 0.02 < floors[1] < 0.045 and floors[1] / floors[0] == pytest.approx(0.5, abs=0.1), floors
    assert gm.mesh_chamfer_distance(mesh, mesh, num_points=3000, seed=5) == pytest.approx(floors[1], rel=0.1)
    moved = (mesh[0] * 3 + torch.tensor([1.0, 2.0, -1.0]), mesh[1])  # normalization removes these
    assert gm.mesh_chamfer_distance(mesh, moved, num_points=3000) == pytest.approx(floors[1], rel=1e-6)
    squashed = (mesh[0] * torch.tensor([1.0, 0.5, 1.0]), mesh[1])
    assert gm.mesh_chamfer_distance(mesh, squashed, num_points=3000) > 2 * floors[1]


def test_chamfer_matches_bruteforce_and_known_offset():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(50, 3, generator=g), torch.rand(70, 3, generator=g)
    naive = (
        sum(min((x - y).norm() for y in b) for x in a) / 50
        + sum(min((x - y).norm() for x in a) for y in b) / 70
    )
    assert gm.chamfer_distance(a, b, batch_size=16) == pytest.approx(naive.item(), rel=1e-6)
    plane = torch.cat([torch.rand(400, 2, generator=g), torch.zeros(400, 1)], 1)
    assert gm.chamfer_distance(plane, plane + torch.tensor([0, 0, 0.25])) == pytest.approx(0.5, rel=1e-9)


def test_surface_samples_lie_on_the_mesh_and_spread_by_area():
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [3, 0, 0], [0, 0, 2]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])  # areas 0.5 (z = 0 plane) and 3 (y = 0 plane)
    pts = gm.sample_surface(verts, faces, 7000, torch.Generator().manual_seed(0))
    on_first = (pts[:, 2].abs() < 1e-12) & (pts[:, 0] + pts[:, 1] <= 1 + 1e-9)
    on_second = (pts[:, 1].abs() < 1e-12) & (pts[:, 0] / 3 + pts[:, 2] / 2 <= 1 + 1e-9)
    assert (on_first | on_second).all()
    assert on_first.double().mean().item() == pytest.approx(0.5 / 3.5, abs=0.015)


def test_lift_to_world_uses_the_patch_pixel_centres():
    """Pixel (i, j) lifts along the ray the generator casts through it (patches.patch_pixel_centres)."""
    camera = angles_to_camera(
        torch.tensor([0.3, -0.4]), torch.tensor([1.4, 1.7]), 2.0, 30.0, dtype=torch.float64
    )
    depth = torch.rand(2, 1, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 1
    points = gm.lift_to_world(depth, camera)
    for i, j in ((0, 0), (1, 3), (4, 2)):
        u, v = (j + 0.5) / 5, (i + 0.5) / 5  # the known answer for the full image
        origins, dirs = pixels_to_rays(torch.tensor([[[u, v]]] * 2, dtype=torch.float64), camera)
        expected = origins[:, 0] + dirs[:, 0] * depth[:, 0, i, j, None]
        assert torch.allclose(points[:, i * 5 + j], expected, atol=1e-12)
    with pytest.raises(ValueError, match='square'):
        gm.lift_to_world(torch.ones(1, 1, 4, 6), camera.select(0))
