import math

import torch

from training import cameras


def test_front_camera_looks_at_origin_with_opencv_axes():
    cam = cameras.angles_to_camera(0.0, math.pi / 2, 3.0, 45.0)
    c2w = cam.cam2world[0]
    assert torch.allclose(c2w[:3, 3], torch.tensor([0.0, 0.0, 3.0]), atol=1e-6)
    assert torch.allclose(c2w[:3, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)  # camera x = world +x
    assert torch.allclose(c2w[:3, 1], torch.tensor([0.0, -1.0, 0.0]), atol=1e-6)  # camera y (down) = world -y
    assert torch.allclose(c2w[:3, 2], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)  # looks towards the origin


def test_origin_projects_to_image_centre_and_up_is_up():
    yaw = torch.tensor([0.0, 1.0, -2.0, 3.0])
    pitch = torch.tensor([1.5, 0.3, 2.8, 1.0])
    cam = cameras.angles_to_camera(yaw, pitch, 2.5, 30.0)
    uv, z = cameras.world_to_pixels(torch.zeros(4, 1, 3), cam)
    assert torch.allclose(uv, torch.full_like(uv, 0.5), atol=1e-6)
    assert torch.allclose(z, torch.full_like(z, 2.5), atol=1e-6)
    front = cameras.angles_to_camera(0.0, math.pi / 2, 2.5, 30.0)
    uv_up, _ = cameras.world_to_pixels(torch.tensor([[[0.0, 0.5, 0.0], [0.5, 0.0, 0.0]]]), front)
    assert uv_up[0, 0, 1] < 0.5  # +y is up: above the centre in the image (v grows downwards)
    assert uv_up[0, 1, 0] > 0.5  # +x is to the right in the front view


def test_rotation_is_proper_everywhere_including_poles():
    pitch = torch.tensor([0.0, 1e-7, 0.7, math.pi / 2, math.pi - 1e-7, math.pi])
    cam = cameras.angles_to_camera(torch.zeros(6), pitch, 1.0, 30.0)
    R = cam.cam2world[:, :3, :3]
    eye = torch.eye(3).expand(6, 3, 3)
    assert torch.allclose(R.transpose(1, 2) @ R, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(6), atol=1e-5)


def test_angles_round_trip():
    yaw = torch.linspace(-3.0, 3.0, 7)
    pitch = torch.linspace(0.2, 2.9, 7)
    radius = torch.linspace(1.0, 4.0, 7)
    cam = cameras.angles_to_camera(yaw, pitch, radius, 18.0)
    y2, p2, r2 = cameras.camera_to_angles(cam.cam2world)
    assert torch.allclose(y2, yaw, atol=1e-5) and torch.allclose(p2, pitch, atol=1e-5)
    assert torch.allclose(r2, radius, atol=1e-5)
    assert torch.allclose(cameras.intrinsics_to_fov_deg(cam.intrinsics), torch.full((7,), 18.0), atol=1e-4)


def test_pixels_to_rays_inverts_projection():
    cam = cameras.angles_to_camera(torch.tensor([0.4, -1.2]), torch.tensor([1.2, 2.0]), 3.0, 40.0)
    uv = torch.rand(2, 10, 2)
    origins, dirs = cameras.pixels_to_rays(uv, cam)
    points = origins + 2.0 * dirs
    uv2, _ = cameras.world_to_pixels(points, cam)
    assert torch.allclose(uv, uv2, atol=1e-5)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(2, 10), atol=1e-6)


def test_mirror_flips_yaw_and_image_x():
    cam = cameras.angles_to_camera(torch.tensor([0.7]), torch.tensor([1.1]), 2.0, 30.0)
    mirrored = cameras.mirror_camera(cam)
    yaw, pitch, radius = cameras.camera_to_angles(mirrored.cam2world)
    assert torch.allclose(yaw, torch.tensor([-0.7]), atol=1e-6) and torch.allclose(
        pitch, torch.tensor([1.1]), atol=1e-6
    )
    assert torch.allclose(torch.linalg.det(mirrored.cam2world[:, :3, :3]), torch.ones(1), atol=1e-6)
    point = torch.tensor([[[0.3, -0.2, 0.4]]])
    reflected = point * torch.tensor([-1.0, 1.0, 1.0])
    uv, _ = cameras.world_to_pixels(point, cam)
    uv_m, _ = cameras.world_to_pixels(reflected, mirrored)
    assert torch.allclose(uv_m[..., 0], 1 - uv[..., 0], atol=1e-6)  # x-flipped image
    assert torch.allclose(uv_m[..., 1], uv[..., 1], atol=1e-6)


def test_label_round_trip():
    cam = cameras.angles_to_camera(torch.tensor([0.1, 0.2]), torch.tensor([1.0, 1.5]), 1.0, 12.0)
    label = cam.to_label()
    assert label.shape == (2, 25)
    back = cameras.Camera.from_label(label)
    assert torch.equal(back.cam2world, cam.cam2world) and torch.equal(back.intrinsics, cam.intrinsics)


def test_trajectories_have_requested_length():
    for name, fn in cameras.TRAJECTORIES.items():
        yaw, pitch = fn(12)
        assert yaw.shape == (12,) and pitch.shape == (12,), name
    yaw, _ = cameras.orbit_trajectory(8)
    assert math.isclose(float(yaw[-1] - yaw[0]), 2 * math.pi * 7 / 8, rel_tol=1e-9)
