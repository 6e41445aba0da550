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
from collections import Counter

import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from repo_paths import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, 'scripts'))

import reproduce  # noqa: E402
import reproduce_eval  # noqa: E402
import reproduce_report  # noqa: E402


def _arms(outdir):
    """label -> run name for every arm of `all` in the quick setup (the reference arm is shared)."""
    chosen, _ = reproduce.select(
        'all', reproduce.preset_reference(os.path.join(outdir, 'quick', 'quick.yaml'))
    )
    return {f'{exp["name"]}/{label}': run for exp in chosen for label, run in exp['arms'].items()}


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
    """`all --quick`, every arm one segment, FID on the tiny network."""
    outdir = str(tmp_path_factory.mktemp('reproduce'))
    env = pytest.MonkeyPatch()
    env.setenv('PGRF_CACHE_DIR', os.path.join(outdir, 'cache'))
    plan = reproduce.make_plan(outdir, 'demo', None, quick=True)
    failures = reproduce.reproduce('all', plan, seeds=1, feature_net=TinyFeatureNet())
    yield outdir, plan, _arms(outdir), failures
    env.undo()


@pytest.mark.slow
def test_quick_all_scores_every_arm(quick_all):
    outdir, _plan, arms, failures = quick_all
    assert failures == []
    assert len(set(arms.values())) == 7  # 9 arms, the preset's own configuration shared by 3 experiments
    lines = _lines(outdir)
    assert sorted(r['run'] for r in lines) == sorted(set(arms.values()))
    for r in lines:  # one scored, final snapshot per arm; every metric a finite number
        assert (r['seed'], r['target_kimg'], r['final']) == (0, 0.016, True)
        assert r['kimg'] >= 0.016 and all(math.isfinite(r[k]) for k in ('fid', 'swd', 'nonflat', 'train_s'))
        assert os.path.isfile(os.path.join(outdir, r['snapshot']))
    by_run = {r['run']: r for r in lines}
    for label, want in (('hyper-mod/concat', (False, True)), ('hyper-mod/none', (False, False))):
        run_dir = os.path.join(outdir, os.path.dirname(by_run[arms[label]]['snapshot']))
        with open(os.path.join(run_dir, 'training_options.json')) as f:
            options = json.load(f)  # what train.py trained: exactly the ablated option changed
        assert (options['hyper_mod'], options['patch_cond'], options['patch_dist']) == (*want, 'beta')
    with open(os.path.join(outdir, 'summary.md')) as f:
        summary = f.read()
    for heading in ('## patch-dist:', '## hyper-mod:', '## patch-res:'):
        assert heading in summary
    assert summary.count('Sign: **') == 3 and 'by final FID' in summary and '## Failed' not in summary
    reference = by_run[arms['patch-dist/beta']]
    assert f'| beta | `{reference["run"]}` | 1 | 0.016 | {reference["fid"]:.2f} |' in summary
    for name in ('patch-dist', 'hyper-mod', 'patch-res'):
        with PIL.Image.open(os.path.join(outdir, f'{name}.png')) as img:
            assert img.format == 'PNG' and img.size[0] >= 500 and img.size[1] >= 300


@pytest.mark.slow
def test_rerun_retrains_only_what_is_missing(quick_all):
    outdir, plan, arms, _ = quick_all
    before = _lines(outdir)
    commands = _train_commands(outdir)
    lost, unscored = arms['patch-res/r8'], arms['hyper-mod/none']
    shutil.rmtree(os.path.join(outdir, 'runs', f'{lost}-seed0'))  # a run lost entirely ...
    with open(os.path.join(outdir, 'results.jsonl'), 'w') as f:  # ... and one killed after training, unscored
        f.writelines(json.dumps(r) + '\n' for r in before if r['run'] not in (lost, unscored))
    assert reproduce.reproduce('all', plan, seeds=1, feature_net=TinyFeatureNet()) == []
    after = {r['run']: r for r in reproduce_report.read_results(os.path.join(outdir, 'results.jsonl'))}
    assert set(after) == set(arms.values())
    new_commands = Counter(name for name, _ in _train_commands(outdir)) - Counter(
        name for name, _ in commands
    )
    assert dict(new_commands) == {f'{lost}-seed0.log': 1}  # only the lost run trained again
    old = {r['run']: r for r in before}
    assert after[unscored]['swd'] == pytest.approx(old[unscored]['swd'])  # rescored from the same snapshot
    untouched = arms['hyper-mod/hyper-input']
    assert after[untouched]['timestamp'] == old[untouched]['timestamp']


