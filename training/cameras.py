"""Cameras: (cam2world, intrinsics) pairs, look-at poses from angles, projections and trajectories.

Conventions (docs/conventions.md has the sketch):
- World: right-handed, +y up. The canonical front camera sits on the +z axis and looks at the origin.
- Camera frame: OpenCV — x right, y down, z forward (the viewing direction). `cam2world` maps camera
  coordinates to world coordinates; its columns are (right, down, forward, position).
- Intrinsics are normalized by the image size: pixel (u, v) in [0, 1]^2, u along the width (left to
  right), v along the height (top to bottom); a centred camera has cx = cy = 0.5 and
  fx = fy = 1 / (2 tan(fov / 2)).
- Angles: yaw is the azimuth about +y, 0 at the front (+z), positive towards +x; pitch is the polar
  angle from +y, pi/2 on the equator, 0 above the object. Radians unless a name says `_deg`.
"""

import math
from typing import NamedTuple

import torch

EPS = 1e-8


class Camera(NamedTuple):
    """A batch of pinhole cameras."""

    cam2world: torch.Tensor  # [N, 4, 4] OpenCV cam2world
    intrinsics: torch.Tensor  # [N, 3, 3] normalized intrinsics

    def to(self, *args, **kwargs) -> 'Camera':
        return Camera(self.cam2world.to(*args, **kwargs), self.intrinsics.to(*args, **kwargs))

    def select(self, idx) -> 'Camera':
        """The cameras at `idx` (an int keeps the batch dimension)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Camera(self.cam2world[idx], self.intrinsics[idx])

    @property
    def batch_size(self) -> int:
        return self.cam2world.shape[0]

    def to_label(self) -> torch.Tensor:
        """The 25-float label: flattened cam2world (16) then flattened intrinsics (9). [N, 25]"""
        return torch.cat([self.cam2world.flatten(1), self.intrinsics.flatten(1)], dim=1)

    @staticmethod
    def from_label(label: torch.Tensor) -> 'Camera':
        assert label.ndim == 2 and label.shape[1] == 25, f'expected a [N, 25] label, got {list(label.shape)}'
        return Camera(label[:, :16].reshape(-1, 4, 4), label[:, 16:].reshape(-1, 3, 3))

    @staticmethod
    def cat(cameras: list['Camera']) -> 'Camera':
        return Camera(torch.cat([c.cam2world for c in cameras]), torch.cat([c.intrinsics for c in cameras]))


def fov_to_intrinsics(fov_deg, batch_size: int = 1, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalized intrinsics of a centred square pinhole camera with full field of view `fov_deg`. [N, 3, 3]"""
    fov = torch.as_tensor(fov_deg, dtype=dtype, device=device).reshape(-1) * (math.pi / 180)
    focal = 0.5 / torch.tan(fov / 2)
    K = torch.zeros(max(batch_size, fov.numel()), 3, 3, dtype=dtype, device=device)
    K[:, 0, 0] = focal
    K[:, 1, 1] = focal
    K[:, 0, 2] = 0.5
    K[:, 1, 2] = 0.5
    K[:, 2, 2] = 1
    return K


def intrinsics_to_fov_deg(intrinsics: torch.Tensor) -> torch.Tensor:
    """Vertical field of view in degrees of normalized intrinsics. [N]"""
    return 2 * torch.atan(0.5 / intrinsics[:, 1, 1]) * (180 / math.pi)


