"""The built-in demo dataset: meshes that ship with pyvista, coloured several ways, rendered by the
Megascans protocol (render_multiview.py) at a CPU-friendly resolution.

Layout of `dest/`:
  dataset.zip    <object>/<view>.png RGBA images + dataset.json (25-float labels), what training reads
  meshes/        <shape>.ply, each source mesh normalised into [-1, 1]^3 (the render world), for Chamfer
  meta.json      the protocol's numbers, the object list (shape + colours) and the build time
A second call with the same options finds meta.json and returns at once.
"""

import json
import math
import os
import sys
import time
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

DEMO_VERSION = 3  # 3: the class label is the object (shape x colouring), no longer the shape
# Colour schemes: (colour at the bottom, colour at the top, number of stripes along the height).
PALETTE = [
    ((220, 60, 40), (250, 200, 60), 0),  # red -> yellow gradient
    ((30, 90, 200), (120, 220, 240), 3),  # blue/cyan stripes
    ((40, 150, 60), (200, 240, 120), 0),  # green -> lime gradient
    ((120, 50, 160), (240, 130, 190), 2),  # purple/pink stripes
]
# One plain colour per shape of the `shapes` set: the class is visible in every pixel, not only the outline.
SOLID = dict(
    cone=((200, 40, 30), (200, 40, 30), 0),  # red
    torus=((40, 160, 60), (40, 160, 60), 0),  # green
    box=((40, 90, 210), (40, 90, 210), 0),  # blue
    nut=((230, 180, 30), (230, 180, 30), 0),  # gold
    arrow=((150, 60, 180), (150, 60, 180), 0),  # purple
)
# Cameras of the `shapes` set: every azimuth, elevation from 10 deg below to 50 deg above the equator
# (pitch is the polar angle from the up axis). The `classic` set sees its objects from the whole sphere.
UPPER_BAND = dict(pitch_mean=math.radians(70.0), pitch_range=math.radians(30.0))
# 32^2: the CPU demo trains on whole 32^2 images (its patch size), so its data is what G learns to render.
# At 64^2 the demo's 32^2 views would cost a blur G cannot remove in a few kimg: the 64^2 reals resampled to
# 32^2 and back score FID1k 65.4 against themselves.
DEMO_RESOLUTION = 32


def demo_shapes(names=None) -> dict:
    """name -> pyvista surface, raw (not yet normalised). Shipped with pyvista: no network needed."""
    import pyvista as pv
    from pyvista import examples

    makers = dict(
        airplane=examples.load_airplane,
        ant=examples.load_ant,
        nut=examples.load_nut,
        torus=lambda: pv.ParametricTorus(ringradius=1.0, crosssectionradius=0.35, u_res=48, v_res=24),
        supertoroid=lambda: pv.ParametricSuperToroid(n1=0.5, n2=2.0, u_res=48, v_res=24),
        cone=lambda: pv.Cone(direction=(0, 1, 0), height=2.0, radius=0.8, resolution=48),
        globe=examples.load_globe,
        arrow=lambda: pv.Arrow(direction=(1, 0.3, 0), tip_length=0.35, tip_radius=0.2, shaft_radius=0.08),
        box=lambda: pv.Box(bounds=(-0.8, 0.8, -0.5, 0.5, -0.5, 0.5), level=4, quads=False),
    )
    return {name: makers[name]() for name in (names or CLASSIC_SHAPES)}


CLASSIC_SHAPES = ('airplane', 'ant', 'nut', 'torus', 'supertoroid', 'cone', 'globe', 'arrow')
# name -> (shapes, colourings per shape: a list per shape, camera band, views per object). The class label is
# the object (shape x colouring): with the shape as the class, a class-conditional G must also learn which
# z gives which colouring; the classic data scored FID1k 104.3 that way against 87.3 per object (16.4 kimg).
DEMO_SETS = dict(
    # The default: five distinct shapes, one plain colour each, from above-ish views; one class per shape.
    shapes=dict(shapes=tuple(SOLID), colours=lambda name: [SOLID[name]], band=UPPER_BAND, views=128),
    # The first demo: 8 shapes x 4 colourings seen from the whole sphere; 32 objects, 32 classes.
    classic=dict(shapes=CLASSIC_SHAPES, colours=lambda name: PALETTE, band={}, views=48),
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


def _render_objects(rm, zf, dest: str, demo_set: dict, resolution: int, views: int, seed: int):
    """Render every shape x colouring of `demo_set` into the open zip `zf`; save the normalised meshes.
    Returns (entries [(name, label)], classes [(name, class index)], objects [dict(name, mesh, colours,
    class_index, class_name)]). One class per object, named after its shape where the shape has one colouring."""
    import tqdm

    shapes = demo_shapes(demo_set['shapes'])
    total = sum(len(demo_set['colours'](name)) for name in shapes)
    progress = tqdm.tqdm(total=total, desc='demo', unit='object', disable=None, leave=False)
    renderer = rm.MeshRenderer(resolution, supersample=2)
    entries, classes, objects = [], [], []
    try:
        for s, (name, raw) in enumerate(shapes.items()):
            mesh = rm.normalize_mesh(raw.extract_surface(algorithm='dataset_surface').triangulate())
            mesh.save(os.path.join(dest, 'meshes', f'{name}.ply'))
            schemes = demo_set['colours'](name)
            for c, scheme in enumerate(schemes):
                obj, class_index = f'{name}_c{c}', c * len(shapes) + s  # 0..S-1: every shape, as grids show
                renderer.set_mesh(mesh, rgb=point_colours(np.asarray(mesh.points), scheme))
                cam = rm.sphere_cameras(views, seed=seed * 1000 + s * len(PALETTE) + c, **demo_set['band'])
                for fname, png, label in rm.render_views(renderer, cam, f'{obj}/'):
                    zf.writestr(fname, png)
                    entries.append((fname, label))
                    classes.append((fname, class_index))
                objects.append(
                    dict(
                        name=obj,
                        mesh=f'meshes/{name}.ply',
                        colours=scheme,
                        class_index=class_index,
                        class_name=name if len(schemes) == 1 else obj,
                    )
                )
                progress.update()
    finally:
        progress.close()
        renderer.close()
    return entries, classes, objects


def class_names(objects: list[dict]) -> list[str]:
    """The class names in class-index order."""
    return [o['class_name'] for o in sorted(objects, key=lambda o: o['class_index'])]


def build_demo(
    dest: str, name='shapes', resolution=DEMO_RESOLUTION, views=None, seed=0, force=False, log=print
) -> dict:
    """Render the demo set `name` (DEMO_SETS) into `dest` (cached); returns meta.json's content.
    views: per object (default: the set's)."""
    if name not in DEMO_SETS:
        raise ValueError(f'unknown demo set {name!r}; choose one of {", ".join(DEMO_SETS)}')
    demo_set = DEMO_SETS[name]
    views = views or demo_set['views']
    options = dict(version=DEMO_VERSION, set=name, resolution=resolution, views=views, seed=seed)
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
            entries, classes, objects = _render_objects(rm, zf, dest, demo_set, resolution, views, seed)
            zf.writestr('dataset.json', rm.dataset_json(entries, classes, class_names(objects)))
        os.replace(tmp, os.path.join(dest, 'dataset.zip'))  # atomic: no half-written archive
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    meta = dict(
        options=options,
        num_images=len(entries),
        num_objects=len(objects),
        class_names=class_names(objects),
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
