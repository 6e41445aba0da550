"""Export images, videos, interpolations, depth and meshes from a trained generator.

Examples:
  python gen_samples.py images   --network snap.pt --seeds 0-7 --camera 0:90,40:80 --outdir out
  python gen_samples.py video    --network snap.pt --seeds 0-3 --trajectory orbit --frames 120 --outdir out
  python gen_samples.py interp   --network snap.pt --seeds 0,5,9 --trajectory orbit --outdir out
  python gen_samples.py depth    --network snap.pt --seeds 0-3 --outdir out
  python gen_samples.py geometry --network snap.pt --seeds 0 --resolution 256 --format glb --outdir out
"""

import functools
import os
import sys

import click

from torch_utils import threads

# Idle OpenMP threads sleep instead of spinning, so this beside a training run shares the cores
# gracefully (torch_utils/threads.py). It must run before torch loads; imported by a process that has
# torch already (the tests), it leaves that process's threads alone.
if 'torch' not in sys.modules:
    threads.configure()

import dnnlib  # noqa: E402
from export import commands, generate, geometry, utils  # noqa: E402
from torch_utils import checkpoint  # noqa: E402


def _seeds(ctx, param, value):
    try:
        return utils.parse_seeds(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _resolution(ctx, param, value):
    if value is not None and not 2 <= value <= 4096:
        raise click.BadParameter(f'{value} is outside [2, 4096]')
    return value


def common_options(fn):
    """Options every subcommand shares: the snapshot, seeds, output folder, truncation and cameras."""
    options = [
        click.option(
            '--network', 'network', required=True, metavar='PATH', help='Snapshot (.pt) holding G_ema.'
        ),
        click.option('--seeds', callback=_seeds, default='0', show_default=True, help='Seeds, e.g. 0-3,7.'),
        click.option('--outdir', required=True, type=click.Path(file_okay=False), help='Output folder.'),
        click.option('--trunc', 'trunc', type=float, default=1.0, show_default=True, help='Truncation psi.'),
        click.option(
            '--trunc-cutoff', type=click.IntRange(min=0), default=None, help='Truncate only the first N ws.'
        ),
        click.option('--dataset-preset', default=None, help='Camera radius/fov/prior from this preset.'),
        click.option('--radius', type=float, default=None, help='Camera distance (overrides the preset).'),
        click.option(
            '--fov', type=float, default=None, help='Field of view in degrees (overrides the preset).'
        ),
        click.option('--device', default='cpu', show_default=True, help='torch device, e.g. cuda.'),
        click.option(
            '--class',
            'class_name',
            default=None,
            metavar='K|NAME',
            help='Class (index or name) of a class-conditional network; without it seed s gets class s mod K.',
        ),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), fn)


def run(
    command,
    network,
    seeds,
    outdir,
    trunc,
    trunc_cutoff,
    dataset_preset,
    radius,
    fov,
    device,
    class_name,
    **kwargs,
):
    """Load, resolve cameras, run one export command; every user mistake ends as one click error line."""
    try:
        generate.check_device(device)
        G, options = checkpoint.load_network(network, 'G_ema', device, with_options=True)
        class_index = generate.resolve_class(G, options, class_name)
        cameras = None  # meshes need no camera
        if command is not commands.mesh:
            cameras = generate.camera_settings(options, dataset_preset, radius, fov)
        mult = kwargs.pop('samples_mult', 1)
        render_kwargs = dict(num_samples_multiplier=mult) if mult != 1 else {}
        cfg = dnnlib.EasyDict(
            trunc=trunc, trunc_cutoff=trunc_cutoff, cameras=cameras, render_kwargs=render_kwargs,
            class_index=class_index,
        )  # fmt: skip
        os.makedirs(outdir, exist_ok=True)
        result = command(G, cfg, seeds, outdir, device=device, **kwargs)
    except (generate.ExportError, checkpoint.CheckpointError, geometry.EmptyIsosurfaceError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f'wrote {len(result)} files to {outdir}')


