"""`train.py --gpus 2` (two spawned gloo ranks on the CPU) equals one process at the same global batch.

The arithmetic of data parallelism, shown through the real CLI: every rank keeps the rows rank::2 of
the global batch's reals, latents, cameras and patches, so with a deterministic G (no per-pixel noise,
no density noise, bin-middle ray samples), no augmentation and no camera dropout in D, two ranks that average their gradients
train exactly the model one process trains on the whole batch, up to float summation order.
"""

import os
import subprocess
import sys

import pytest
from repo_paths import REPO_ROOT
from shared_doubles import LAUNCH_VARS
from test_train_fixtures import add_classes, cli_args, make_tiny_setup

from torch_utils import checkpoint
from training.loop import run_dir

ROOT = REPO_ROOT

DETERMINISTIC = dict(  # every random draw left is one of the global batch's inputs
    aug='noaug',
    camera_cond=False,  # D's camera dropout draws from each rank's stream
    density_noise_std=0.0,
    kimg=0.032,  # 8 steps of batch 4 in two ticks (a snapshot each), Dreg (r1_interval 4) twice
    G_kwargs=dict(
        z_dim=8, w_dim=8, plane_channels=4, channel_base=64, channel_max=8, decoder_hidden=8, checkpoint_res=None,
        use_noise=False, train_jitter=False,
    ),
)  # fmt: skip


def _train(tmp_path, name: str, *flags, cond=False) -> tuple[dict, dict]:
    """The run's first (after tick 0) and last snapshots; with `cond`, class-conditional on 3 classes."""
    setup = make_tiny_setup(tmp_path / name, **DETERMINISTIC, cond=cond)
    if cond:
        add_classes(setup['data'], [i % 3 for i in range(12)])
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS='1', GLOO_SOCKET_IFNAME='lo', PYTHONPATH=ROOT)
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), *cli_args(setup), *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    [run] = run_dir.list_runs(setup['outdir'])
    paths = run_dir.list_snapshots(run)
    return checkpoint.load(paths[0]), checkpoint.load(paths[-1])


def _weights(data: dict) -> dict:
    return {
        f'{name}.{key}': value
        for name in ('G', 'D', 'G_ema')
        for key, value in data['modules'][name]['state_dict'].items()
        if not key.endswith('w_avg')  # the w average tracks each rank's own latents (truncation only)
    }


def _largest_difference(a: dict, b: dict) -> tuple[float, str]:
    assert a.keys() == b.keys()
    return max(((a[k] - b[k]).abs().max().item(), k) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize('cond', [False, True], ids=['unconditional', 'class-conditional'])
def test_two_ranks_train_what_one_process_trains_on_the_whole_batch(tmp_path, cond):
    start, one = _train(tmp_path, 'one', '--gpus', '1', '--batch-gpu', '4', cond=cond)
    _, two = _train(tmp_path, 'two', '--gpus', '2', '--batch-gpu', '2', cond=cond)
    assert (one['rng']['world_size'], two['rng']['world_size']) == (1, 2)
    assert one['progress']['cur_nimg'] == two['progress']['cur_nimg'] == 32
    moved, where = _largest_difference(_weights(start), _weights(one))
    assert moved > 1e-3, f'training barely moved the weights ({moved:.3g} at {where})'
    worst, where = _largest_difference(_weights(one), _weights(two))
    assert worst < 1e-5, f'one process and two ranks differ by {worst:.3g} at {where} (moved {moved:.3g})'
