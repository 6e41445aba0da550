"""calc_metrics.py on a saved tiny Generator: standalone numbers equal the in-training call's."""

import json
import math
import os

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import calc_metrics
from metrics import metric_main
from torch_utils import checkpoint
from training.cameras import angles_to_camera
from training.networks.generator import Generator

TINY = dict(
    z_dim=8, w_dim=8, img_resolution=16, patch_resolution=4, plane_resolution=16, plane_channels=4,
    channel_base=64, channel_max=8, decoder_hidden=8, num_coarse=6, num_fine=6, scene_bounds=0.5,
    ray_start=1.0, ray_end=2.0, checkpoint_res=None,
)  # fmt: skip


def _tiny_G():
    torch.manual_seed(0)
    G = Generator(**TINY)
    with torch.no_grad():
        for p in G.decoder.parameters():
            p.normal_()
    return G


# The run's camera prior, as training records it in training_options (and passes it to in-training metrics).
PRIOR = dict(
    class_name='training.cameras.make_camera_prior', kind='normal', radius=1.5, fov=40.0, yaw_std=0.3
)


def _make_dataset(root, n=12, res=16, radius=1.5, fov=40):
    os.makedirs(root)
    g = np.random.RandomState(0)
    cams = angles_to_camera(torch.linspace(-0.5, 0.5, n), math.pi / 2, radius, fov)
    labels = []
    for i in range(n):
        img = (g.rand(res, res, 3) * 255).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, f'img{i:03d}.png'))
        labels.append([f'img{i:03d}.png', cams.select(i).to_label()[0].tolist()])
    with open(os.path.join(root, 'dataset.json'), 'w') as f:
        json.dump({'labels': labels}, f)


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv('PGRF_CACHE_DIR', str(tmp_path / 'cache'))
    _make_dataset(str(tmp_path / 'data'))
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    G = _tiny_G()
    dataset_kwargs = dict(
        class_name='training.dataset.ImageFolderDataset', path=str(tmp_path / 'data'), mirror=False
    )
    options = dict(dataset_kwargs=dataset_kwargs, camera_prior_kwargs=PRIOR)
    data = dict(format_version=checkpoint.FORMAT_VERSION, modules={'G_ema': checkpoint.module_state(G)})
    checkpoint.save(str(run_dir / 'network-snapshot-000004.pt'), dict(data, training_options=options))
    (run_dir / 'training_options.json').write_text(json.dumps(options))
    return run_dir, G.train(), dataset_kwargs  # in training, G_ema may be in train mode


def test_standalone_equals_in_training(run):
    run_dir, G, dataset_kwargs = run
    in_training = metric_main.calc_metric(
        'swd1k', G=G, dataset_kwargs=dataset_kwargs, camera_prior_kwargs=PRIOR, num_gpus=1, rank=0,
        device='cpu', batch_gen=64,
    ).results  # fmt: skip  # G in train mode (ray jitter on): calc_metric evaluates in eval mode
    assert G.training  # and restores the mode it found
    result = CliRunner().invoke(calc_metrics.main, ['--run', str(run_dir), '--metrics', 'swd1k', '--quiet'])
    assert result.exit_code == 0, result.output
    line = json.loads((run_dir / 'metric-swd1k.jsonl').read_text().splitlines()[-1])
    assert line['snapshot_pkl'] == 'network-snapshot-000004.pt'
    assert line['results'] == pytest.approx(dict(in_training), rel=1e-6)
    assert 'swd1k_avg' in result.output


