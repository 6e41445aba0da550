"""Nothing a file names runs: the closed class registry, the plain-data check, and crafted files fed to
every CLI that opens one (a marker file proves the named command never ran)."""

import json
import os
import sys

import pytest
import torch
from click.testing import CliRunner
from shared_doubles import TINY_G

import calc_metrics
import gen_samples
import train
from dnnlib import EasyDict, registry
from torch_utils import checkpoint
from training.networks.generator import Generator


def _command(marker) -> dict:
    """Constructor kwargs that make subprocess.run write `marker` if anything ever builds them."""
    return dict(args=[sys.executable, '-c', f'open({str(marker)!r}, "w").close()'])


def _crafted_module(marker) -> dict:
    return dict(class_name='subprocess.run', init_kwargs=_command(marker), state_dict={})


def _tiny_G_state() -> dict:
    torch.manual_seed(0)
    return checkpoint.module_state(Generator(**TINY_G))


def _one_line_error(result) -> str:
    assert result.exit_code != 0, result.output
    assert 'Traceback' not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), result.output
    return lines[0]


def test_unknown_names_are_refused_before_anything_is_imported(tmp_path, monkeypatch):
    marker = tmp_path / 'imported'
    (tmp_path / 'sideeffect_mod.py').write_text(f'open({str(marker)!r}, "w").close()\nclass Thing: pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ('sideeffect_mod.Thing', 'subprocess.Popen', 'builtins.eval', '', None, 3):
        with pytest.raises(registry.UnknownClassError, match='is not a class PGRF builds by name'):
            registry.resolve(name)
    assert not marker.exists() and 'sideeffect_mod' not in sys.modules


def test_stable_names_and_aliases_resolve_to_the_same_class():
    assert registry.resolve('pgrf.Generator') is Generator
    assert registry.resolve('training.generator.Generator') is Generator  # what format-1 snapshots hold
    assert registry.stable_name('training.discriminator.PatchDiscriminator') == 'pgrf.Discriminator'
    assert registry.name_of(Generator) == 'pgrf.Generator'
    assert registry.stable_name(f'{Generator.__module__}.Generator') == 'pgrf.Generator'  # where it lives now
    assert checkpoint.module_state(Generator(**TINY_G))['class_name'] == 'pgrf.Generator'
    with pytest.raises(registry.UnknownClassError, match='add it to dnnlib/registry.py'):
        registry.name_of(torch.nn.Linear)


def test_plain_data_check_is_on_kinds_not_keys():
    ok = dict(n=1, x=0.5, s='a', b=True, none=None, lst=[1, [2, 'x']], d=dict(any_new_option=(1, 2)))
    registry.check_plain(ok, 'G.init_kwargs')  # a key nobody has heard of passes: only kinds matter
    for bad, where in (
        (dict(t=torch.zeros(2)), "G.init_kwargs['t'] is a torch.Tensor"),
        (dict(d=dict(f=torch.float32)), "G.init_kwargs['d']['f'] is a torch.dtype"),
        (dict(lst=[1, b'raw']), "G.init_kwargs['lst'][1] is a builtins.bytes"),
        ({1: 2}, 'key 1 is a int'),
    ):
        with pytest.raises(registry.NotPlainDataError, match=__import__('re').escape(where)):
            registry.check_plain(bad, 'G.init_kwargs')
    from shared_doubles import TinyNet

    with pytest.raises(TypeError, match=r"test.TinyNet.init_kwargs\['options'\]\['dtype'\] is a torch.dtype"):
        checkpoint.module_state(TinyNet(options=EasyDict(dropout=0.0, dtype=torch.float16)))  # at save time


def test_crafted_snapshot_is_refused_by_load_and_build(tmp_path):
    marker = tmp_path / 'ran'
    crafted = _crafted_module(marker)
    with pytest.raises(
        checkpoint.CheckpointError, match='"subprocess.run" is not a class PGRF builds by name'
    ):
        checkpoint.build_module(crafted)
    checkpoint.save(tmp_path / 'evil.pt', dict(modules=dict(G_ema=crafted)))
    with pytest.raises(checkpoint.CheckpointError, match='nothing was imported or built'):
        checkpoint.load(tmp_path / 'evil.pt')
    state = _tiny_G_state()
    state['init_kwargs']['plane_channels'] = torch.tensor(4)  # a registered class, but not plain data
    with pytest.raises(
        checkpoint.CheckpointError, match=r"init_kwargs\['plane_channels'\] is a torch.Tensor"
    ):
        checkpoint.build_module(state)
    assert not marker.exists()


def test_format_1_snapshot_with_import_paths_still_loads(tmp_path):
    state = _tiny_G_state()
    state['class_name'] = 'training.generator.Generator'  # as format 1 wrote it
    checkpoint.save(tmp_path / 'v1.pt', dict(format_version=1, modules=dict(G_ema=state)))
    assert isinstance(checkpoint.load_network(tmp_path / 'v1.pt'), Generator)


def test_gen_samples_refuses_a_crafted_snapshot(tmp_path):
    marker = tmp_path / 'ran'
    checkpoint.save(tmp_path / 'evil.pt', dict(modules=dict(G_ema=_crafted_module(marker))))
    args = [
        'images',
        '--network',
        str(tmp_path / 'evil.pt'),
        '--seeds',
        '0',
        '--outdir',
        str(tmp_path / 'out'),
    ]
    line = _one_line_error(CliRunner().invoke(gen_samples.main, args, catch_exceptions=False))
    assert 'evil.pt' in line and 'subprocess.run' in line
    assert not marker.exists() and not (tmp_path / 'out').exists()


def test_calc_metrics_refuses_crafted_snapshots_and_options(tmp_path):
    marker = tmp_path / 'ran'
    checkpoint.save(tmp_path / 'evil.pt', dict(modules=dict(G_ema=_crafted_module(marker))))
    # A good G whose stored options name a dangerous "dataset" (calc_metrics builds the run's dataset).
    options = dict(dataset_kwargs=dict(class_name='subprocess.run', **_command(marker)))
    checkpoint.save(tmp_path / 'opts.pt', dict(modules=dict(G_ema=_tiny_G_state()), training_options=options))
    run = tmp_path / 'run'
    run.mkdir()
    checkpoint.save(run / 'network-snapshot-000000.pt', dict(modules=dict(G_ema=_tiny_G_state())))
    (run / 'training_options.json').write_text(json.dumps(options))
    for args, where in (
        (['--network', str(tmp_path / 'evil.pt')], 'evil.pt'),
        (['--network', str(tmp_path / 'opts.pt')], "['dataset_kwargs']"),
        (['--run', str(run)], 'training_options.json'),
    ):
        result = CliRunner().invoke(calc_metrics.main, [*args, '--metrics', 'swd'], catch_exceptions=False)
        line = _one_line_error(result)
        assert where in line and 'subprocess.run' in line, line
    assert not marker.exists()


def test_train_refuses_crafted_resume_file_options_and_preset(tmp_path):
    from test_train_fixtures import cli_args, make_tiny_setup

    marker = tmp_path / 'ran'
    setup = make_tiny_setup(tmp_path)
    checkpoint.save(tmp_path / 'evil.pt', dict(modules=dict(G=_crafted_module(marker))))
    line = _one_line_error(
        CliRunner().invoke(
            train.main, cli_args(setup, '--resume', str(tmp_path / 'evil.pt')), catch_exceptions=False
        )
    )
    assert line.startswith('Error: --resume: ') and 'subprocess.run' in line
    assert not os.path.exists(setup['outdir'])  # refused before a run directory was made
    # A run directory whose training_options.json was tampered with.
    run = tmp_path / 'runs' / '00000-tampered'
    run.mkdir(parents=True)
    (run / 'network-snapshot-000000.pt').write_bytes(b'')
    (run / 'training_options.json').write_text(json.dumps(dict(G_kwargs=_crafted_module(marker))))
    line = _one_line_error(
        CliRunner().invoke(train.main, cli_args(setup, '--resume', str(run)), catch_exceptions=False)
    )
    assert 'training_options.json' in line and 'subprocess.run' in line
    # A preset that names a class of its own.
    with open(setup['cfg'], 'a') as f:
        f.write(f'augment_kwargs: {json.dumps(dict(class_name="subprocess.run", **_command(marker)))}\n')
    line = _one_line_error(
        CliRunner().invoke(train.main, cli_args(setup, '--dry-run'), catch_exceptions=False)
    )
    assert 'class_name' in line, line
    assert not marker.exists()


class _CreatesOnUnpickle:
    """Unpickling this calls open(path, 'w'): the marker file appears if a loader ever unpickles."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_metric_cache_with_a_pickled_object_is_refused(tmp_path):
    import numpy as np

    from metrics import metric_utils

    marker = tmp_path / 'ran'
    path = tmp_path / 'stats.npz'
    np.savez(path, num_items=np.int64(2), all=np.array([_CreatesOnUnpickle(marker)], dtype=object))
    with pytest.raises(ValueError, match='allow_pickle=False'):
        metric_utils.FeatureStats.load(str(path), capture_all=True, capture_mean_cov=False)
    assert not marker.exists()


def test_run_written_with_import_paths_resumes_in_place(tmp_path):
    from test_train_fixtures import make_tiny_setup

    from training.loop import run_dir
    from training.options import launch

    setup = make_tiny_setup(tmp_path)
    resolve = dict(
        outdir=setup['outdir'], cfg=setup['cfg'], data=setup['data'], gpus=1, seed=0, desc=None, flags={}
    )
    c = launch.resolve_training_options(resume=None, **resolve)
    assert c.G_kwargs['class_name'] == 'pgrf.Generator'
    old = json.loads(json.dumps(c))
    for key, path in (
        ('G_kwargs', 'training.generator.Generator'), ('D_kwargs', 'training.discriminator.PatchDiscriminator'),
        ('dataset_kwargs', 'training.dataset.ImageFolderDataset'),
        ('camera_prior_kwargs', 'training.cameras.make_camera_prior'),
    ):  # fmt: skip
        old[key]['class_name'] = path  # what training_options.json held before stable names
    run = run_dir.make_run_dir(setup['outdir'], 'old')
    run_dir.write_options(run, old)
    open(os.path.join(run, run_dir.snapshot_name(16)), 'wb').close()
    resumed = launch.resolve_training_options(resume=run, **resolve)  # no "option G_kwargs differs" error
    assert resumed.G_kwargs['class_name'] == 'training.generator.Generator' and resumed.run_dir == run
    assert registry.resolve(resumed.D_kwargs['class_name']) is registry.resolve('pgrf.Discriminator')