@pytest.mark.slow
def test_two_segments_resume_and_a_failed_arm_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv('PGRF_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.delenv('PGRF_FEATURE_NET', raising=False)
    args = [
        'patch-res',
        '--quick',
        '--kimg',
        '0.032',
        '--snapshots',
        '2',
        '--jobs',
        '2',
        '--outdir',
        str(tmp_path),
    ]
    reproduce.make_plan(str(tmp_path), 'demo', None, quick=True)  # the quick preset, to name the arms
    arms = _arms(str(tmp_path))
    big, small = arms['patch-res/r16'], arms['patch-res/r8']
    broken = tmp_path / 'runs' / f'{small}-seed0' / '00000-broken'  # an unreadable snapshot where it resumes
    broken.mkdir(parents=True)
    (broken / 'network-snapshot-000000.pt').write_bytes(b'not a snapshot')
    result = CliRunner().invoke(reproduce.main, args)
    assert result.exit_code == 1 and '1 arm(s) failed' in result.output, result.output
    with open(tmp_path / 'summary.md') as f:
        summary = f.read()
    assert '## Failed in the last invocation' in summary and f'- {small} seed 0: ' in summary
    assert 'judged by SWD' in summary and '**partly measured**' in summary
    lines = _lines(str(tmp_path))  # the other arm went on: two segments, the second resumed from the first
    assert [(r['run'], r['target_kimg'], r['final']) for r in lines] == [
        (big, 0.016, False),
        (big, 0.032, True),
    ]
    assert all(r['fid'] is None and math.isfinite(r['swd']) for r in lines)  # no Inception weights: SWD only
    assert [r['nonflat'] is not None for r in lines] == [False, True]
    commands = [line for _, line in _train_commands(str(tmp_path))]
    assert len(commands) == 2 and '--resume latest' not in commands[0] and '--resume latest' in commands[1]
    log = (tmp_path / 'logs' / f'{big}-seed0.log').read_text()
    assert 'Resumed from' in log and 'at kimg 0.016' in log
    again = CliRunner().invoke(reproduce.main, [*args[:2], '--kimg', '0.064', *args[4:]])
    assert again.exit_code != 0 and 'holds results with targets=' in again.output  # one plan per folder


@pytest.mark.slow
def test_one_render_for_fid_and_swd_equals_the_metrics_apart(quick_all):
    """reproduce_eval renders the fakes once for both metrics; the numbers are those of the registry's
    protocols computed one by one (metric_main.sliced_wasserstein, and fid_full's steps at this count)."""
    from metrics import frechet, metric_main
    from metrics import metric_utils as mu
    from torch_utils import checkpoint

    outdir, _plan, arms, _ = quick_all
    snapshot = os.path.join(
        outdir, {r['run']: r for r in _lines(outdir)}[arms['patch-dist/beta']]['snapshot']
    )
    G, options = checkpoint.load_network(snapshot, 'G_ema', with_options=True)
    opts = reproduce_eval.metric_options(G.eval(), options, TinyFeatureNet(), progress=False)
    fid, swd = reproduce_eval.fid_and_swd(opts, 12, with_fid=True)
    assert swd == pytest.approx(metric_main.sliced_wasserstein(opts, 12)['swd0k_avg'], rel=1e-5)
    mu_real, sigma_real = mu.compute_real_features(opts, capture_mean_cov=True).get_mean_cov()
    mu_fake, sigma_fake = mu.compute_fake_features(opts, 12, capture_mean_cov=True).get_mean_cov()
    assert fid == pytest.approx(frechet.frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake), rel=1e-5)
    capped = reproduce_eval.fid_and_swd(opts, 16, with_fid=False)  # never more fakes than the 16 reals
    assert capped[0] is None and reproduce_eval.fid_and_swd(opts, 100, with_fid=False) == capped