def angles_to_position(yaw: torch.Tensor, pitch: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Camera centre on a sphere around the origin. [N, 3]"""
    return torch.stack(
        [
            radius * torch.sin(pitch) * torch.sin(yaw),
            radius * torch.cos(pitch),
            radius * torch.sin(pitch) * torch.cos(yaw),
        ],
        dim=-1,
    )


def look_at(
    position: torch.Tensor, target: torch.Tensor | None = None, up: torch.Tensor | None = None
) -> torch.Tensor:
    """OpenCV cam2world of cameras at `position` [N, 3] looking at `target` (default origin). [N, 4, 4]

    Near the poles, where forward is parallel to up, the world z axis stands in for up so the frame stays defined.
    """
    N = position.shape[0]
    target = torch.zeros_like(position) if target is None else target.expand_as(position)
    up = position.new_tensor([0.0, 1.0, 0.0]).expand(N, 3) if up is None else up.expand(N, 3)
    forward = torch.nn.functional.normalize(target - position, dim=-1)
    right = torch.linalg.cross(forward, up, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    alt_up = position.new_tensor([0.0, 0.0, -1.0]).expand(N, 3)
    right = torch.where(degenerate, torch.linalg.cross(forward, alt_up, dim=-1), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    down = torch.linalg.cross(forward, right, dim=-1)  # z x x = y keeps the frame right-handed
    cam2world = torch.eye(4, dtype=position.dtype, device=position.device).repeat(N, 1, 1)
    cam2world[:, :3, 0] = right
    cam2world[:, :3, 1] = down
    cam2world[:, :3, 2] = forward
    cam2world[:, :3, 3] = position
    return cam2world


def angles_to_camera(yaw, pitch, radius, fov_deg, device=None, dtype=torch.float32) -> Camera:
    """Look-at cameras on a sphere around the origin from yaw/pitch (radians), radius and fov (degrees)."""
    yaw = torch.as_tensor(yaw, dtype=dtype, device=device).reshape(-1)
    pitch = torch.as_tensor(pitch, dtype=dtype, device=device).reshape(-1)
    radius = torch.as_tensor(radius, dtype=dtype, device=device).reshape(-1)
    N = max(yaw.numel(), pitch.numel(), radius.numel())
    yaw, pitch, radius = (t.expand(N) for t in (yaw, pitch, radius))
    cam2world = look_at(angles_to_position(yaw, pitch, radius))
    return Camera(
        cam2world, fov_to_intrinsics(fov_deg, N, device=device, dtype=dtype).expand(N, 3, 3).clone()
    )


def camera_to_angles(cam2world: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(yaw, pitch, radius) of the camera centres, measured about the origin. Each [N]."""
    position = cam2world[:, :3, 3]
    radius = position.norm(dim=-1)
    pitch = torch.acos((position[:, 1] / radius.clamp_min(EPS)).clamp(-1, 1))
    yaw = torch.atan2(position[:, 0], position[:, 2])
    return yaw, pitch, radius


def mirror_camera(camera: Camera) -> Camera:
    """The camera that sees the x-flipped image of the x-mirrored world (yaw -> -yaw).

    World reflection F = diag(-1, 1, 1) on the left, image flip (camera x -> -x) on the right, so the
    result is again a proper rotation; the principal point moves to 1 - cx.
    """
    flip = torch.diag(camera.cam2world.new_tensor([-1.0, 1.0, 1.0, 1.0]))
    cam2world = flip @ camera.cam2world @ flip
    intrinsics = camera.intrinsics.clone()
    intrinsics[:, 0, 2] = 1 - intrinsics[:, 0, 2]
    return Camera(cam2world, intrinsics)


def world_to_pixels(points: torch.Tensor, camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """Project world points [N, P, 3] to normalized pixels [N, P, 2] and camera depth z [N, P]."""
    rotation = camera.cam2world[:, :3, :3]
    origin = camera.cam2world[:, :3, 3]
    cam_points = torch.einsum('nji,npj->npi', rotation, points - origin[:, None])  # R^T (X - t)
    z = cam_points[..., 2]
    uv1 = torch.einsum('nij,npj->npi', camera.intrinsics, cam_points / z[..., None].clamp_min(EPS))
    return uv1[..., :2], z


def pixels_to_rays(uv: torch.Tensor, camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through normalized pixels uv [N, P, 2]: origins [N, P, 3] and unit directions [N, P, 3]."""
    N, P, _ = uv.shape
    K = camera.intrinsics
    x = (uv[..., 0] - K[:, None, 0, 2]) / K[:, None, 0, 0]
    y = (uv[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1]
    dirs_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [N, P, 3]
    dirs = torch.einsum('nij,npj->npi', camera.cam2world[:, :3, :3], dirs_cam)
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    origins = camera.cam2world[:, None, :3, 3].expand(N, P, 3)
    return origins, dirs


# ----------------------------------------------------------------------------
# Trajectories: (yaw, pitch) sequences of `num_frames` for videos. Each returns two [num_frames] tensors.


def orbit_trajectory(num_frames: int, pitch: float = math.pi / 2, yaw_start: float = 0.0):
    """A full 360-degree turn in yaw at fixed pitch; the last frame stops one step short of the first."""
    yaw = yaw_start + torch.arange(num_frames, dtype=torch.float64) * (2 * math.pi / num_frames)
    return yaw, torch.full_like(yaw, pitch)


def front_circle_trajectory(
    num_frames: int, yaw_amp: float = 0.3, pitch_amp: float = 0.15, pitch: float = math.pi / 2
):
    """A small circle around the frontal view (the usual face-GAN video)."""
    t = torch.arange(num_frames, dtype=torch.float64) * (2 * math.pi / num_frames)
    return yaw_amp * torch.sin(t), pitch + pitch_amp * torch.cos(t)


def wiggle_trajectory(num_frames: int, yaw_amp: float = 0.5, pitch: float = math.pi / 2):
    """Yaw swings left and right once (sinusoidally) at fixed pitch."""
    t = torch.arange(num_frames, dtype=torch.float64) * (2 * math.pi / num_frames)
    return yaw_amp * torch.sin(t), torch.full_like(t, pitch)


def line_trajectory(num_frames: int, yaw_amp: float = 0.5, pitch: float = math.pi / 2):
    """Yaw moves linearly from -yaw_amp to +yaw_amp at fixed pitch."""
    yaw = torch.linspace(-yaw_amp, yaw_amp, num_frames, dtype=torch.float64)
    return yaw, torch.full_like(yaw, pitch)


TRAJECTORIES = dict(
    orbit=orbit_trajectory,
    front_circle=front_circle_trajectory,
    wiggle=wiggle_trajectory,
    line=line_trajectory,
)


# ----------------------------------------------------------------------------
# Camera priors: the distributions G's cameras are drawn from during training (paper Table 4).
# Each `sample(batch_size, device, generator)` draws on the generator's device (CPU by default, so a
# seeded CPU generator gives the same cameras whatever `device` is) and returns a Camera on `device`.


class CameraPrior:
    """Base class: look-at cameras at `radius` with field of view `fov` (degrees) from sampled angles."""

    def __init__(self, radius: float = 1.0, fov: float = 12.0):
        if not radius > 0 or not 0 < fov < 180:
            raise ValueError(f'camera prior: need radius > 0 and 0 < fov < 180 degrees, got {radius}, {fov}')
        self.radius = float(radius)
        self.fov = float(fov)

    def sample_angles(self, batch_size: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(yaw, pitch) in radians, each [batch_size] float64."""
        raise NotImplementedError(f'{type(self).__name__} must implement sample_angles')

    def sample(self, batch_size: int, device='cpu', generator=None) -> Camera:
        yaw, pitch = self.sample_angles(batch_size, generator)
        cam = angles_to_camera(yaw, pitch, self.radius, self.fov, dtype=torch.float64)
        return cam.to(device=device, dtype=torch.float32)

    def describe(self) -> dict:
        return dict(
            kind=type(self).__name__, **{k: v for k, v in vars(self).items() if not k.startswith('_')}
        )


def _rand_device(generator) -> torch.device:
    return generator.device if generator is not None else torch.device('cpu')


class NormalCameraPrior(CameraPrior):
    """yaw ~ N(yaw_mean, yaw_std), pitch ~ N(pitch_mean, pitch_std) (FFHQ: 0, 0.3, pi/2, 0.2; Cats: yaw_std 0.2)."""

    def __init__(
        self, yaw_mean=0.0, yaw_std=0.3, pitch_mean=math.pi / 2, pitch_std=0.2, radius=1.0, fov=12.0
    ):
        super().__init__(radius, fov)
        if yaw_std < 0 or pitch_std < 0:
            raise ValueError(f'camera prior: standard deviations must be >= 0, got {yaw_std}, {pitch_std}')
        self.yaw_mean, self.yaw_std = float(yaw_mean), float(yaw_std)
        self.pitch_mean, self.pitch_std = float(pitch_mean), float(pitch_std)

    def sample_angles(self, batch_size, generator=None):
        noise = torch.randn(
            2, batch_size, generator=generator, device=_rand_device(generator), dtype=torch.float64
        )
        yaw = self.yaw_mean + self.yaw_std * noise[0]
        pitch = (self.pitch_mean + self.pitch_std * noise[1]).clamp(1e-5, math.pi - 1e-5)
        return yaw.cpu(), pitch.cpu()


class UniformSphereCameraPrior(CameraPrior):
    """Uniform by area on the sphere band USphere (paper Table 4): yaw in yaw_mean +- yaw_range, pitch in
    pitch_mean +- pitch_range. The defaults (0, pi, pi/2, pi/2) cover the whole sphere, below included
    (Megascans)."""

    def __init__(
        self,
        yaw_mean=0.0,
        yaw_range=math.pi,
        pitch_mean=math.pi / 2,
        pitch_range=math.pi / 2,
        radius=1.0,
        fov=30.0,
    ):
        super().__init__(radius, fov)
        lo, hi = pitch_mean - pitch_range, pitch_mean + pitch_range
        if yaw_range < 0 or pitch_range < 0 or lo < -1e-9 or hi > math.pi + 1e-9:
            raise ValueError(
                f'camera prior: pitch band [{lo:.4f}, {hi:.4f}] must lie in [0, pi] and ranges must be >= 0'
            )
        self.yaw_mean, self.yaw_range = float(yaw_mean), float(yaw_range)
        self.pitch_mean, self.pitch_range = float(pitch_mean), float(pitch_range)

    def sample_angles(self, batch_size, generator=None):
        u = torch.rand(
            2, batch_size, generator=generator, device=_rand_device(generator), dtype=torch.float64
        )
        yaw = self.yaw_mean + self.yaw_range * (2 * u[0] - 1)
        lo = max(self.pitch_mean - self.pitch_range, 0.0)
        hi = min(self.pitch_mean + self.pitch_range, math.pi)
        cos_pitch = (
            math.cos(lo) + (math.cos(hi) - math.cos(lo)) * u[1]
        )  # uniform in cos(pitch) = uniform area
        return yaw.cpu(), torch.acos(cos_pitch.clamp(-1, 1)).cpu()


class DatasetCameraPrior(CameraPrior):
    """The dataset's own cameras, drawn uniformly with replacement (mirrored copies included).

    `radius` (optional) moves each camera along the ray from the origin to that distance, which is the
    same picture of the world scaled about the origin; `fov` (optional) replaces the intrinsics with a
    centred camera of that field of view. Both None: the exact dataset cameras.
    """

    def __init__(self, cameras: Camera, radius=None, fov=None):
        if cameras.batch_size == 0:
            raise ValueError('camera prior: the dataset has no cameras to sample from')
        self._cameras = cameras.to(device='cpu', dtype=torch.float64)
        self.radius = None if radius is None else float(radius)
        self.fov = None if fov is None else float(fov)
        self.num_cameras = cameras.batch_size

    def sample(self, batch_size, device='cpu', generator=None):
        idx = torch.randint(
            self.num_cameras, [batch_size], generator=generator, device=_rand_device(generator)
        )
        cam = self._cameras.select(idx.cpu())
        cam2world, intrinsics = cam.cam2world.clone(), cam.intrinsics.clone()
        if self.radius is not None:
            position = cam2world[:, :3, 3]
            cam2world[:, :3, 3] = position * (
                self.radius / position.norm(dim=-1, keepdim=True).clamp_min(EPS)
            )
        if self.fov is not None:
            intrinsics = fov_to_intrinsics(self.fov, batch_size, dtype=torch.float64)
        return Camera(cam2world, intrinsics).to(device=device, dtype=torch.float32)


CAMERA_PRIORS = dict(
    normal=NormalCameraPrior, uniform_sphere=UniformSphereCameraPrior, dataset=DatasetCameraPrior
)


def make_camera_prior(kind: str, dataset=None, **numbers) -> CameraPrior:
    """A camera prior by name: 'normal', 'uniform_sphere' or 'dataset' (needs `dataset`: an object with
    `.cameras()`, or a Camera). `numbers` are the prior's keyword arguments (radius, fov, ...)."""
    if kind not in CAMERA_PRIORS:
        raise ValueError(f'unknown camera prior {kind!r}; choose one of {sorted(CAMERA_PRIORS)}')
    import inspect  # local: keeps this appended section self-contained

    cls = CAMERA_PRIORS[kind]
    allowed = set(inspect.signature(cls.__init__).parameters) - {'self', 'cameras'}
    unknown = sorted(set(numbers) - allowed)
    if unknown:
        raise ValueError(f'camera prior {kind!r}: unknown option(s) {unknown}; allowed: {sorted(allowed)}')
    if kind == 'dataset':
        if dataset is None:
            raise ValueError("camera prior 'dataset' needs the dataset to draw its cameras from")
        cams = dataset if isinstance(dataset, Camera) else dataset.cameras()
        return cls(cams, **numbers)
    return cls(**numbers)
