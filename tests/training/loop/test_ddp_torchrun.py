"""train.py under torchrun (2 gloo ranks on the CPU): one run directory written by rank 0, and SIGTERM to
the whole process group (what a cluster's preemption sends) gives one snapshot and every rank exits 0."""

import os
import signal
import subprocess
import sys

import pytest
from repo_paths import REPO_ROOT
from shared_doubles import LAUNCH_VARS, wait_for
from test_train_fixtures import cli_args, make_tiny_setup

from torch_utils import checkpoint, distributed
from training.loop import run_dir

ROOT = REPO_ROOT


@pytest.mark.slow
def test_torchrun_train_one_run_dir_and_sigterm_to_the_group(tmp_path):
    setup = make_tiny_setup(tmp_path, kimg=100, snap=1000, image_snap=1000)
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS}
    env.update(OMP_NUM_THREADS='1', GLOO_SOCKET_IFNAME='lo', PYTHONPATH=ROOT)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc_per_node', '2']
    cmd += ['--master_addr', '127.0.0.1', '--master_port', str(distributed.free_port())]
    cmd += [os.path.join(ROOT, 'tests', '_train_rank.py'), str(tmp_path), *cli_args(setup)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=str(tmp_path),
        start_new_session=True,  # its own process group, as a job scheduler would start it
    )  # fmt: skip
    try:
        log = os.path.join(setup['outdir'], '00000-tiny-gpus2-batch4-gamma0.05', 'log.txt')
        wait_for(log, 'tick 1 ', proc, timeout=240)
        os.killpg(proc.pid, signal.SIGTERM)  # torchrun and both ranks get it
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Every rank exited 0; torchrun's own agent reports the signal (SignalException) and exits 1 by design.
    assert [(tmp_path / f'rank{r}.exit').read_text() for r in range(2)] == ['0', '0'], output[-3000:]
    assert proc.returncode == 1 and 'SignalException' in output, output[-3000:]
    assert 'training_loop.py' not in output, output[-3000:]  # no traceback from a rank
    [run] = run_dir.list_runs(setup['outdir'])  # rank 0 alone made the run directory
    text = open(os.path.join(run, 'log.txt')).read()
    assert text.count('Stopped by SIGTERM') == 1 and text.count('tick 0 ') == 1, text
    snapshots = run_dir.list_snapshots(run)
    assert len(snapshots) == 2  # tick 0's and the stop's (snap=1000: no other)
    data = checkpoint.load(snapshots[-1])
    assert data['rng']['world_size'] == 2 and data['progress']['cur_nimg'] > 32
