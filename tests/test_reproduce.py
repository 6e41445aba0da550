"""scripts/reproduce.py --quick end to end: every arm trains (train.py subprocesses) and is scored; results.jsonl,
summary.md and the plots are well-formed; a failed arm is reported while the others go on; a rerun resumes.

FID runs on a tiny injected feature network (the real Inception weights are not available to tests); the
metric code around it is the real one.
"""

import json
import math
import os
import shutil
import sys

import PIL.Image
import pytest
import torch
from click.testing import CliRunner

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'scripts'))

import reproduce  # noqa: E402
import reproduce_report  # noqa: E402

QUICK_RUNS = {'beta-hm-output-r16', 'uniform-hm-output-r16', 'discrete-hm-output-r16', 'beta-hm-input-r16',
              'beta-nohm-r16', 'beta-concat-r16', 'beta-hm-output-r8'}  # fmt: skip


class TinyFeatureNet(torch.nn.Module):
    """Pooled colours through a fixed random projection: a cheap stand-in for Inception's pool_3."""

    feature_dim, tag = 8, 'tiny-test-net'

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(12, self.feature_dim)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, images):  # uint8 [N, 3, H, W] -> [N, 8]
        x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 2).flatten(1)
        return self.proj(x)


def _lines(outdir):
    with open(os.path.join(outdir, 'results.jsonl')) as f:
        return [json.loads(line) for line in f]


def _train_commands(outdir):
    """Every train.py command line the reproduction ran, from its per-run logs."""
    logs = os.path.join(outdir, 'logs')
    found = []
    for name in sorted(os.listdir(logs)):
        with open(os.path.join(logs, name)) as f:
            found += [(name, line) for line in f if line.startswith('$ ')]
    return found


@pytest.fixture(scope='module')
def quick_all(tmp_path_factory):
    """`all --quick` with one arm made to fail (an unreadable snapshot where its run would resume)."""
    outdir = str(tmp_path_factory.mktemp('reproduce'))
    env = pytest.MonkeyPatch()
    env.setenv('PGRF_CACHE_DIR', os.path.join(outdir, 'cache'))
    broken = os.path.join(outdir, 'runs', 'beta-hm-output-r8-seed0', '00000-broken')
    os.makedirs(broken)
    with open(os.path.join(broken, 'network-snapshot-000000.pt'), 'wb') as f:
        f.write(b'not a snapshot')
    plan = reproduce.make_plan(outdir, 'demo', None, quick=True)
    failures = reproduce.reproduce('all', plan, seeds=1, feature_net=TinyFeatureNet())
    yield outdir, plan, failures
    env.undo()


@pytest.mark.slow
def test_quick_all_scores_every_arm_and_reports_the_failed_one(quick_all):
    outdir, _plan, failures = quick_all
    assert len(failures) == 1 and failures[0].startswith('beta-hm-output-r8 seed 0:'), failures
    lines = _lines(outdir)
    assert {r['run'] for r in lines} == QUICK_RUNS - {'beta-hm-output-r8'}  # the others went on
    for r in lines:  # one scored, final snapshot per arm; every metric a finite number
        assert (r['seed'], r['target_kimg'], r['final']) == (0, 0.016, True)
        assert r['kimg'] >= 0.016 and all(math.isfinite(r[k]) for k in ('fid', 'swd', 'nonflat', 'train_s'))
        assert os.path.isfile(os.path.join(outdir, r['snapshot']))
    by_run = {r['run']: r for r in lines}  # each arm trained with exactly its ablated option
    assert by_run['beta-concat-r16']['options'] == dict(
        patch_dist='beta', hyper_mod=False, hyper_mod_mode='output', patch_cond=True, patch_res=16
    )
    options = json.load(open(os.path.join(outdir, os.path.dirname(by_run['beta-concat-r16']['snapshot']),
                                          'training_options.json')))  # fmt: skip
    assert (options['hyper_mod'], options['patch_cond'], options['patch_dist']) == (False, True, 'beta')
    summary = open(os.path.join(outdir, 'summary.md')).read()
    for heading in ('## patch-dist:', '## hyper-mod:', '## patch-res:', '## Failed in the last invocation'):
        assert heading in summary
    assert summary.count('Sign: **') == 3 and 'by final FID' in summary
    fid_beta = f'{by_run["beta-hm-output-r16"]["fid"]:.2f}'
    assert f'| beta | `beta-hm-output-r16` | 1 | 0.016 | {fid_beta} |' in summary
    for name in ('patch-dist', 'hyper-mod', 'patch-res'):
        with PIL.Image.open(os.path.join(outdir, f'{name}.png')) as img:
            assert img.format == 'PNG' and img.size[0] >= 500 and img.size[1] >= 300


