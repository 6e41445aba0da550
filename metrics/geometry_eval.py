"""3D metric pipelines over a generator: non-flatness, multi-view consistency, Chamfer to source meshes."""

import contextlib
import dataclasses
import json
import math
import os

import torch

from metrics import geometry_metrics as gm
from metrics import metric_utils as mu
from training.cameras import Camera


def _render_resolution(opts) -> int:
    """The dataset's resolution when real data is given, else G's own."""
    if opts.dataset_kwargs.get('class_name'):
        return int(mu.get_dataset(opts).resolution)
    return int(opts.G.img_resolution)


@contextlib.contextmanager
def within_ray_bounds(G):
    """Render with a finite last interval (ending at ray_end) instead of one reaching infinity.

    Without a background model G's last interval runs to infinity, so wherever a ray's last sample lies in
    the scene box (every pixel at the paper presets: their ray_end is inside the box) the pixel is opaque
    whatever the scene: the infinite interval paints the background. With the interval cut at ray_end the
    opacity is what lies within [ray_start, ray_end]: the foreground. The sample positions are the same
    (importance sampling does not depend on the last interval), so depths of opaque pixels are too.
    """
    march = getattr(G, 'march', None)
    if march is None or not getattr(march, 'last_to_infinity', False):
        yield
        return
    G.march = dataclasses.replace(march, last_to_infinity=False)
    try:
        yield
    finally:
        G.march = march


def background_depth(G, camera: Camera, margin: float = 0.01) -> torch.Tensor:
    """Per camera [N], the depth from which an opaque pixel is a far wall: the background (see
    foreground_opacity)."""
    march = getattr(G, 'march', None)
    if march is not None:
        # The last samples of a ray lie in the last coarse interval before ray_end: a surface there is
        # what G paints as its backdrop (a "wall" at the end of the rays), not the object.
        span = march.ray_end - march.ray_start
        far = march.ray_end - max(span / max(int(march.num_coarse), 1), margin * span)
        return torch.full(
            [camera.batch_size], far, dtype=camera.cam2world.dtype, device=camera.cam2world.device
        )
    value_range = gm.scene_depth_range(camera, float(G.scene_bounds))  # [N, 2]: no ray bounds, the box's
    return value_range[:, 1] - margin * (value_range[:, 1] - value_range[:, 0])


def foreground_opacity(out, camera: Camera, G) -> torch.Tensor:
    """Opacity with background pixels zeroed: those deeper than background_depth. [N, 1, r, r]

    `out` must be rendered `within_ray_bounds(G)` (nonflat and mvc do), so background pixels are
    transparent whatever the preset; this also drops an opaque backdrop at the end of the rays. Checked
    with the real Generator at every preset's bounds (tests/metrics/test_metrics_real_generator.py).
    """
    far = background_depth(G, camera)
    return out.opacity * (out.depth < far[:, None, None, None]).to(out.opacity.dtype)


def renderable_depth_range(G, camera: Camera) -> torch.Tensor:
    """[N, 2]: the depths a point of the scene box [-b, b]^3 can have from each camera, within G's ray
    bounds [ray_start, ray_end] when it has them (at the paper presets they cut the box's range to a third)."""
    box = gm.scene_depth_range(camera, float(G.scene_bounds))
    march = getattr(G, 'march', None)
    if march is None:
        return box
    return torch.stack([box[:, 0].clamp_min(march.ray_start), box[:, 1].clamp_max(march.ray_end)], dim=1)


