"""Generator-facing steps of gen_samples.py (snapshots load through checkpoint.load_network): resolve
cameras, map seeds to w, synthesise tri-planes once per latent and render them from any camera in bounded
batches.

Every function is deterministic for a given seed: z comes from the seed (export_utils.z_from_seed), random
cameras from a torch.Generator seeded by it, and the synthesis network runs with noise_mode='const'.
"""

import math
from dataclasses import dataclass

import torch

from export.utils import z_from_seed
from torch_utils import misc
from training import cameras as cams
from training.networks.generator import one_hot_classes


class ExportError(ValueError):
    """A user-facing problem with the snapshot or the options; the message is one line saying how to fix it."""


# ----------------------------------------------------------------------------
# Snapshot.


def check_device(device) -> torch.device:
    """--device as a torch.device; ExportError if torch does not know it or it is not available here.

    Snapshots themselves are loaded by torch_utils.checkpoint.load_network (with_options=True).
    """
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ExportError(f'--device {device}: {err}') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ExportError(f'--device {device}: CUDA is not available here; use --device cpu')
    return device


# ----------------------------------------------------------------------------
# Cameras.


@dataclass
class CameraSettings:
    radius: float  # distance of the camera from the origin (world units)
    fov: float  # full field of view in degrees
    prior: str | None = None  # camera prior kind for --camera random ('normal', 'uniform_sphere', ...)
    prior_kwargs: dict | None = None  # its numbers (without radius and fov)


def _find_preset(options) -> dict | None:
    """The dataset preset (a dict with radius, fov and camera_prior) stored anywhere in the options."""
    if isinstance(options, dict):
        if {'radius', 'fov', 'camera_prior'} <= set(options):
            return options
        for value in options.values():
            found = _find_preset(value)
            if found is not None:
                return found
    return None


def camera_settings(options: dict, preset: str | None = None, radius=None, fov=None) -> CameraSettings:
    """Cameras as in training: from `--dataset-preset` if given, else the preset recorded in the snapshot;
    `radius` and `fov` override either. ExportError when neither says where the camera goes."""
    found = None
    if preset is not None:
        from training.dataset import load_dataset_preset

        try:
            found = load_dataset_preset(preset)
        except Exception as err:
            raise ExportError(f'--dataset-preset: {err}') from None
    found = found or _find_preset(options)
    radius = radius if radius is not None else (found or {}).get('radius')
    fov = fov if fov is not None else (found or {}).get('fov')
    if radius is None or fov is None:
        raise ExportError(
            'the snapshot records no camera radius/fov; pass --dataset-preset NAME (e.g. ffhq256) or --radius and --fov'
        )
    if not radius > 0 or not 0 < fov < 180:
        raise ExportError(f'camera radius must be > 0 and fov in (0, 180) degrees, got {radius} and {fov}')
    prior = found.get('camera_prior') if found else None
    prior_kwargs = dict(found.get('camera_prior_kwargs') or {}) if found else None
    return CameraSettings(float(radius), float(fov), prior, prior_kwargs)


def cameras_from_angles(settings: CameraSettings, yaw, pitch, device='cpu') -> cams.Camera:
    """Look-at cameras at the export radius/fov from yaw and pitch (radians, any matching shapes). [N]"""
    cam = cams.angles_to_camera(yaw, pitch, settings.radius, settings.fov, dtype=torch.float64)
    return cam.to(device=device, dtype=torch.float32)


def prior_cameras(settings: CameraSettings, seed: int, count: int, device='cpu') -> cams.Camera:
    """`count` cameras from the training prior, drawn by a generator seeded with `seed`."""
    if settings.prior is None or settings.prior == 'dataset':
        what = 'records no camera prior' if settings.prior is None else "uses the dataset's own cameras"
        raise ExportError(
            f'--camera random: the snapshot {what}; pass --dataset-preset NAME or use front / YAW:PITCH'
        )
    prior = cams.make_camera_prior(
        settings.prior, radius=settings.radius, fov=settings.fov, **settings.prior_kwargs
    )
    return prior.sample(count, device=device, generator=torch.Generator().manual_seed(seed))


def view_cameras(settings: CameraSettings, spec: str, seed: int, device='cpu') -> cams.Camera:
    """The cameras `--camera` asks for: 'front', 'random' or 'random:K' (prior), or 'YAW:PITCH,...' in degrees."""
    from export.utils import parse_angles

    if spec == 'front':
        return cameras_from_angles(settings, 0.0, math.pi / 2, device)
    if spec == 'random' or spec.startswith('random:'):
        count = spec.partition(':')[2] or '1'
        if not count.isdigit() or int(count) < 1:
            raise ExportError(f'--camera {spec}: expected random or random:K with K >= 1 views per seed')
        return prior_cameras(settings, seed, int(count), device)
    try:
        angles = parse_angles(spec)
    except ValueError as err:
        raise ExportError(f'--camera: {err}; or use front, random, random:K') from None
    yaw, pitch = zip(*angles)
    return cameras_from_angles(settings, list(yaw), list(pitch), device)


