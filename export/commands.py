"""The work behind each gen_samples.py subcommand. Each function writes its files into `outdir` and
returns their paths; names say the mode and the seed (export_utils.out_name)."""

import json
import os

import numpy as np
import torch
import tqdm

from export import generate as eg
from export import geometry
from export import utils as eu


def _seed_tag(seeds: list[int]) -> str:
    return 'seeds' + (
        '_'.join(map(str, seeds)) if len(seeds) <= 8 else f'{seeds[0]}-{seeds[-1]}x{len(seeds)}'
    )


def _frame(out, i: int, foreground_only: bool, background: float | None = None) -> np.ndarray:
    """uint8 [H, W, 3], or [H, W, 4] with the opacity as alpha for foreground-only renders.

    RGBA colours are straight (not premultiplied): the background colour the renderer filled in behind
    the foreground (`background`, in [-1, 1]) is taken out again, c = (image - (1 - a) * bg) / a.
    """
    image, alpha = out.image[i : i + 1], out.opacity[i : i + 1].clamp(0, 1)  # [1, 3, H, W], [1, 1, H, W]
    if foreground_only and background is not None:
        image = (image - (1 - alpha) * background) / alpha.clamp_min(1e-4)
    rgb = eu.to_uint8(image)[0]
    if not foreground_only:
        return rgb
    a8 = (alpha[0, 0] * 255).round().to(torch.uint8).numpy()
    return np.concatenate([rgb, a8[..., None]], axis=-1)


def _render_seed_views(G, cfg, seed, camera, resolution, foreground_only, device):
    """One seed's sample (its class when conditional) rendered from every view of `camera`: (out, views)."""
    ws = eg.seeds_to_ws(G, [seed], cfg.trunc, cfg.trunc_cutoff, device, cfg.get('class_index'))
    cam = eg.view_cameras(cfg.cameras, camera, seed, device)
    V = cam.batch_size
    planes = eg.synthesize(G, ws)  # once per seed, shared by its views
    out = eg.render(
        G, planes.expand(V, *planes.shape[1:]), ws.expand(V, -1, -1), cam, resolution, foreground_only,
        **cfg.render_kwargs,
    )  # fmt: skip
    return out, V


def images(
    G, cfg, seeds, outdir, camera='front', resolution=None, foreground_only=False, grid=True, device='cpu'
):
    """Per-seed (and per-view) PNGs plus a grid: one row per seed, one column per view."""
    paths, tiles = [], []
    for seed in tqdm.tqdm(seeds, desc='images', unit='seed'):
        out, V = _render_seed_views(G, cfg, seed, camera, resolution, foreground_only, device)
        for v in range(V):
            img = _frame(out, v, foreground_only, eg.background_value(G))
            paths.append(os.path.join(outdir, eu.out_name('images', seed, v if V > 1 else None)))
            eu.save_png(paths[-1], img)
            tiles.append(img)
    if grid and len(tiles) > 1:
        paths.append(os.path.join(outdir, f'images-grid-{_seed_tag(seeds)}.png'))
        fill = 0 if foreground_only else 255
        views = len(tiles) // len(seeds)  # one row per seed when there are several views, else a square
        eu.save_png(paths[-1], eu.image_grid(np.stack(tiles), cols=views if views > 1 else None, fill=fill))
    return paths


def video(
    G,
    cfg,
    seeds,
    outdir,
    trajectory='orbit',
    frames=120,
    fps=30,
    resolution=None,
    grid_cols=None,
    device='cpu',
):
    """One mp4 along a trajectory: a single seed, or a grid of seeds turning together."""
    ws = eg.seeds_to_ws(G, seeds, cfg.trunc, cfg.trunc_cutoff, device, cfg.get('class_index'))
    planes = eg.synthesize(G, ws)
    cams = eg.trajectory_cameras(cfg.cameras, trajectory, frames, device)
    name = eu.out_name('video', seeds[0], ext='mp4') if len(seeds) == 1 else f'video-{_seed_tag(seeds)}.mp4'
    path = os.path.join(outdir, name.replace('video-', f'video-{trajectory}-'))
    N = len(seeds)
    with eu.VideoWriter(path, fps=fps) as writer:
        for t in tqdm.tqdm(range(frames), desc=f'video {trajectory}', unit='frame'):
            cam = cams.select(t)
            cam = eg.cams.Camera(cam.cam2world.expand(N, 4, 4), cam.intrinsics.expand(N, 3, 3))
            out = eg.render(G, planes, ws, cam, resolution, **cfg.render_kwargs)
            writer.append(eu.image_grid(eu.to_uint8(out.image), cols=grid_cols))
    return [path]


