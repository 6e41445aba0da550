import json
import os
import subprocess
import sys
import time

import pytest
import torch
from repo_paths import REPO_ROOT

from torch_utils import distributed

ROOT = REPO_ROOT
sys.path.insert(0, os.path.join(ROOT, 'tests'))
import _dist_worker  # noqa: E402
from shared_doubles import LAUNCH_VARS  # noqa: E402


@pytest.mark.parametrize(
    'nodelist, host',
    [
        ('node7', 'node7'),
        ('gpu[003-005,9],login1', 'gpu003'),
        ('a,b', 'a'),
        ('rack[2-3]-n[10,12]', 'rack2-n10'),
        ('x-[01-02]', 'x-01'),
    ],
)
def test_first_slurm_host(nodelist, host):
    assert distributed.first_slurm_host(nodelist) == host


def test_launch_env_torchrun_slurm_and_none():
    torchrun = dict(
        RANK='3', WORLD_SIZE='8', LOCAL_RANK='1', MASTER_ADDR='h0', MASTER_PORT='1234', SLURM_PROCID='0'
    )
    assert distributed.launch_env(torchrun) == dict(
        launcher='torchrun', rank=3, world_size=8, local_rank=1, master_addr='h0', master_port=1234
    )
    slurm = dict(
        SLURM_PROCID='5',
        SLURM_NTASKS='16',
        SLURM_LOCALID='1',
        SLURM_JOB_NODELIST='g[04-07]',
        SLURM_JOB_ID='42',
    )
    got = distributed.launch_env(slurm)
    assert got == dict(
        launcher='slurm', rank=5, world_size=16, local_rank=1, master_addr='g04', master_port=20042
    )
    assert distributed.launch_env(dict(slurm, MASTER_PORT='999'))['master_port'] == 999
    assert distributed.launch_env(dict(SLURM_PROCID='0', SLURM_NTASKS='1')) is None  # a single-task job
    assert distributed.launch_env({}) is None
    with pytest.raises(RuntimeError, match='MASTER_ADDR and MASTER_PORT not: launch with torchrun'):
        distributed.launch_env(dict(RANK='0', WORLD_SIZE='2'))


def test_single_process(monkeypatch, capsys):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    info = distributed.init(device='cpu')
    try:
        assert (info.rank, info.world_size, info.local_rank, info.backend) == (0, 1, 0, None)
        assert distributed.init() is info and distributed.is_main()
        distributed.print0('only once')
        distributed.barrier()
        assert distributed.broadcast_object([1, 'a']) == [1, 'a']
    finally:
        distributed.shutdown()
    assert capsys.readouterr().out == 'only once\n'
    ran = []
    distributed.spawn(ran.append, 1, 'x', device='cpu')  # one process: runs right here
    assert ran == ['x']


def test_torchrun_with_one_process_needs_no_group(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    env = dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1', MASTER_PORT='1')
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    info = distributed.init(device='cpu')
    try:
        assert info.world_size == 1 and info.backend is None
        assert not torch.distributed.is_initialized()
    finally:
        distributed.shutdown()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='NCCL needs one GPU per rank: 2 GPUs')
def test_gradient_average_over_nccl():
    """The NCCL twin of the gloo check in two_rank_checks: 2 ranks average to the 1-process gradient."""
    distributed.spawn(_dist_worker.check_gradient_average, 2, timeout_s=180)


@pytest.mark.gpu
def test_single_process_uses_the_gpu(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    info = distributed.init()
    try:
        assert info.device == torch.device('cuda', 0) and torch.cuda.current_device() == 0
    finally:
        distributed.shutdown()


def test_two_ranks_collector_and_consistency(tmp_path):
    distributed.spawn(_dist_worker.two_rank_checks, 2, str(tmp_path), device='cpu', timeout_s=120)
    results = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in range(2)]
    assert results[0] == results[1]  # every rank ends with the same statistics
    assert results[0]['stats']['Loss/a'] == dict(num=5, mean=3.0, std=pytest.approx(2**0.5))


def test_failing_rank_fails_spawn_quickly():
    start = time.monotonic()
    with pytest.raises(distributed.SpawnError, match=r'(?s)rank 1 of 2 failed.*ValueError: boom from rank 1'):
        distributed.spawn(_dist_worker.fail_on_rank1, 2, device='cpu', timeout_s=120)
    assert time.monotonic() - start < 90  # rank 0 would otherwise wait in its barrier for 30 min


def test_spawn_timeout_kills_the_ranks():
    with pytest.raises(distributed.SpawnError, match='did not finish within 0.5 s'):
        distributed.spawn(time.sleep, 2, 600, device='cpu', timeout_s=0.5)


@pytest.mark.slow
def test_torchrun_env_and_clean_exit(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1', GLOO_SOCKET_IFNAME='lo')
    for name in LAUNCH_VARS:
        env.pop(name, None)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc_per_node', '2']
    cmd += ['--master_addr', '127.0.0.1', '--master_port', str(distributed.free_port())]
    cmd += [os.path.join(ROOT, 'tests', '_dist_worker.py'), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]  # no abort at interpreter exit either
    assert 'torchrun ok world_size=2' in proc.stdout
    assert proc.stdout.count('torchrun ok') == 1  # print0: rank 0 only
    assert (tmp_path / 'rank0.json').exists() and (tmp_path / 'rank1.json').exists()
    assert torch.distributed.is_available()