camera_option = click.option(
    '--camera',
    default='front',
    show_default=True,
    help='front, random[:K] (the prior), or YAW:PITCH,... in degrees.',
)
resolution_option = click.option(
    '--resolution',
    type=int,
    callback=_resolution,
    default=None,
    help='Image size (default: training resolution).',
)
samples_option = click.option(
    '--samples-mult',
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help='Multiply the samples per ray (smoother renders, proportionally slower).',
)
trajectory_choice = click.Choice(sorted(generate.cams.TRAJECTORIES))


@click.group()
def main():
    """Export samples from a PGRF snapshot."""


@main.command()
@common_options
@camera_option
@resolution_option
@samples_option
@click.option('--foreground-only', is_flag=True, help='No background model; PNGs get the opacity as alpha.')
@click.option('--grid/--no-grid', default=True, show_default=True, help='Also write a grid of all images.')
def images(**kw):
    """Per-seed PNGs (one per view) and a grid."""
    run(commands.images, **kw)


@main.command()
@common_options
@click.option('--trajectory', type=trajectory_choice, default='orbit', show_default=True, help='Camera path.')
@click.option('--frames', type=click.IntRange(min=1), default=120, show_default=True, help='Video length.')
@click.option('--fps', type=click.IntRange(min=1), default=30, show_default=True, help='Frames per second.')
@resolution_option
@samples_option
@click.option('--grid-cols', type=click.IntRange(min=1), default=None, help='Columns of the seed grid.')
def video(**kw):
    """An mp4 along a camera trajectory: one seed, or a grid of seeds."""
    run(commands.video, **kw)


@main.command()
@common_options
@click.option(
    '--frames-per-seed', type=click.IntRange(min=1), default=30, show_default=True, help='Frames per step.'
)
@click.option('--fps', type=click.IntRange(min=1), default=30, show_default=True, help='Frames per second.')
@click.option(
    '--trajectory', type=trajectory_choice, default=None, help='Move the camera while interpolating.'
)
@click.option('--loop', is_flag=True, help='Return to the first seed at the end.')
@resolution_option
@samples_option
def interp(**kw):
    """An mp4 interpolating linearly in w between consecutive seeds."""
    if len(kw['seeds']) < 2:
        raise click.BadParameter(
            'interpolation needs at least two seeds, e.g. --seeds 0,1', param_hint='--seeds'
        )
    run(commands.interp, **kw)


@main.command()
@common_options
@camera_option
@resolution_option
@samples_option
def depth(**kw):
    """Depth and opacity maps of the foreground: colourised PNGs and raw float32 .npy [H, W].

    Depth is the expected distance along each pixel's ray (world units), opacity the accumulated alpha.
    """
    run(commands.depth, **kw)


def _crop(ctx, param, value):
    try:
        return None if value is None else geometry.parse_crop(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@main.command(name='geometry')
@common_options
@click.option(
    '--resolution', type=click.IntRange(8, 1024), default=256, show_default=True, help='Grid size N (N^3).'
)
@click.option(
    '--threshold', type=float, default=None, help='Density iso-level [default: Otsu split of the density].'
)
@click.option(
    '--format',
    'fmt',
    type=click.Choice(geometry.MESH_FORMATS),
    default='ply',
    show_default=True,
    help='Mesh file type (all keep vertex colours).',
)
@click.option('--crop', callback=_crop, default=None, help='Box x0,x1,y0,y1,z0,z1 (default: the scene box).')
@click.option(
    '--method', type=click.Choice(geometry.MC_METHODS), default=geometry.DEFAULT_MC_METHOD, show_default=True
)
@click.option(
    '--cap/--no-cap', default=True, show_default=True, help='Close surfaces cut by the box (watertight mesh).'
)
@click.option('--render/--no-render', default=True, show_default=True, help='Also write a PNG of the mesh.')
@click.option(
    '--render-resolution', type=click.IntRange(16, 4096), default=512, show_default=True, help='PNG size.'
)
@click.option(
    '--chunk-size',
    type=click.IntRange(min=1024),
    default=1 << 18,
    show_default=True,
    help='Points per query.',
)
def geometry_cmd(**kw):
    """Marching-cubes meshes with vertex colours (.ply/.obj/.glb), stats (.json) and a PNG render."""
    run(commands.mesh, **kw)


if __name__ == '__main__':
    main()
