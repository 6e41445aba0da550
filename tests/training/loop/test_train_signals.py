"""Preemption: SIGTERM during training writes a snapshot, exits cleanly, and the run resumes from it."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from repo_paths import REPO_ROOT
from shared_doubles import wait_for
from test_train_fixtures import assert_same_training_state, cli_args, make_tiny_setup

import train
from torch_utils import checkpoint
from training.loop import run_dir

ROOT = REPO_ROOT


@pytest.mark.slow
def test_sigterm_writes_a_snapshot_and_the_run_resumes(tmp_path):
    setup = make_tiny_setup(tmp_path, kimg=100, snap=1000, image_snap=1000)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'train.py'), *cli_args(setup)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(tmp_path),
    )  # fmt: skip
    try:
        wait_for(
            os.path.join(setup['outdir'], '00000-tiny-gpus1-batch4-gamma0.05', 'log.txt'), 'tick 1 ', proc
        )
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert 'Stopped by SIGTERM' in output and 'Traceback' not in output
    [run] = run_dir.list_runs(setup['outdir'])
    snapshot = run_dir.list_snapshots(run)[-1]  # written by the stop (snap=1000: no regular one since tick 0)
    stopped_at = checkpoint.load(snapshot)['progress']['cur_nimg']
    assert stopped_at > 32 and stopped_at % 4 == 0  # the step after the signal (tick 1 ended at 32 images)
    # The resumed run (with DataLoader workers now) ends where an uninterrupted run (no workers) ends, with
    # the same weights, EMA and optimizer moments: the stop lost nothing and the data order did not change.
    # Bit-exact needs the same float reduction order, so the same thread count as the stopped process.
    end_kimg = str((stopped_at + 16) / 1000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(
            train.main, cli_args(setup, '--resume', 'latest', '--kimg', end_kimg, '--workers', '1')
        )
        straight = make_tiny_setup(tmp_path / 'straight', kimg=100, snap=1000, image_snap=1000)
        straight_result = CliRunner().invoke(train.main, cli_args(straight, '--kimg', end_kimg))
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert f'Resumed from {snapshot} at kimg {stopped_at / 1000:.3f}' in result.output
    final = checkpoint.load(run_dir.list_snapshots(run)[-1])
    assert final['progress']['cur_nimg'] >= stopped_at + 16 and final['progress']['cur_nimg'] % 16 == 0
    assert straight_result.exit_code == 0, straight_result.output
    [straight_run] = run_dir.list_runs(straight['outdir'])
    assert_same_training_state(final, checkpoint.load(run_dir.list_snapshots(straight_run)[-1]))
