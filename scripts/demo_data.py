"""The built-in demo dataset: meshes that ship with pyvista, coloured several ways, rendered by the
Megascans protocol (render_multiview.py) at a CPU-friendly resolution.

Layout of `dest/`:
  dataset.zip    <object>/<view>.png RGBA images + dataset.json (25-float labels), what training reads
  meshes/        <shape>.ply, each source mesh normalised into [-1, 1]^3 (the render world), for Chamfer
  meta.json      the protocol's numbers, the object list (shape + colours) and the build time
A second call with the same options finds meta.json and returns at once.
"""

import json
import os
import sys
import time
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

DEMO_VERSION = 1
# Colour schemes: (colour at the bottom, colour at the top, number of stripes along the height).
PALETTE = [
    ((220, 60, 40), (250, 200, 60), 0),  # red -> yellow gradient
    ((30, 90, 200), (120, 220, 240), 3),  # blue/cyan stripes
    ((40, 150, 60), (200, 240, 120), 0),  # green -> lime gradient
    ((120, 50, 160), (240, 130, 190), 2),  # purple/pink stripes
]


def demo_shapes() -> dict:
    """name -> pyvista surface, raw (not yet normalised). Shipped with pyvista: no network needed."""
    import pyvista as pv
    from pyvista import examples

    return dict(
        airplane=examples.load_airplane(),
        ant=examples.load_ant(),
        nut=examples.load_nut(),
        torus=pv.ParametricTorus(ringradius=1.0, crosssectionradius=0.35, u_res=48, v_res=24),
        supertoroid=pv.ParametricSuperToroid(n1=0.5, n2=2.0, u_res=48, v_res=24),
        cone=pv.Cone(direction=(0, 1, 0), height=2.0, radius=0.8, resolution=48),
        globe=examples.load_globe(),
        arrow=pv.Arrow(direction=(1, 0.3, 0), tip_length=0.35, tip_radius=0.2, shaft_radius=0.08),
    )


def point_colours(points: np.ndarray, scheme) -> np.ndarray:
    """Per-point RGB uint8 [P, 3]: a gradient or stripes along world y of a [-1, 1]^3 mesh."""
    lo, hi, stripes = scheme
    t = (points[:, 1] + 1) / 2
    if stripes:
        t = (np.sin(t * np.pi * 2 * stripes) > 0).astype(np.float64)
    c = np.asarray(lo, np.float64)[None] * (1 - t[:, None]) + np.asarray(hi, np.float64)[None] * t[:, None]
    return np.clip(np.rint(c), 0, 255).astype(np.uint8)


def _cached_meta(dest: str, options: dict) -> dict | None:
    meta_path = os.path.join(dest, 'meta.json')
    if os.path.isfile(meta_path) and os.path.isfile(os.path.join(dest, 'dataset.zip')):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get('options') == options:
            return meta
    return None


def _render_objects(rm, zf, dest: str, resolution: int, views: int, num_colours: int, seed: int):
    """Render every shape x colouring into the open zip `zf`; save the normalised meshes.
    Returns (entries [(name, label)], objects [dict(name, mesh, colours)])."""
    import tqdm

    shapes = demo_shapes()
    progress = tqdm.tqdm(
        total=len(shapes) * num_colours, desc='demo', unit='object', disable=None, leave=False
    )
    renderer = rm.MeshRenderer(resolution, supersample=2)
    entries, objects = [], []
    try:
        for s, (name, raw) in enumerate(shapes.items()):
            mesh = rm.normalize_mesh(raw.extract_surface(algorithm='dataset_surface').triangulate())
            mesh.save(os.path.join(dest, 'meshes', f'{name}.ply'))
            for c in range(num_colours):
                obj, scheme = f'{name}_c{c}', PALETTE[c % len(PALETTE)]
                renderer.set_mesh(mesh, rgb=point_colours(np.asarray(mesh.points), scheme))
                cam = rm.sphere_cameras(views, seed=seed * 1000 + s * len(PALETTE) + c)
                for fname, png, label in rm.render_views(renderer, cam, f'{obj}/'):
                    zf.writestr(fname, png)
                    entries.append((fname, label))
                objects.append(dict(name=obj, mesh=f'meshes/{name}.ply', colours=scheme))
                progress.update()
    finally:
        progress.close()
        renderer.close()
    return entries, objects


def build_demo(dest: str, resolution=64, views=48, num_colours=4, seed=0, force=False, log=print) -> dict:
    """Render the demo dataset into `dest` (cached); returns meta.json's content."""
    options = dict(
        version=DEMO_VERSION, resolution=resolution, views=views, num_colours=num_colours, seed=seed
    )
    meta = None if force else _cached_meta(dest, options)
    if meta is not None:
        log(f'demo dataset already in {dest} ({meta["num_images"]} images); --force rebuilds it')
        return meta
    import render_multiview as rm  # heavy (torch, VTK): only when there is work to do

    start = time.time()
    os.makedirs(os.path.join(dest, 'meshes'), exist_ok=True)
    tmp = os.path.join(dest, f'.dataset.zip.tmp{os.getpid()}')
    try:
        with zipfile.ZipFile(tmp, 'w', compression=zipfile.ZIP_STORED) as zf:
            entries, objects = _render_objects(rm, zf, dest, resolution, views, num_colours, seed)
            zf.writestr('dataset.json', rm.dataset_json(entries))
        os.replace(tmp, os.path.join(dest, 'dataset.zip'))  # atomic: no half-written archive
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    meta = dict(
        options=options,
        num_images=len(entries),
        num_objects=len(objects),
        radius=rm.MEGASCANS_RADIUS,
        fov=rm.MEGASCANS_FOV,
        mesh_bounds=[-1.0, 1.0],
        objects=objects,
        seconds=round(time.time() - start, 2),
    )
    meta_path = os.path.join(dest, 'meta.json')
    with open(meta_path + '.tmp', 'w') as f:
        json.dump(meta, f, indent=1)
    os.replace(meta_path + '.tmp', meta_path)
    seconds = meta['seconds']
    log(
        f'rendered {len(entries)} images of {len(objects)} objects at {resolution}^2 in {seconds} s -> {dest}'
    )
    return meta
