"""The training loop on a tiny CPU config: outputs of a run, exact resume, and divergence handling."""

import json
import os

import pytest
import torch
from click.testing import CliRunner
from test_train_fixtures import assert_same_training_state, cli_args, make_tiny_setup

import train
from metrics import metric_main
from torch_utils import checkpoint
from training.loop import run_dir


@metric_main.register_metric
def train_test_weight_sum(opts):
    """A cheap stand-in metric (no feature network): the sum of G_ema's weights, which training changes."""
    return dict(train_test_weight_sum=float(sum(p.double().sum() for p in opts.G.parameters())))


def _train(setup, *extra):
    result = CliRunner().invoke(train.main, cli_args(setup, *extra), catch_exceptions=False)
    return result


def _stats(run):
    with open(os.path.join(run, 'stats.jsonl')) as f:
        return [json.loads(line) for line in f]


def test_tiny_run_writes_snapshot_stats_events_and_grids(tmp_path):
    setup = make_tiny_setup(tmp_path)
    result = _train(setup, '--metrics', 'train_test_weight_sum')
    assert result.exit_code == 0, result.output
    [run] = run_dir.list_runs(setup['outdir'])
    files = os.listdir(run)
    assert {'training_options.json', 'log.txt', 'stats.jsonl', 'reals.png'} <= set(files)
    assert any(f.startswith('events.out.tfevents') for f in files)
    assert any(f.startswith('fakes') and f.endswith('.png') for f in files)
    stats = _stats(run)
    assert [round(s['kimg'], 3) for s in stats] == [0.016, 0.032]  # a tick every 4 steps of 4 images
    for name in ('Loss/G/loss', 'Loss/D/loss', 'Timing/sec_per_kimg', 'Progress/patch_beta'):
        assert name in stats[-1], sorted(stats[-1])
    log = open(os.path.join(run, 'log.txt')).read()
    assert 'tick 0' in log and 'kimg 0.032' in log and 'sec/kimg' in log and 'beta' in log
    snapshots = run_dir.list_snapshots(run)
    data = checkpoint.load(snapshots[-1])
    assert data['progress']['cur_nimg'] == 32 and data['progress']['batch_idx'] == 8
    assert set(data['modules']) == {'G', 'D', 'G_ema', 'augment_pipe'}
    G_ema = checkpoint.load_network(snapshots[-1])
    assert G_ema.img_resolution == 16 and not G_ema.training
    # The snapshot feeds the export tool as is (the run's camera settings travel in training_options).
    import gen_samples

    exported = CliRunner().invoke(
        gen_samples.main,
        ['images', '--network', snapshots[-1], '--seeds', '0-1', '--outdir', str(tmp_path / 'x')],
    )
    assert exported.exit_code == 0, exported.output
    assert any(f.endswith('.png') for f in os.listdir(tmp_path / 'x'))
    # In-training metrics: one line per snapshot in metric-<name>.jsonl, the best value kept in the snapshot.
    with open(os.path.join(run, 'metric-train_test_weight_sum.jsonl')) as f:
        values = [json.loads(line)['results']['train_test_weight_sum'] for line in f]
    assert len(values) == 2 and data['best_metric']['value'] == min(values)


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path):
    full = make_tiny_setup(tmp_path / 'a', kimg=0.048)
    assert _train(full).exit_code == 0
    part = make_tiny_setup(tmp_path / 'b', kimg=0.048)
    assert _train(part, '--kimg', '0.016').exit_code == 0  # stops after 4 steps
    changed = _train(part, '--kimg', '0.048', '--gamma', '0.5', '--resume', 'latest')
    assert changed.exit_code == 1 and 'option "gamma" is 0.5 here but 0.05 in' in changed.output
    other_world = _train(part, '--kimg', '0.048', '--gpus', '2', '--batch-gpu', '2', '--resume', 'latest')
    assert other_world.exit_code == 1 and 'option "num_gpus" is 2 here but 1 in' in other_world.output
    [run_b] = run_dir.list_runs(part['outdir'])
    first_snapshot = run_dir.list_snapshots(run_b)[-1]
    result = _train(part, '--kimg', '0.048', '--resume', 'latest')
    assert result.exit_code == 0, result.output
    [run_a], [run_b] = run_dir.list_runs(full['outdir']), run_dir.list_runs(part['outdir'])
    assert 'Resumed from' in open(os.path.join(run_b, 'log.txt')).read()
    # Same losses for the steps after the resume point ...
    stats_a, stats_b = _stats(run_a), _stats(run_b)
    assert [s['kimg'] for s in stats_a] == [s['kimg'] for s in stats_b]
    for sa, sb in zip(stats_a[1:], stats_b[1:]):
        for name in ('Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty', 'Progress/augment'):
            if name in sa:
                assert sa[name]['mean'] == sb[name]['mean'], name
    # ... and bit-identical final weights, EMA and optimizer moments.
    final_a = checkpoint.load(run_dir.list_snapshots(run_a)[-1])
    assert_same_training_state(final_a, checkpoint.load(run_dir.list_snapshots(run_b)[-1]))
    # --resume FILE starts a new run directory from that state and ends in the same place.
    result = _train(part, '--kimg', '0.048', '--resume', first_snapshot)
    assert result.exit_code == 0, result.output
    [_, run_c] = run_dir.list_runs(part['outdir'])
    assert f'Resumed from {first_snapshot} at kimg 0.016' in open(os.path.join(run_c, 'log.txt')).read()
    assert_same_training_state(final_a, checkpoint.load(run_dir.list_snapshots(run_c)[-1]))


