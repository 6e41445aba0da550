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

# A generator shaped like configs/demo.yaml (64^2 images, 64^2 tri-planes, 12 + 12 samples per ray, the
from export import geometry
from training import cameras

# A generator shaped like configs/demo.yaml (64^2 images, 64^2 tri-planes, 12 + 12 samples per ray, the
# demo dataset's scene box and ray bounds), randomly initialised: speed does not depend on training.
DEMO_G = dict(
    z_dim=512, w_dim=512, img_resolution=64, patch_resolution=32, plane_resolution=64, plane_channels=32,
    num_coarse=12, num_fine=12, scene_bounds=1.0, ray_start=1.75, ray_end=5.25, checkpoint_res=None,
)  # fmt: skip
DEMO_CAMERA = dict(radius=3.5, fov_deg=45.0)


def _device(args):
    return torch.device(getattr(args, 'device', None) or 'cpu')


def _repeats(args, default: int) -> int:
    """scripts/bench.py's --repeat (args is its EasyDict), else `default`."""
    value = args.get('repeat') if isinstance(args, dict) else getattr(args, 'repeat', None)
    return int(value or default)


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int, warmup: bool = True) -> tuple[list[float], list[float]]:
    """(wall seconds, process CPU seconds) per run. On a shared CPU machine the CPU time is the steadier
    number: wall time also counts the time other processes held the cores."""
    if warmup:
        fn()  # allocations, kernel selection
    wall, cpu = [], []
    for _ in range(repeats):
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def _demo_generator(device):
    from export.generate import synthesize
    from training.networks.generator import Generator

    torch.manual_seed(0)
    G = Generator(**DEMO_G).eval().requires_grad_(False).to(device)
    ws = G.mapping(torch.randn(1, G.z_dim, device=device))
    return G, ws, synthesize(G, ws)


def _render_case(resolution: int, repeats: int):
    def case(args):
        n = _repeats(args, repeats)
        device = _device(args)
        G, ws, planes = _demo_generator(device)
        camera = cameras.angles_to_camera(
            0.3, math.pi / 2, DEMO_CAMERA['radius'], DEMO_CAMERA['fov_deg'], device
        )
        with torch.no_grad():  # a CPU needs no warm-up worth a full 512^2 render; a GPU does
            render = lambda: G.render(planes, camera, resolution=resolution, ws=ws)  # noqa: E731
            wall, cpu = _timed(render, device, n, warmup=device.type == 'cuda')
        return dict(
            resolution=resolution, ms_per_image=1000 * statistics.median(wall),
            cpu_ms_per_image=1000 * statistics.median(cpu), repeats=n,
        )  # fmt: skip

    return case


def _warm_up_marching_cubes():
    """Import VTK and scikit-image once, outside any timing."""
    bounds = geometry.cube_bounds(1.0)
    volume = geometry.sample_density_grid(bumpy_field, bounds, 8)
    for method in geometry.MC_METHODS:
        geometry.marching_cubes(volume, geometry.auto_threshold(volume), bounds, method)


def geometry_case(args, resolution: int = 256):
    from export.generate import geometry_fns

    device = _device(args)
    G, _ws, planes = _demo_generator(device)
    density_fn, color_fn = geometry_fns(G, planes)
    bounds = geometry.cube_bounds(G.scene_bounds)
    result = dict(resolution=resolution, method=geometry.DEFAULT_MC_METHOD)
    _warm_up_marching_cubes()
    box = {}
    steps = dict(
        density=lambda: box.update(
            volume=geometry.sample_density_grid(density_fn, bounds, resolution, device=device)
        ),
        threshold=lambda: box.update(level=geometry.auto_threshold(box['volume'])),
        marching_cubes=lambda: box.update(mesh=geometry.marching_cubes(box['volume'], box['level'], bounds)),
        colors=lambda: geometry.vertex_colors(color_fn, box['mesh'].vertices, device=device),
    )
    for name, step in steps.items():
        wall, cpu = _timed(step, device, repeats=1, warmup=False)
        result[f'{name}_s'], result[f'{name}_cpu_s'] = wall[0], cpu[0]
    result['faces'] = len(box['mesh'].faces)
    return result


def bumpy_field(points):
    """A ball with a fine sinusoidal relief and a softplus density: many triangles, like a real field."""
    r = points.norm(dim=-1, keepdim=True)
    x, y, z = points.unbind(-1)
    bump = 0.05 * (torch.sin(40 * x) * torch.sin(37 * y) * torch.sin(43 * z))[..., None]
    return torch.nn.functional.softplus(60 * (0.6 + bump - r))


def marching_cubes_case(args, resolution: int = 256):
    repeats = _repeats(args, 3)
    bounds = geometry.cube_bounds(1.0)
    volume = geometry.sample_density_grid(bumpy_field, bounds, resolution)
    _warm_up_marching_cubes()
    level = geometry.auto_threshold(volume)
    result = dict(resolution=resolution, repeats=repeats)
    for method in geometry.MC_METHODS:
        cpu = torch.device('cpu')
        wall, cpu_s = _timed(lambda m=method: geometry.marching_cubes(volume, level, bounds, m), cpu, repeats)
        result[f'{method}_s'] = statistics.median(wall)
        result[f'{method}_cpu_s'] = statistics.median(cpu_s)
    result['faces'] = len(geometry.marching_cubes(volume, level, bounds).faces)
    result['faster'] = min(geometry.MC_METHODS, key=lambda m: result[f'{m}_cpu_s'])
    return result


CASES = {
    'export_render_256': _render_case(256, repeats=2),
    'export_render_512': _render_case(512, repeats=1),
    'export_geometry_256': geometry_case,
    'export_marching_cubes_256': marching_cubes_case,
}