@pytest.mark.slow
def test_rerun_retrains_only_what_is_missing(quick_all):
    outdir, plan, _ = quick_all
    before = _lines(outdir)
    commands = _train_commands(outdir)
    shutil.rmtree(os.path.join(outdir, 'runs', 'beta-hm-output-r8-seed0'))  # the failure's cause, fixed
    with open(os.path.join(outdir, 'results.jsonl'), 'w') as f:  # a run killed after training, before scoring
        f.writelines(json.dumps(r) + '\n' for r in before if r['run'] != 'beta-nohm-r16')
    failures = reproduce.reproduce('all', plan, seeds=1, feature_net=TinyFeatureNet())
    assert failures == []
    after = {r['run']: r for r in reproduce_report.read_results(os.path.join(outdir, 'results.jsonl'))}
    assert set(after) == QUICK_RUNS
    new_commands = [c for c in _train_commands(outdir) if c not in commands]
    assert [name for name, _ in new_commands] == [
        'beta-hm-output-r8-seed0.log'
    ]  # only the failed arm trained
    old = {r['run']: r for r in before}
    assert after['beta-nohm-r16']['swd'] == pytest.approx(
        old['beta-nohm-r16']['swd']
    )  # rescored, same snapshot
    assert after['beta-hm-input-r16']['timestamp'] == old['beta-hm-input-r16']['timestamp']  # untouched
    assert '## Failed' not in open(os.path.join(outdir, 'summary.md')).read()


@pytest.mark.slow
def test_two_segments_resume_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv('PGRF_CACHE_DIR', str(tmp_path / 'cache'))
    args = ['patch-res', '--quick', '--kimg', '0.032', '--snapshots', '2', '--outdir', str(tmp_path)]
    result = CliRunner().invoke(reproduce.main, args)
    assert result.exit_code == 0, result.output
    lines = _lines(str(tmp_path))
    assert sorted((r['run'], r['target_kimg'], r['final']) for r in lines) == [
        ('beta-hm-output-r16', 0.016, False), ('beta-hm-output-r16', 0.032, True),
        ('beta-hm-output-r8', 0.016, False), ('beta-hm-output-r8', 0.032, True),
    ]  # fmt: skip
    assert all(r['fid'] is None and math.isfinite(r['swd']) for r in lines)  # no Inception weights: SWD only
    assert all((r['nonflat'] is not None) == r['final'] for r in lines)
    commands = [line for _, line in _train_commands(str(tmp_path))]
    assert len(commands) == 4 and sum('--resume latest' in c for c in commands) == 2
    logs = open(tmp_path / 'logs' / 'beta-hm-output-r8-seed0.log').read()
    assert 'Resumed from' in logs and 'at kimg 0.016' in logs  # the second segment continued the first
    assert 'judged by SWD' in open(tmp_path / 'summary.md').read()
    again = CliRunner().invoke(reproduce.main, [*args[:2], '--kimg', '0.064', *args[4:]])
    assert again.exit_code != 0 and 'holds results with targets=' in again.output  # one plan per folder