def test_cli_errors(run, tmp_path):
    run_dir, _, _ = run
    runner = CliRunner()
    cases = [
        (['--metrics', 'swd1k'], 'exactly one of --network'),
        (['--run', str(run_dir), '--metrics', 'fid5O_full'], 'unknown'),
        (['--run', str(tmp_path / 'data')], 'no network-snapshot'),
        (['--network', str(run_dir / 'missing.pt')], 'no such file'),
        (['--run', str(run_dir), '--data', str(tmp_path / 'nowhere')], '--data'),
        (
            ['--run', str(run_dir), '--metrics', 'fid1k_full', '--feature-net', str(tmp_path / 'none.pth')],
            '--feature-net',
        ),
    ]
    (tmp_path / 'empty').mkdir()
    cases.append(
        (['--run', str(run_dir), '--metrics', 'swd1k', '--data', str(tmp_path / 'empty')], 'no images found')
    )
    (tmp_path / 'text.pt').write_text('not a snapshot\n')
    (tmp_path / 'zip.pt').write_bytes(b'PK\x03\x04 not really a zip')
    torch.save(dict(format_version=1, payload=Image.new('RGB', (2, 2))), tmp_path / 'pickled.pt')
    checkpoint.save(tmp_path / 'noG.pt', dict(modules={}))
    bare = dict(
        format_version=checkpoint.FORMAT_VERSION, modules={'G_ema': checkpoint.module_state(_tiny_G())}
    )
    checkpoint.save(tmp_path / 'bare.pt', bare)  # no training options: no camera radius/fov
    bad = [
        ('text.pt', 'not a PGRF checkpoint'), ('zip.pt', 'truncated or corrupt'),
        ('pickled.pt', 'pickled Python object'), ('noG.pt', 'has no network "G_ema"'),
    ]  # fmt: skip
    cases += [
        (['--network', str(tmp_path / name), '--data', str(tmp_path / 'data')], words) for name, words in bad
    ]
    cases.append(
        (['--network', str(tmp_path / 'bare.pt'), '--data', str(tmp_path / 'data')], '--dataset-preset')
    )
    for args, words in cases:
        result = runner.invoke(calc_metrics.main, args + ['--quiet'])
        assert result.exit_code != 0 and words in (result.output + str(result.exception)), (
            args,
            result.output,
        )
        assert isinstance(result.exception, SystemExit) and result.output.count('\n') == 1, result.output
    listed = runner.invoke(calc_metrics.main, ['--list'])
    assert 'fid50k_full' in listed.output and 'fid<N>k_full' in listed.output


