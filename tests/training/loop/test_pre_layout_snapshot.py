"""A snapshot written by the code before the package layout changed still loads and resumes.

tests/fixtures/pre_layout/ holds a tiny run's 4-step snapshot and a summary of where that run was after 12
steps, both written by the older checkout (tests/fixtures/pre_layout/make_fixture.py says how). Resuming the
snapshot with today's code must arrive at the same 12-step state: the class names it stores resolve
through dnnlib/registry.py, its module states fit today's networks, and training continues exactly.
"""

import importlib.util
import json
import os
import shutil

import pytest
import torch
from click.testing import CliRunner
from repo_paths import TESTS_DIR
from test_train_fixtures import cli_args

import train
from torch_utils import checkpoint
from training.loop import run_dir

HERE = os.path.join(TESTS_DIR, 'fixtures', 'pre_layout')
SNAPSHOT = os.path.join(HERE, 'snapshot-000000.016.pt')
# The class paths files held before the stable names existed; after a move they must stay aliases.
OLD_PATHS = {
    'pgrf.Generator': 'training.generator.Generator',
    'pgrf.Discriminator': 'training.discriminator.PatchDiscriminator',
    'pgrf.AugmentPipe': 'training.augment.AugmentPipe',
}


def _setup(tmp_path) -> dict:
    shutil.copytree(os.path.join(HERE, 'data'), tmp_path / 'data')
    shutil.copy(os.path.join(HERE, 'tiny_dataset.yaml'), tmp_path / 'tiny_dataset.yaml')
    lines = open(os.path.join(HERE, 'tiny.yaml'), encoding='utf-8').read().splitlines()
    lines[0] = f'dataset: {tmp_path / "tiny_dataset.yaml"}'  # the maker's temporary path, replaced
    (tmp_path / 'tiny.yaml').write_text('\n'.join(lines) + '\n')
    return dict(data=str(tmp_path / 'data'), cfg=str(tmp_path / 'tiny.yaml'), outdir=str(tmp_path / 'runs'))


def _resume_to_the_end(setup, snapshot: str) -> dict:
    # The older code rendered new fakes for Dmain (the public code's phase order): resume with that order.
    args = cli_args(
        setup, '--metrics', 'none', '--kimg', '0.048', '--resume', snapshot, '--reuse-fakes', 'false'
    )
    result = CliRunner().invoke(train.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [run] = run_dir.list_runs(setup['outdir'])
    return checkpoint.load(run_dir.list_snapshots(run)[-1])


def _state_summary(data: dict) -> dict:
    spec = importlib.util.spec_from_file_location('make_fixture', os.path.join(HERE, 'make_fixture.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.state_summary(data)


def _assert_reaches_the_stored_state(data: dict) -> None:
    with open(os.path.join(HERE, 'final_state.json'), encoding='utf-8') as f:
        expected = json.load(f)
    got = _state_summary(data)
    assert got['progress'] == expected['progress']
    assert got['tensors'].keys() == expected['tensors'].keys()
    for key, (total, norm) in expected['tensors'].items():
        # Exact on the machine that wrote it; the tolerance only absorbs another CPU's float rounding.
        assert got['tensors'][key] == pytest.approx([total, norm], rel=1e-4, abs=1e-6), key


def test_a_pre_layout_snapshot_resumes_to_the_same_state(tmp_path):
    _assert_reaches_the_stored_state(_resume_to_the_end(_setup(tmp_path), SNAPSHOT))


def test_a_snapshot_naming_classes_by_their_old_paths_still_loads(tmp_path):
    data = checkpoint.load(SNAPSHOT)
    for state in data['modules'].values():
        state['class_name'] = OLD_PATHS.get(state['class_name'], state['class_name'])
    assert {s['class_name'] for s in data['modules'].values()} >= set(OLD_PATHS.values())
    old = str(tmp_path / 'old-names.pt')
    checkpoint.save(old, data)
    G = checkpoint.load_network(old, 'G_ema')
    assert isinstance(G, torch.nn.Module) and checkpoint.class_name_of(G) == 'pgrf.Generator'
    _assert_reaches_the_stored_state(_resume_to_the_end(_setup(tmp_path / 'run'), old))