def trajectory_cameras(settings: CameraSettings, name: str, num_frames: int, device='cpu') -> cams.Camera:
    """One camera per frame along a training/cameras.py trajectory. [num_frames]"""
    if name not in cams.TRAJECTORIES:
        raise ExportError(f'unknown trajectory "{name}"; choose one of {", ".join(cams.TRAJECTORIES)}')
    yaw, pitch = cams.TRAJECTORIES[name](num_frames)
    return cameras_from_angles(settings, yaw, pitch, device)


# ----------------------------------------------------------------------------
# Latents, tri-planes, images.


def resolve_class(G, options: dict, value: str | None) -> int | None:
    """--class (an index or a class name of the snapshot's dataset) -> an index; None when not given."""
    c_dim = getattr(G, 'c_dim', 0)
    if value is None:
        return None
    if c_dim == 0:
        raise ExportError(
            f'--class {value}: this network is unconditional (trained without --cond); drop --class'
        )
    names = list((options or {}).get('class_names') or [])
    if value in names:
        return names.index(value)
    if value.isdigit() and int(value) < c_dim:
        return int(value)
    known = f'names {names}' if names else 'no names'
    raise ExportError(f'--class {value}: the network has {c_dim} classes (0..{c_dim - 1}; {known})')


def seed_classes(G, seeds: list[int], class_index: int | None, device='cpu') -> torch.Tensor | None:
    """One-hot class per seed for a conditional G: `class_index`, or seed mod c_dim when None; else None."""
    c_dim = getattr(G, 'c_dim', 0)
    if c_dim == 0:
        return None
    classes = [class_index if class_index is not None else seed % c_dim for seed in seeds]
    return one_hot_classes(classes, c_dim, device)


def seeds_to_ws(
    G, seeds: list[int], truncation_psi=1.0, truncation_cutoff=None, device='cpu', class_index=None
) -> torch.Tensor:
    """Mapped latents of each seed (a conditional G: of class `class_index`, or seed mod c_dim when None).
    [len(seeds), num_ws, w_dim]"""
    z = torch.cat([z_from_seed(seed, G.z_dim) for seed in seeds]).to(device)
    c = seed_classes(G, seeds, class_index, device)
    cond = {} if c is None else dict(c=c)
    with torch.no_grad():
        return G.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, **cond)


def synthesize(G, ws: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """Tri-planes for each latent, with constant noise. [N, 3, C, Rp, Rp]"""
    misc.assert_shape(ws, [None, G.num_ws, G.w_dim])
    num_ws = getattr(G.synthesis, 'num_ws', ws.shape[1])  # the rest of ws (if any) drives the background
    with torch.no_grad():
        return torch.cat([G.synthesis(w[:, :num_ws], noise_mode='const') for w in ws.split(batch_size)])


def render(
    G, planes, ws, camera: cams.Camera, resolution=None, foreground_only=False, batch_size=4, **kwargs
):
    """Full images of planes[i] seen from camera i, in batches. RenderOutput(image, depth, opacity) on CPU.

    kwargs go to G.render (e.g. num_samples_multiplier); foreground_only is passed only when set.
    """
    misc.assert_shape(planes, [camera.batch_size, 3, None, None, None])
    kwargs = dict(kwargs, foreground_only=True) if foreground_only else kwargs
    outputs = []
    with torch.no_grad():
        for start in range(0, planes.shape[0], batch_size):
            sel = slice(start, start + batch_size)
            out = G.render(planes[sel], camera.select(sel), resolution=resolution, ws=ws[sel], **kwargs)
            outputs.append([t.cpu() for t in out])
    return type(out)(*(torch.cat(parts) for parts in zip(*outputs)))


def background_value(G) -> float | None:
    """The flat colour (in [-1, 1]) G's renderer fills transparent pixels with, if it says which."""
    from training import rendering

    name = getattr(getattr(G, 'march', None), 'background', None)
    return rendering.BACKGROUND_COLOURS.get(name) if isinstance(name, str) else None


def geometry_fns(G, planes: torch.Tensor, chunk_size: int | None = None):
    """(density_fn, color_fn) of one latent's tri-planes [1, ...] for export/geometry.py.

    chunk_size: points G decodes at once (None: G's own point_chunk); the grid's chunks bound the rest.
    """
    misc.assert_shape(planes, [1, 3, None, None, None])

    def density_fn(points):
        return G.query_points(planes, points, chunk_size=chunk_size)[1]

    def color_fn(points):
        return G.query_points(planes, points, chunk_size=chunk_size)[0]

    return density_fn, color_fn