def interp(
    G,
    cfg,
    seeds,
    outdir,
    frames_per_seed=30,
    fps=30,
    trajectory=None,
    resolution=None,
    loop=False,
    device='cpu',
):
    """Linear interpolation in w between consecutive seeds (and back to the first with `loop`)."""
    ws = eg.seeds_to_ws(G, seeds, cfg.trunc, cfg.trunc_cutoff, device, cfg.get('class_index'))
    keys = list(range(len(seeds))) + ([0] if loop else [])
    steps = [(a, b, k / frames_per_seed) for a, b in zip(keys[:-1], keys[1:]) for k in range(frames_per_seed)]
    if not loop:
        steps.append((keys[-1], keys[-1], 0.0))
    if trajectory:
        cams = eg.trajectory_cameras(cfg.cameras, trajectory, len(steps), device)
    else:
        cams = eg.view_cameras(cfg.cameras, 'front', seeds[0], device)
    tag = f'interp-{_seed_tag(seeds)}' + (f'-{trajectory}' if trajectory else '')
    path = os.path.join(outdir, f'{tag}.mp4')
    with eu.VideoWriter(path, fps=fps) as writer:
        for t, (a, b, f) in enumerate(tqdm.tqdm(steps, desc='interp', unit='frame')):
            w = eu.lerp(ws[a : a + 1], ws[b : b + 1], f)
            cam = cams.select(t if trajectory else 0)
            out = eg.render(G, eg.synthesize(G, w), w, cam, resolution, **cfg.render_kwargs)
            writer.append(eu.to_uint8(out.image)[0])
    return [path]


def depth(G, cfg, seeds, outdir, camera='front', resolution=None, device='cpu'):
    """Depth and opacity per seed/view: colourised PNGs and raw float32 .npy ([H, W], world units)."""
    paths = []
    for seed in tqdm.tqdm(seeds, desc='depth', unit='seed'):
        out, V = _render_seed_views(G, cfg, seed, camera, resolution, True, device)
        for v in range(V):
            d, a = out.depth[v, 0].numpy(), out.opacity[v, 0].numpy()
            view = v if V > 1 else None
            for mode, raw, png in (
                ('depth', d, eu.colorize_depth(d, a)),
                ('opacity', a, eu.colorize_opacity(a)),
            ):
                paths += [os.path.join(outdir, eu.out_name(mode, seed, view, ext)) for ext in ('png', 'npy')]
                eu.save_png(paths[-2], png)
                np.save(paths[-1], raw.astype(np.float32))
    return paths


def mesh(
    G, cfg, seeds, outdir, resolution=256, threshold=None, fmt='ply', crop=None, method=None, render=True,
    render_resolution=512, chunk_size=1 << 18, cap=True, device='cpu',
):  # fmt: skip
    """Marching-cubes mesh per seed with vertex colours, its stats (.json) and a PNG render."""
    bounds = crop or geometry.cube_bounds(G.scene_bounds)
    method = method or geometry.DEFAULT_MC_METHOD
    paths = []
    for seed in seeds:
        ws = eg.seeds_to_ws(G, [seed], cfg.trunc, cfg.trunc_cutoff, device, cfg.get('class_index'))
        density_fn, color_fn = eg.geometry_fns(G, eg.synthesize(G, ws))
        result, info = geometry.extract_mesh(
            density_fn, bounds, resolution, threshold, color_fn, method, chunk_size, device, True, cap
        )
        stem = os.path.join(outdir, eu.out_name('geometry', seed, ext=fmt)).rsplit('.', 1)[0]
        geometry.write_mesh(f'{stem}.{fmt}', result)
        timings = {
            k: info.pop(k) for k in ('density_s', 'marching_cubes_s', 'colors_s')
        }  # files stay deterministic
        info.update(
            seed=seed, resolution=resolution, bounds=[list(b) for b in bounds], method=method, capped=cap
        )
        with open(f'{stem}.json', 'w') as f:
            json.dump(info, f, indent=2)
        paths += [f'{stem}.{fmt}', f'{stem}.json']
        tqdm.tqdm.write(
            f'seed {seed}: {info["num_vertices"]} vertices, {info["num_faces"]} faces at threshold '
            f'{info["threshold"]:.4g} (density median {info["median"]:.3g}, max {info["max"]:.3g}); '
            f'{timings["density_s"]:.1f} s density, {timings["marching_cubes_s"]:.1f} s marching cubes'
        )
        if render:
            paths += _render_png(f'{stem}.{fmt}', f'{stem}.png', render_resolution)
    return paths


def _render_png(mesh_path: str, png_path: str, resolution: int) -> list[str]:
    """The mesh's PNG (rendered in a child process); a failed render is reported, never fatal."""
    from export.mesh_render import render_mesh_in_subprocess

    error = render_mesh_in_subprocess(mesh_path, png_path, resolution=resolution)
    if error is not None:
        tqdm.tqdm.write(f'{mesh_path} written, but no PNG render: {error} (skip it with --no-render)')
        return []
    return [png_path]
