"""Dataset tool: convert, validate, from-nerfstudio, render, demo. `python scripts/dataset_tool.py --help`.

Every dataset this tool writes is a zip of PNGs with `dataset.json` in the 25-float label form
(docs/conventions.md), written atomically: a failure leaves no half-written archive.
"""

import functools
import json
import os
import sys
import time
import zipfile

import click

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# numpy, torch, PIL and pyvista are imported inside the commands: a cached `demo` returns at once.


def clear_errors(fn):
    """Turn the data's own errors into one-line click errors (exit status 1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if type(e).__name__ in ('DatasetError', 'RenderError'):  # by name: no heavy import here
                raise click.ClickException(str(e)) from None
            raise

    return wrapper


class AtomicZip:
    """A zip written to a temporary name and renamed into place only when complete."""

    def __init__(self, dest: str):
        if not dest.endswith('.zip'):
            from training.dataset import DatasetError

            raise DatasetError(f'--dest {dest}: the output must be a .zip file')
        os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
        self.dest, self.tmp = dest, f'{dest}.tmp{os.getpid()}'

    def __enter__(self) -> zipfile.ZipFile:
        self.zf = zipfile.ZipFile(self.tmp, 'w', compression=zipfile.ZIP_STORED)
        return self.zf

    def __exit__(self, exc_type, exc, tb):
        self.zf.close()
        if exc_type is None:
            os.replace(self.tmp, self.dest)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)


def png_bytes(img) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format='PNG', compress_level=3)
    return buf.getvalue()


@click.group()
def cli():
    """Build, check and convert posed image datasets for PGRF."""


# ----------------------------------------------------------------------------


@cli.command()
@click.option(
    '--source', required=True, help='Folder, zip, or quoted glob of images (with dataset.json at its root).'
)
@click.option('--dest', required=True, help='Output .zip.')
@click.option('--resolution', type=click.IntRange(min=1), help='Output size R (R x R); default: keep.')
@click.option('--crop', type=click.Choice(['center', 'pad']), help='Policy for non-square images.')
@click.option('--channels', type=click.Choice(['rgb', 'rgba']), default='rgb', show_default=True)
@click.option('--background', default='white', show_default=True, help='RGBA -> RGB (and pad) colour.')
@click.option('--max-images', type=click.IntRange(min=1), help='Keep the first N images (sorted names).')
@clear_errors
def convert(source, dest, resolution, crop, channels, background, max_images):
    """Normalize images to one square resolution; labels are carried (crop/pad updates the intrinsics)."""
    import dataset_ops as ops
    import numpy as np
    import tqdm

    from training.dataset import DatasetError, parse_background

    bg = parse_background(background)
    names, read, json_raw, where = ops.open_source(source)
    names = names[:max_images] if max_images else names
    if not names:
        raise DatasetError(f'{source}: no images found; check the path')
    labels, fmt = ops.labels_for(names, json_raw, where)
    classes, class_names = ops.classes_for(names, json_raw, where)  # carried unchanged
    entries, out_size = [], None
    with AtomicZip(dest) as zf:
        for i, name in enumerate(tqdm.tqdm(names, desc='convert', unit='img', disable=None, leave=False)):
            img = ops.load_for_convert(read(name), f'{source}:{name}', channels, bg)
            W, H = img.size
            box = ops.square_box(W, H, crop, f'{source}:{name}')
            img = ops.square_image(img, box, resolution, bg)
            if out_size not in (None, img.size[0]):
                raise DatasetError(
                    f'{source}:{name}: becomes {img.size[0]}^2, earlier images {out_size}^2; pass --resolution'
                )
            out_size = img.size[0]
            out_name = os.path.splitext(name)[0] + '.png'
            zf.writestr(out_name, png_bytes(img))
            if labels is not None:
                label = labels[i].astype(np.float64)
                K = label[16:].reshape(1, 3, 3)
                if fmt == 'angles' and W != H:  # the angles form's fov is vertical, pixels square
                    K[:, 0, 0] *= H / W
                label[16:] = ops.crop_intrinsics(K, W, H, box).reshape(-1)
                entries.append((out_name, label))
        if labels is not None:
            zf.writestr('dataset.json', ops.write_labels_json(entries, classes, class_names))
    note = '' if labels is not None else ' (no dataset.json in the source: the output has no labels)'
    click.echo(f'wrote {len(names)} images at {out_size}x{out_size} ({channels}) to {dest}{note}')


# ----------------------------------------------------------------------------


@cli.command()
@click.option('--data', required=True, help='Dataset folder or zip.')
@click.option('--plot', help='PNG of the yaw/pitch distribution; default: <data>_poses.png.')
@clear_errors
def validate(data, plot):
    """Check every image and label and print a report: the thing to run before a long training run."""
    import dataset_ops as ops
    import numpy as np
    import tqdm

    from training.dataset import ImageFolderDataset

    ds = ImageFolderDataset(data, check_all_sizes=True)
    for i in tqdm.trange(ds.num_raw_images, desc='validate', unit='img', disable=None, leave=False):
        ds.load_image(i)  # decodes every image: names a corrupt file
    s = ops.pose_statistics(ds.labels)

    def fmt(d):
        return f'mean {d["mean"]:.4g}, min {d["min"]:.4g}, max {d["max"]:.4g}, std {d["std"]:.3g}'

    yaw_bins = np.histogram(s['yaw'], bins=8, range=(-180, 180))[0]
    pitch_bins = np.histogram(s['pitch'], bins=6, range=(0, 180))[0]
    lines = [
        f'dataset      {data}',
        f'images       {ds.num_raw_images}',
        f'resolution   {ds.resolution}x{ds.resolution}, output channels {ds.num_channels}',
        f'labels       {ds.label_format} form',
        f'radius       {fmt(s["radius"])}',
        f'look-at miss {fmt(s["look_at_miss"])} (distance of the optical axis from the origin)',
        f'fov (deg)    {fmt(s["fov_deg"])}',
        f'principal    cx {fmt(s["cx"])}; cy {fmt(s["cy"])}',
        f'yaw (deg)    {fmt(s["yaw_deg"])}; per 45 deg from -180: {yaw_bins.tolist()}',
        f'pitch (deg)  {fmt(s["pitch_deg"])}; per 30 deg from 0 (above): {pitch_bins.tolist()}',
    ]
    if s['facing_away']:
        lines.append(
            f'WARNING      {s["facing_away"]} cameras look away from the origin: OpenGL/Blender axes? '
            f'use from-nerfstudio or flip the y and z columns of cam2world'
        )
    plot = plot or os.path.splitext(os.path.normpath(data))[0] + '_poses.png'
    ops.pose_plot(s['yaw'], s['pitch'], plot, ds.name)
    lines.append(f'pose plot    {plot}')
    click.echo('\n'.join(lines))


# ----------------------------------------------------------------------------


@cli.command('from-nerfstudio')
@click.option(
    '--source', required=True, help='nerfstudio transforms.json, or its folder (images relative to it).'
)
@click.option('--dest', required=True, help='Output .zip (images as PNG + dataset.json).')
@click.option(
    '--radius',
    type=float,
    help='Mean camera distance after rescaling; default: render_multiview.MEGASCANS_RADIUS.',
)
@click.option(
    '--up', type=click.Choice(['auto', 'y', 'z']), default='auto', show_default=True, help='World up.'
)
@clear_errors
def from_nerfstudio(source, dest, radius, up):
    """Convert nerfstudio poses (OpenGL cameras) to our labels, recentred on the cameras' common look-at
    point, rotated so up is +y and scaled so the mean camera distance is --radius (the Megascans protocol's
    3.5 puts an object that fills ~70% of a 45-degree view into [-1, 1]^3)."""
    import dataset_ops as ops
    import numpy as np
    import render_multiview as rm

    from training.dataset import DatasetError, check_labels

    radius = rm.MEGASCANS_RADIUS if radius is None else radius
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, 'transforms.json')):
            raise DatasetError(f'--source {source}: the folder has no transforms.json; point --source at it')
        source = os.path.join(source, 'transforms.json')
    try:
        with open(source) as f:
            transforms = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(
            f'{source}: cannot read the JSON ({e}); point --source at transforms.json'
        ) from None
    frames = ops.nerfstudio_frames(transforms, source)
    if any(abs(float(transforms.get(k, 0) or 0)) > 1e-6 for k in ('k1', 'k2', 'p1', 'p2')):
        click.echo(
            'warning: the cameras have lens distortion; images are used undistorted as they are', err=True
        )
    poses, record = ops.normalize_poses(np.stack([f[1] for f in frames]), radius, up)
    root = os.path.dirname(os.path.abspath(source))
    entries = []
    with AtomicZip(dest) as zf:
        for (path, _, K, _), M in zip(frames, poses):
            full = path if os.path.isabs(path) else os.path.join(root, path)
            if not os.path.splitext(full)[1]:
                full += '.png'
            if not os.path.isfile(full):
                raise DatasetError(f'{source}: frame image {path} not found at {full}; fix file_path')
            name = os.path.splitext(os.path.relpath(full, root))[0].replace(os.sep, '/') + '.png'
            img = ops.load_for_convert(open(full, 'rb').read(), full, 'rgba', (255, 255, 255))
            zf.writestr(name, png_bytes(img))
            entries.append((name, np.concatenate([M.reshape(-1), K.reshape(-1)])))
        labels = np.stack([e[1] for e in entries])
        check_labels(labels, [e[0] for e in entries], source)
        zf.writestr('dataset.json', ops.write_labels_json(entries))
    click.echo(f'wrote {len(entries)} images to {dest}; world transform {json.dumps(record)}')
    click.echo('next: dataset_tool.py convert --crop center --resolution R, then validate')


# ----------------------------------------------------------------------------


@cli.command()
@click.option(
    '--mesh', 'meshes', required=True, multiple=True, help='Mesh file(s) (any format pyvista/trimesh read).'
)
@click.option('--dest', required=True, help='Output folder: dataset.zip, meshes/ (normalized), meta.json.')
@click.option('--views', type=click.IntRange(min=1), default=128, show_default=True, help='Views per mesh.')
@click.option('--resolution', type=click.IntRange(min=8), default=256, show_default=True)
@click.option(
    '--radius', type=float, help='Camera sphere radius; default: render_multiview.MEGASCANS_RADIUS.'
)
@click.option('--fov', type=float, help='Field of view, degrees; default: render_multiview.MEGASCANS_FOV.')
@click.option('--color', default='#bfbfbf', show_default=True, help='Colour of meshes without their own.')
@click.option('--seed', type=int, default=0, show_default=True)
@clear_errors
def render(meshes, dest, views, resolution, radius, fov, color, seed):
    """Render meshes by the paper's Megascans protocol: scaled into [-1, 1]^3, cameras uniform on a sphere."""
    import numpy as np
    import render_multiview as rm

    from training.dataset import parse_background

    radius = rm.MEGASCANS_RADIUS if radius is None else radius  # paper App. D.1
    fov = rm.MEGASCANS_FOV if fov is None else fov
    missing = [path for path in meshes if not os.path.isfile(path)]
    if missing:
        raise rm.RenderError(f'--mesh {missing[0]}: the file does not exist; check the path')
    colour = tuple(c / 255 for c in parse_background(color))
    start, entries = time.time(), []
    os.makedirs(os.path.join(dest, 'meshes'), exist_ok=True)
    renderer = rm.MeshRenderer(resolution)
    try:
        with AtomicZip(os.path.join(dest, 'dataset.zip')) as zf:
            for m, path in enumerate(meshes):
                mesh = rm.normalize_mesh(rm.load_mesh(path))
                stem = os.path.splitext(os.path.basename(path))[0]
                mesh.save(os.path.join(dest, 'meshes', f'{stem}.ply'))
                has_rgb = 'RGB' in mesh.point_data or 'rgb' in mesh.point_data
                rgb = (
                    np.asarray(mesh.point_data['RGB' if 'RGB' in mesh.point_data else 'rgb'])
                    if has_rgb
                    else None
                )
                renderer.set_mesh(mesh, rgb=rgb[:, :3] if rgb is not None else None, color=colour)
                cam = rm.sphere_cameras(views, radius, fov, seed=seed * 100003 + m)
                for name, png, label in rm.render_views(renderer, cam, f'{stem}/'):
                    zf.writestr(name, png)
                    entries.append((name, label))
            zf.writestr('dataset.json', rm.dataset_json(entries))
    finally:
        renderer.close()
    meta = dict(meshes=list(meshes), views=views, resolution=resolution, radius=radius, fov=fov, seed=seed)
    with open(os.path.join(dest, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    click.echo(
        f'rendered {len(entries)} images of {len(meshes)} meshes in {time.time() - start:.1f} s -> {dest}'
    )


@cli.command()
@click.option(
    '--set',
    'demo_set',
    type=click.Choice(['shapes', 'classic']),
    default='shapes',
    show_default=True,
    help='shapes: 5 shapes, one plain colour each (the demo preset); classic: 8 shapes x 4 '
    'colourings from the whole sphere (the demo_classic preset).',
)
@click.option(
    '--dest', help='Output folder (cached)  [default: data/demo for shapes, data/demo_classic for classic]'
)
@click.option(
    '--resolution',
    type=click.IntRange(min=8),
    help='Image size R (R x R)  [default: 32, what the demo presets train on]',
)
@click.option('--views', type=click.IntRange(min=1), help="Views per object  [default: the set's, 128 or 48]")
@click.option('--force', is_flag=True, help='Re-render even if the cached dataset matches.')
@clear_errors
def demo(demo_set, dest, resolution, views, force):
    """Render a built-in demo dataset from meshes that ship with pyvista (cached), with class labels."""
    import demo_data

    dest = dest or ('data/demo' if demo_set == 'shapes' else f'data/demo_{demo_set}')
    resolution = resolution or demo_data.DEMO_RESOLUTION
    demo_data.build_demo(dest, demo_set, resolution=resolution, views=views, force=force, log=click.echo)


if __name__ == '__main__':
    cli()