def test_nan_loss_stops_naming_the_phase_and_keeps_the_snapshot(tmp_path, monkeypatch):
    from training import loss as loss_module

    original = loss_module.PatchLoss.accumulate_gradients
    calls = dict(n=0)

    def poisoned(self, phase, *args, **kwargs):
        if phase == 'Dmain':
            calls['n'] += 1
            if calls['n'] == 11:  # step 5 (2 rounds per step), after the first snapshot (step 4)
                self.D.requires_grad_(True)
                for p in self.D.parameters():
                    p.grad = torch.full_like(p, float('nan'))
                return torch.tensor(float('nan'))
        value = original(self, phase, *args, **kwargs)
        if phase == 'Dmain' and calls['n'] == 3:  # step 1: a finite loss with an overflowed gradient
            next(p for p in self.D.parameters() if p.grad is not None).grad.view(-1)[0] = float('inf')
        return value

    monkeypatch.setattr(loss_module.PatchLoss, 'accumulate_gradients', poisoned)
    setup = make_tiny_setup(tmp_path)
    result = CliRunner().invoke(train.main, cli_args(setup))
    assert result.exit_code == 1
    assert 'non-finite loss in phase Dmain at kimg 0.020' in result.output, result.output
    [run] = run_dir.list_runs(setup['outdir'])
    snapshots = run_dir.list_snapshots(run)
    assert len(snapshots) == 1 and f'the last good snapshot is {snapshots[0]}' in result.output
    assert checkpoint.load(snapshots[0])['progress']['cur_nimg'] == 16
    # The clamped step of the first tick is counted (1 of its 4 Dmain steps) and named in the progress line.
    clamped = _stats(run)[-1]['Progress/nonfinite_grads/Dmain']
    assert round(clamped['mean'] * clamped['num']) == 1 and clamped['num'] == 4
    assert 'WARNING non-finite grads clamped in Dmain: 1 of 4 steps' in result.output


@pytest.mark.parametrize('gpus', [1, 2])
def test_max_minutes_ends_the_run_as_done_with_a_snapshot(tmp_path, gpus):
    """--max-minutes ends a run early, at a tick boundary, on every rank at the same step (else a rank hangs
    in the next collective), with the final snapshot; kimg 2 bounds the run if the limit were ignored. Rank
    0's clock decides, so the stored total_time reaches the limit although rank 1's clock, which also counts
    its waits for rank 0's snapshots (one every tick here), runs ahead."""
    setup = make_tiny_setup(tmp_path, kimg=2, snap=1, image_snap=1)  # rank-0 work every tick
    result = _train(setup, '--max-minutes', '0.02', '--gpus', str(gpus), '--batch-gpu', str(4 // gpus))
    assert result.exit_code == 0, result.output
    [run] = run_dir.list_runs(setup['outdir'])
    log = open(os.path.join(run, 'log.txt')).read()
    assert 'max_minutes 0.02 reached at kimg' in log and 'Exiting...' in log
    progress = checkpoint.load(run_dir.list_snapshots(run)[-1])['progress']
    assert 0 < progress['cur_nimg'] < 2000 and progress['cur_nimg'] % 16 == 0  # an ADA-interval boundary
    assert progress['total_time'] >= 0.02 * 60


def test_a_run_ended_by_max_minutes_resumes_in_place_with_a_larger_budget(tmp_path):
    """max_minutes is a stopping rule like kimg: resuming in place may change it (else the stored limit, already
    spent, would end the resumed run at its first step, and any other value would be refused)."""
    setup = make_tiny_setup(tmp_path, kimg=2, snap=1000, image_snap=1000)
    assert _train(setup, '--max-minutes', '0.01').exit_code == 0
    [run] = run_dir.list_runs(setup['outdir'])
    first = checkpoint.load(run_dir.list_snapshots(run)[-1])['progress']
    result = _train(setup, '--max-minutes', '0.03', '--resume', 'latest')
    assert result.exit_code == 0, result.output
    last = checkpoint.load(run_dir.list_snapshots(run)[-1])['progress']
    assert first['cur_nimg'] < last['cur_nimg'] < 2000 and last['total_time'] >= 0.03 * 60
