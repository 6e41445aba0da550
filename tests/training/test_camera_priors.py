"""Camera priors: distributions match their parameters, cameras look at the origin, seeding is exact."""

import math

import pytest
import torch

from training import cameras


def _angles(cam):
    yaw, pitch, radius = cameras.camera_to_angles(cam.cam2world.double())
    return yaw, pitch, radius


def test_normal_prior_moments_and_geometry():
    prior = cameras.make_camera_prior('normal', yaw_std=0.3, pitch_std=0.2, radius=1.0, fov=12.0)
    cam = prior.sample(20000, generator=torch.Generator().manual_seed(0))
    assert cam.cam2world.dtype == torch.float32 and cam.cam2world.shape == (20000, 4, 4)
    yaw, pitch, radius = _angles(cam)
    assert abs(yaw.mean()) < 0.01 and abs(yaw.std() - 0.3) < 0.01
    assert abs(pitch.mean() - math.pi / 2) < 0.01 and abs(pitch.std() - 0.2) < 0.01
    assert torch.allclose(radius, torch.ones_like(radius), atol=1e-5)
    uv, _ = cameras.world_to_pixels(torch.zeros(20000, 1, 3), cam)
    assert torch.allclose(uv, torch.full_like(uv, 0.5), atol=1e-4)  # every camera looks at the origin
    assert torch.allclose(
        cameras.intrinsics_to_fov_deg(cam.intrinsics), torch.full((20000,), 12.0), atol=1e-3
    )


def test_uniform_sphere_is_uniform_by_area_including_below():
    prior = cameras.make_camera_prior('uniform_sphere', radius=3.5, fov=45.0)
    cam = prior.sample(40000, generator=torch.Generator().manual_seed(1))
    pos = cam.cam2world[:, :3, 3].double() / 3.5
    # Uniform on the sphere: each coordinate is uniform on [-1, 1] (Archimedes), mean 0, variance 1/3.
    for axis in range(3):
        assert abs(pos[:, axis].mean()) < 0.015 and abs(pos[:, axis].var() - 1 / 3) < 0.01
    assert (pos[:, 1] < -0.9).any() and (pos[:, 1] > 0.9).any()
    frac_below = (pos[:, 1] < 0).double().mean()
    assert abs(frac_below - 0.5) < 0.01


def test_uniform_band_respects_pitch_interval():
    prior = cameras.make_camera_prior(
        'uniform_sphere', pitch_mean=math.pi / 4, pitch_range=math.pi / 4, radius=1.0, fov=30
    )
    _, pitch, _ = _angles(prior.sample(5000, generator=torch.Generator().manual_seed(2)))
    assert pitch.min() >= -1e-6 and pitch.max() <= math.pi / 2 + 1e-4
    with pytest.raises(ValueError, match='pitch band'):
        cameras.make_camera_prior('uniform_sphere', pitch_mean=0.5, pitch_range=1.0)


def test_dataset_prior_draws_dataset_cameras_and_rescales():
    data = cameras.angles_to_camera(torch.tensor([0.1, -0.7, 2.0]), torch.tensor([1.0, 1.4, 2.2]), 3.5, 45.0)
    exact = cameras.make_camera_prior('dataset', dataset=data).sample(
        50, generator=torch.Generator().manual_seed(3)
    )
    labels = data.to_label()
    match = (exact.to_label()[:, None] - labels[None]).abs().amax(-1) < 1e-6  # [50, 3]
    assert match.any(1).all() and match.any(0).all()
    scaled = cameras.make_camera_prior('dataset', dataset=data, radius=1.0, fov=30.0).sample(10)
    yaw, pitch, radius = _angles(scaled)
    assert torch.allclose(radius, torch.ones(10, dtype=torch.float64), atol=1e-5)
    uv, _ = cameras.world_to_pixels(torch.zeros(10, 1, 3), scaled)
    assert torch.allclose(uv, torch.full_like(uv, 0.5), atol=1e-5)
    assert torch.allclose(
        cameras.intrinsics_to_fov_deg(scaled.intrinsics), torch.full((10,), 30.0), atol=1e-3
    )


def test_seeded_sampling_is_reproducible_and_device_independent():
    prior = cameras.make_camera_prior('normal')
    a = prior.sample(4, generator=torch.Generator().manual_seed(7))
    b = prior.sample(4, device='cpu', generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.cam2world, b.cam2world) and torch.equal(a.intrinsics, b.intrinsics)


def test_make_camera_prior_errors():
    with pytest.raises(ValueError, match='unknown camera prior'):
        cameras.make_camera_prior('gaussian')
    with pytest.raises(ValueError, match='yaw_sdt'):
        cameras.make_camera_prior('normal', yaw_sdt=0.1)
    with pytest.raises(ValueError, match='needs the dataset'):
        cameras.make_camera_prior('dataset')
