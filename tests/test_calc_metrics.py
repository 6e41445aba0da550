"""calc_metrics.py on a saved tiny Generator: standalone numbers equal the in-training call's."""

import json
import math
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import calc_metrics
from metrics import metric_main
from torch_utils import checkpoint
from training.cameras import angles_to_camera
from training.generator import Generator

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


def _make_dataset(root, n=12, res=16):
    os.makedirs(root)
    g = np.random.RandomState(0)
    cams = angles_to_camera(torch.linspace(-0.5, 0.5, n), math.pi / 2, 1.5, 40)
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
    options = dict(dataset_kwargs=dataset_kwargs)
    data = dict(format_version=checkpoint.FORMAT_VERSION, modules={'G_ema': checkpoint.module_state(G)})
    checkpoint.save(str(run_dir / 'network-snapshot-000004.pt'), dict(data, training_options=options))
    (run_dir / 'training_options.json').write_text(json.dumps(options))
    return run_dir, G.train(), dataset_kwargs  # in training, G_ema may be in train mode


def test_standalone_equals_in_training(run):
    run_dir, G, dataset_kwargs = run
    in_training = metric_main.calc_metric(
        'swd1k', G=G, dataset_kwargs=dataset_kwargs, num_gpus=1, rank=0, device='cpu', batch_gen=64
    ).results  # G in train mode (ray jitter on): calc_metric evaluates in eval mode
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
    for args, words in cases:
        result = runner.invoke(calc_metrics.main, args + ['--quiet'])
        assert result.exit_code != 0 and words in (result.output + str(result.exception)), (
            args,
            result.output,
        )
    listed = runner.invoke(calc_metrics.main, ['--list'])
    assert 'fid50k_full' in listed.output and 'fid<N>k_full' in listed.output


@pytest.mark.slow
def test_training_loop_and_cli_agree_on_a_trained_snapshot(tmp_path, monkeypatch):
    from test_train_fixtures import cli_args, make_tiny_setup

    import train
    from training import run_dir as run_dirs

    monkeypatch.setenv('PGRF_CACHE_DIR', str(tmp_path / 'cache'))
    setup = make_tiny_setup(tmp_path, metrics=['swd1k', 'mvc'], snap=2)  # one snapshot: the last tick
    result = CliRunner().invoke(train.main, cli_args(setup), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [run] = run_dirs.list_runs(setup['outdir'])
    snapshot = os.path.basename(run_dirs.list_snapshots(run)[-1])
    logged = {}
    for m in ('swd1k', 'mvc'):
        lines = [json.loads(line) for line in open(os.path.join(run, f'metric-{m}.jsonl'))]
        logged[m] = [line for line in lines if line['snapshot_pkl'] == snapshot][-1]['results']
    result = CliRunner().invoke(calc_metrics.main, ['--run', run, '--metrics', 'swd1k,mvc', '--quiet'])
    assert result.exit_code == 0, result.output
    for m in ('swd1k', 'mvc'):
        standalone = json.loads(open(os.path.join(run, f'metric-{m}.jsonl')).read().splitlines()[-1])
        assert standalone['snapshot_pkl'] == snapshot
        assert standalone['results'] == pytest.approx(logged[m], rel=1e-6), m