@pytest.mark.slow
def test_training_loop_and_cli_agree_on_a_trained_snapshot(tmp_path, monkeypatch):
    from test_train_fixtures import cli_args, make_tiny_setup

    import train
    from training.loop import run_dir as run_dirs

    monkeypatch.setenv('PGRF_CACHE_DIR', str(tmp_path / 'cache'))
    # One tick of 16 images, so one snapshot evaluated once (snap is counted from tick 0). SWD on the 12
    # dataset images and as many fakes drawn from the run's camera prior is the cheapest metric that
    # renders G through that prior; the other metrics share the same fake-rendering path (render_fakes).
    setup = make_tiny_setup(tmp_path, metrics=['swd1k'], kimg=0.016, tick=0.016, snap=1)
    # G's camera differs from the labels' (radius 3.5, fov 45), as for plants256: the in-training call must
    # pass the run's camera prior, as calc_metrics.py does, or the two numbers differ.
    preset = tmp_path / 'tiny_dataset.yaml'
    text = preset.read_text().replace('radius: 3.5', 'radius: 2.5').replace('fov: 45.0', 'fov: 30.0')
    preset.write_text(
        text.replace('ray_start: 1.75', 'ray_start: 1.25').replace('ray_end: 5.25', 'ray_end: 3.75')
    )
    result = CliRunner().invoke(train.main, cli_args(setup), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [run] = run_dirs.list_runs(setup['outdir'])
    [snapshot_path] = run_dirs.list_snapshots(run)
    snapshot = os.path.basename(snapshot_path)
    lines = [json.loads(line) for line in open(os.path.join(run, 'metric-swd1k.jsonl'))]
    [logged] = [line['results'] for line in lines if line['snapshot_pkl'] == snapshot]  # evaluated once
    assert set(logged) == {'swd1k_16', 'swd1k_avg'} and math.isfinite(logged['swd1k_avg'])
    result = CliRunner().invoke(calc_metrics.main, ['--run', run, '--metrics', 'swd1k', '--quiet'])
    assert result.exit_code == 0, result.output
    standalone = json.loads(open(os.path.join(run, 'metric-swd1k.jsonl')).read().splitlines()[-1])
    assert standalone['snapshot_pkl'] == snapshot
    assert standalone['results'] == pytest.approx(logged, rel=1e-6)


def test_fakes_use_the_run_camera_radius_and_fov(tmp_path, monkeypatch):
    """A dataset labelled at radius 3.5, fov 45 (Megascans) and G built for radius 1 (rays 0.75-1.25)."""
    from metrics import metric_utils as mu
    from training.cameras import camera_to_angles, intrinsics_to_fov_deg

    _make_dataset(str(tmp_path / 'data'), radius=3.5, fov=45)
    torch.manual_seed(0)
    G = Generator(**dict(TINY, ray_start=0.75, ray_end=1.25, scene_bounds=0.475)).eval()
    with torch.no_grad():
        for p in G.decoder.parameters():
            p.normal_()
    prior = dict(class_name='training.cameras.make_camera_prior', kind='uniform_sphere', radius=1.0, fov=30.0)
    kwargs = dict(
        G=G, dataset_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=str(tmp_path / 'data')),
        device='cpu', batch_gen=8,
    )  # fmt: skip
    opts = mu.MetricOptions(**kwargs, camera_prior_kwargs=prior)
    out, camera, _, items = next(mu.render_fakes(opts, 8, 8, 16))
    yaw, pitch, radius = camera_to_angles(camera.cam2world)
    assert torch.allclose(radius, torch.ones(8))
    assert torch.allclose(intrinsics_to_fov_deg(camera.intrinsics), torch.full([8], 30.0))
    dataset_yaw, dataset_pitch, _ = camera_to_angles(mu.get_dataset(opts).cameras().cam2world)
    assert all(torch.isclose(dataset_yaw, y, atol=1e-5).any() for y in yaw)  # the dataset's view directions
    assert torch.allclose(pitch, dataset_pitch[:8], atol=1e-5)
    spatial_std = lambda image: image.flatten(2).std(dim=2).mean(dim=1)  # noqa: E731 [N]: 0 for a flat image
    assert (spatial_std(out.image) > 0.02).all()  # every fake shows G's scene
    with pytest.warns(UserWarning, match='no radius/fov'):
        raw, raw_camera, _, _ = next(mu.render_fakes(mu.MetricOptions(**kwargs), 8, 8, 16))
    raw_radius = camera_to_angles(raw_camera.cam2world)[2]  # the raw labels: every sample misses G's box
    assert torch.allclose(raw_radius, torch.full([8], 3.5)) and 3.5 - 1.25 > math.sqrt(3) * 0.475
    assert not torch.allclose(raw.image, out.image, atol=0.05)


def test_camera_prior_of_the_run():
    from training.dataset import load_dataset_preset

    demo = load_dataset_preset('demo')
    expected = dict(
        class_name='training.cameras.make_camera_prior', kind=demo['camera_prior'], radius=demo['radius'],
        fov=demo['fov'], **demo['camera_prior_kwargs'],
    )  # fmt: skip
    resolve = calc_metrics.resolve_camera_prior_kwargs
    assert resolve(dict(camera_prior_kwargs=PRIOR), None) == PRIOR  # what training used
    assert resolve(dict(dataset_preset=demo), None) == expected
    assert resolve(dict(dataset='demo'), None) == expected
    assert resolve(dict(camera_prior_kwargs=PRIOR), 'demo') == expected  # --dataset-preset overrides
    with pytest.raises(click.ClickException, match='nosuch'):
        resolve({}, 'nosuch')
