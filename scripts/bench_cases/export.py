"""Benchmarks of gen_samples.py's heavy paths (scripts/bench.py discovers CASES; each fn(args) -> dict).

- export_render_256 / export_render_512: ms per full image of a demo-sized generator (no gradients).
- export_geometry_256: a 256^3 density grid of the same generator, split into density queries and
  marching cubes (flying edges, the default), plus the vertex colours.
- export_marching_cubes_256: scikit-image vs VTK flying edges on one 256^3 volume (an analytic, bumpy
  radiance field), median of `repeats` warm runs each: the measurement behind geometry.DEFAULT_MC_METHOD.
"""

import math
import statistics
import time

import torch

from training import cameras, geometry

# A generator shaped like configs/demo.yaml (64^2 images, 64^2 tri-planes, 12 + 12 samples per ray, the
# demo dataset's scene box and ray bounds), randomly initialised: speed does not depend on training.
DEMO_G = dict(
    z_dim=512, w_dim=512, img_resolution=64, patch_resolution=32, plane_resolution=64, plane_channels=32,
    num_coarse=12, num_fine=12, scene_bounds=1.0, ray_start=1.75, ray_end=5.25, checkpoint_res=None,
)  # fmt: skip
DEMO_CAMERA = dict(radius=3.5, fov_deg=45.0)


def _device(args):
    return torch.device(getattr(args, 'device', None) or 'cpu')


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int, warmup: bool = True) -> list[float]:
    if warmup:
        fn()  # allocations, kernel selection
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _demo_generator(device):
    from training.export_gen import synthesize
    from training.generator import Generator

    torch.manual_seed(0)
    G = Generator(**DEMO_G).eval().requires_grad_(False).to(device)
    ws = G.mapping(torch.randn(1, G.z_dim, device=device))
    return G, ws, synthesize(G, ws)


def _render_case(resolution: int, repeats: int):
    def case(args):
        device = _device(args)
        G, ws, planes = _demo_generator(device)
        camera = cameras.angles_to_camera(
            0.3, math.pi / 2, DEMO_CAMERA['radius'], DEMO_CAMERA['fov_deg'], device
        )
        with torch.no_grad():  # a CPU needs no warm-up worth a full 512^2 render; a GPU does
            render = lambda: G.render(planes, camera, resolution=resolution, ws=ws)  # noqa: E731
            times = _timed(render, device, repeats, warmup=device.type == 'cuda')
        return dict(resolution=resolution, ms_per_image=1000 * statistics.median(times), repeats=len(times))

    return case


def geometry_case(args):
    from training.export_gen import geometry_fns

    device = _device(args)
    G, _ws, planes = _demo_generator(device)
    density_fn, color_fn = geometry_fns(G, planes)
    bounds = geometry.cube_bounds(G.scene_bounds)
    mesh, info = geometry.extract_mesh(density_fn, bounds, 256, None, color_fn, device=device)
    return dict(
        resolution=256, density_s=info['density_s'], marching_cubes_s=info['marching_cubes_s'],
        colors_s=info['colors_s'], faces=info['num_faces'], method=geometry.DEFAULT_MC_METHOD,
    )  # fmt: skip


def bumpy_field(points):
    """A ball with a fine sinusoidal relief and a softplus density: many triangles, like a real field."""
    r = points.norm(dim=-1, keepdim=True)
    x, y, z = points.unbind(-1)
    bump = 0.05 * (torch.sin(40 * x) * torch.sin(37 * y) * torch.sin(43 * z))[..., None]
    return torch.nn.functional.softplus(60 * (0.6 + bump - r))


def marching_cubes_case(args, resolution: int = 256, repeats: int = 3):
    bounds = geometry.cube_bounds(1.0)
    volume = geometry.sample_density_grid(bumpy_field, bounds, resolution)
    level = geometry.auto_threshold(volume)
    result = dict(resolution=resolution, repeats=repeats)
    for method in geometry.MC_METHODS:
        cpu = torch.device('cpu')
        times = _timed(lambda m=method: geometry.marching_cubes(volume, level, bounds, m), cpu, repeats)
        result[f'{method}_s'] = statistics.median(times)
    result['faces'] = len(geometry.marching_cubes(volume, level, bounds).faces)
    result['faster'] = min(geometry.MC_METHODS, key=lambda m: result[f'{m}_s'])
    return result


CASES = {
    'export_render_256': _render_case(256, repeats=2),
    'export_render_512': _render_case(512, repeats=1),
    'export_geometry_256': geometry_case,
    'export_marching_cubes_256': marching_cubes_case,
}