def nonflatness(opts, num_items: int = 1024, num_bins: int = 64, opacity_threshold: float = 0.5) -> dict:
    """Mean and std over samples of the foreground depth-histogram entropy (nats; log(num_bins) at most).

    The histogram spans the depths G can render at all (renderable_depth_range), so the score does not
    depend on how the sample itself is framed.
    """
    entropies = []
    with within_ray_bounds(opts.G), mu.progress_bar(opts, num_items, 'nonflat') as bar:
        for out, camera, count, _items in mu.render_fakes(
            opts, num_items, opts.batch_size, _render_resolution(opts), foreground_only=True
        ):
            mask = foreground_opacity(out, camera, opts.G) > opacity_threshold
            value_range = renderable_depth_range(opts.G, camera)
            entropies.append(
                mu.gather(gm.depth_histogram_entropy(out.depth, mask, value_range, num_bins), opts)
            )
            bar.update(count)
    e = torch.cat(entropies)[:num_items].double()
    return dict(nonflat=e.mean().item(), nonflat_std=e.std().item(), nonflat_max=math.log(num_bins))


def rotate_about_up(camera: Camera, angle: float) -> Camera:
    """The camera orbited by `angle` radians about the world +y axis through the origin (a yaw step)."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.eye(4, dtype=camera.cam2world.dtype, device=camera.cam2world.device)
    rot[0, 0], rot[0, 2], rot[2, 0], rot[2, 2] = c, s, -s, c  # yaw towards +x, as angles_to_camera
    return Camera(rot @ camera.cam2world, camera.intrinsics)


def multiview_consistency(
    opts, num_items: int = 256, yaw_step: float = 0.1, depth_kind: str = 'ray', opacity_threshold: float = 0.5
) -> dict:
    """Mean masked reprojection error (colour units in [0, 1]) between each sample's render from its camera
    and from that camera orbited by `yaw_step` radians; also the mean fraction of pixels compared."""
    resolution = _render_resolution(opts)
    views_a = mu.render_fakes(opts, num_items, opts.batch_size, resolution, foreground_only=True)
    views_b = mu.render_fakes(
        opts,
        num_items,
        opts.batch_size,
        resolution,
        camera_transform=lambda cam: rotate_about_up(cam, yaw_step),
        foreground_only=True,
    )
    errors, coverages = [], []
    with within_ray_bounds(opts.G), mu.progress_bar(opts, num_items, 'mvc') as bar:
        for (out_a, cam_a, count, _), (out_b, cam_b, _, _) in zip(views_a, views_b):
            view_a = dict(out_a, camera=cam_a, opacity=foreground_opacity(out_a, cam_a, opts.G))
            view_b = dict(out_b, camera=cam_b, opacity=foreground_opacity(out_b, cam_b, opts.G))
            err, cov = gm.reprojection_error(view_a, view_b, depth_kind, opacity_threshold)
            errors.append(mu.gather(err, opts))
            coverages.append(mu.gather(cov.to(err.dtype), opts))
            bar.update(count)
    return dict(
        mvc=torch.cat(errors)[:num_items].double().mean().item(),
        mvc_coverage=torch.cat(coverages)[:num_items].double().mean().item(),
    )


# ----------------------------------------------------------------------------
# Chamfer distance to the source meshes of a dataset rendered from known meshes (the demo dataset).


def load_source_objects(dataset) -> list[dict]:
    """Objects of a mesh-rendered dataset: dict(name, mesh (path), items (indices of its images))."""
    meta_path = os.path.join(os.path.dirname(os.path.abspath(dataset.path)), 'meta.json')
    if not os.path.isfile(meta_path):
        raise ValueError(
            f'chamfer needs a dataset rendered from known meshes, with {meta_path} listing objects and their '
            f'meshes (as `scripts/dataset_tool.py demo` writes); {dataset.path} has none'
        )
    with open(meta_path) as f:
        meta = json.load(f)
    items: dict[str, list[int]] = {}
    for i in range(dataset.num_raw_images):
        items.setdefault(dataset.image_name(i).split('/')[0], []).append(i)
    objects = []
    for obj in meta['objects']:
        if obj['name'] in items:
            mesh = os.path.join(os.path.dirname(meta_path), obj['mesh'])
            objects.append(dict(name=obj['name'], mesh=mesh, items=items[obj['name']]))
    if not objects:
        raise ValueError(f'{meta_path}: none of its objects has images in {dataset.path}')
    return objects


def closest_sample(opts, dataset, items: list[int], latents: torch.Tensor, views: int) -> int:
    # A class-conditional G renders candidate j with fake item j's class (mu.fake_classes).
    """Index of the latent whose renders best match (pixel MSE) the object's first `views` images, rendered
    from those images' view directions at the run's radius and fov (as training and the fakes see them)."""
    idx = items[:views]
    real = torch.stack([torch.as_tensor(dataset[i][0]) for i in idx]).to(opts.device).float() / 127.5 - 1
    camera = mu.framed_dataset_cameras(opts, dataset.cameras().select(torch.as_tensor(idx))).to(opts.device)
    errors = []
    for j, z in enumerate(latents):
        cond = {k: v.expand(len(idx), -1) for k, v in mu.class_kwargs(opts, [j]).items()}
        with torch.no_grad():
            fake = opts.G(
                z[None].expand(len(idx), -1),
                camera,
                resolution=dataset.resolution,
                noise_mode='const',
                **opts.G_kwargs,
                **cond,
            ).image
        errors.append((fake - real).square().mean().item())
    return int(torch.tensor(errors).argmin())


def extract_sample_mesh(opts, z: torch.Tensor, grid_resolution: int, item: int = 0):
    """Marching-cubes mesh (vertices, faces) of G's density for latent z of fake item `item` (the export's
    extraction; the item gives a conditional G its class)."""
    from export import geometry

    trunc = {k: v for k, v in opts.G_kwargs.items() if k.startswith('truncation')}
    with torch.no_grad():
        ws = opts.G.mapping(z[None], **trunc, **mu.class_kwargs(opts, [item]))
        field = opts.G.density_field(ws)  # planes synthesised once, not once per grid chunk
    mesh, _info = geometry.extract_mesh(
        field,
        geometry.cube_bounds(opts.G.scene_bounds),
        resolution=grid_resolution,
        device=opts.device,
    )
    return torch.from_numpy(mesh.vertices), torch.from_numpy(mesh.faces)


def load_mesh(path: str):
    import trimesh

    mesh = trimesh.load(path, force='mesh', process=False)
    return torch.as_tensor(mesh.vertices, dtype=torch.float64), torch.as_tensor(mesh.faces, dtype=torch.int64)


def chamfer_to_source_meshes(
    opts, num_candidates: int = 32, views: int = 4, grid_resolution: int = 128, num_points: int = 30_000
) -> dict:
    """For each source object: pick the closest of `num_candidates` samples (pixel MSE over `views` views),
    extract its mesh, and measure the Chamfer distance to the source mesh after normalizing both to a unit
    box. Objects are split across ranks; the mean over objects is reported, and how many objects had no
    surface to extract (`chamfer_failed`; those are left out of the mean)."""
    dataset = mu.get_dataset(opts)
    objects = load_source_objects(dataset)
    latents = mu.fake_latents(opts, list(range(num_candidates)), opts.G.z_dim)
    values = []
    with mu.progress_bar(opts, len(objects), 'chamfer') as bar:
        for i in mu.rank_items(len(objects), opts):
            obj = objects[i]
            best = closest_sample(opts, dataset, obj['items'], latents, views)
            try:
                sample_mesh = extract_sample_mesh(opts, latents[best], grid_resolution, best)
            except ValueError:  # no isosurface (e.g. constant density early in training): counted as failed
                values.append(math.nan)
            else:
                mesh = load_mesh(obj['mesh'])
                values.append(gm.mesh_chamfer_distance(sample_mesh, mesh, num_points, seed=opts.seed))
            bar.update(opts.num_gpus)
    gathered = mu.gather(torch.tensor(values, dtype=torch.float64, device=opts.device), opts)
    values = gathered[: len(objects)].double()
    ok = values[values.isfinite()]
    return dict(
        chamfer=ok.mean().item() if len(ok) else math.nan,
        chamfer_std=ok.std().item() if len(ok) > 1 else 0.0,
        chamfer_failed=len(values) - len(ok),
    )
