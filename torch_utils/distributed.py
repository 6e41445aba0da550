"""Process-group setup on torch.distributed: torchrun, SLURM, single process, or `spawn` for `--gpus N`.

    info = distributed.init()          # reads torchrun's or SLURM's variables; single-process if neither
    distributed.print0('hello')        # printed by rank 0 only
    ...
    distributed.shutdown()             # destroy the process group cleanly

`init` picks NCCL when the process uses a CUDA device (set from the local rank) and gloo on the CPU.
`spawn(fn, num_procs, *args)` starts one process per rank on this machine (127.0.0.1, a free port)
and turns a failure in any rank into an exception carrying that rank's traceback; the other ranks
are killed rather than left waiting in a collective.
"""

import dataclasses
import datetime
import os
import re
import socket
import sys
import time

import torch

DEFAULT_TIMEOUT_S = 1800  # Collective timeout: a rank that stops answering fails the run, not hangs it.


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0  # Global rank of this process.
    world_size: int = 1  # Number of processes in the job.
    local_rank: int = 0  # Rank on this node (selects the CUDA device).
    device: torch.device = torch.device('cpu')  # Device this process computes on.
    backend: str | None = None  # 'nccl' | 'gloo', None when single-process.


_info: DistInfo | None = None


# ----------------------------------------------------------------------------
# Launch environments.


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list: 'gpu[003-005,9],login1' -> 'gpu003'."""
    first, depth = '', 0
    for ch in nodelist.strip():  # Cut at the first comma outside brackets.
        depth += (ch == '[') - (ch == ']')
        if ch == ',' and depth == 0:
            break
        first += ch
    host = re.sub(r'\[([^\]]*)\]', lambda m: re.split(r'[,-]', m.group(1))[0], first)
    if not host:
        raise ValueError(f'cannot read a host name from SLURM_JOB_NODELIST="{nodelist}"')
    return host


def launch_env(env=None) -> dict | None:
    """dict(launcher, rank, world_size, local_rank, master_addr, master_port) from torchrun's or SLURM's variables.

    torchrun's RANK/WORLD_SIZE win over SLURM's (torchrun inside an sbatch script). Returns None when
    neither launcher is present, or SLURM ran a single task: then the job is single-process.
    """
    env = os.environ if env is None else env
    if 'RANK' in env and 'WORLD_SIZE' in env:
        missing = [k for k in ('MASTER_ADDR', 'MASTER_PORT') if k not in env]
        if missing:
            raise RuntimeError(
                f'RANK and WORLD_SIZE are set but {" and ".join(missing)} not: launch with torchrun, '
                f'or set them to the address and a free port of the rank-0 host.'
            )
        rank = int(env['RANK'])
        return dict(
            launcher='torchrun',
            rank=rank,
            world_size=int(env['WORLD_SIZE']),
            local_rank=int(env.get('LOCAL_RANK', rank)),
            master_addr=env['MASTER_ADDR'],
            master_port=int(env['MASTER_PORT']),
        )
    if 'SLURM_PROCID' in env and int(env.get('SLURM_NTASKS', '1')) > 1:
        job_id = int(re.sub(r'\D', '', env.get('SLURM_JOB_ID', '0')) or 0)
        return dict(
            launcher='slurm',
            rank=int(env['SLURM_PROCID']),
            world_size=int(env['SLURM_NTASKS']),
            local_rank=int(env.get('SLURM_LOCALID', 0)),
            master_addr=env.get('MASTER_ADDR') or first_slurm_host(env['SLURM_JOB_NODELIST']),
            master_port=int(env.get('MASTER_PORT') or 20000 + job_id % 20000),  # same on every task
        )
    return None


def _pick_device(local_rank: int, device, launcher: str | None = None) -> torch.device:
    if device is not None:
        device = torch.device(device)
    elif torch.cuda.is_available():
        count = torch.cuda.device_count()
        if launcher == 'slurm' and count == 1:
            local_rank = 0  # srun bound one GPU to each task (--gpus-per-task=1): it is cuda:0 here.
        if local_rank >= count:
            raise RuntimeError(
                f'local rank {local_rank} has no GPU: this node has {count}; start at most {count} '
                f'processes per node (torchrun --nproc_per_node {count}).'
            )
        device = torch.device('cuda', local_rank)
    else:
        device = torch.device('cpu')
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    return device


# ----------------------------------------------------------------------------
# Process group.


def init(backend: str | None = None, device=None, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistInfo:
    """Join the job's process group (or run single-process) and return this process's DistInfo.

    `device` overrides the default (cuda:LOCAL_RANK when CUDA is available, else cpu); `backend`
    overrides the default (nccl for CUDA, gloo for CPU). Calling init again returns the same info.
    """
    global _info
    if _info is not None:
        return _info
    launch = launch_env()
    if launch is None or launch['world_size'] == 1:
        _info = DistInfo(device=_pick_device(0, device))
        return _info
    dev = _pick_device(launch['local_rank'], device, launch['launcher'])
    backend = backend or ('nccl' if dev.type == 'cuda' else 'gloo')
    extra = dict(device_id=dev) if backend == 'nccl' else {}  # NCCL: bind the communicator to our GPU
    os.environ['MASTER_ADDR'] = launch['master_addr']
    os.environ['MASTER_PORT'] = str(launch['master_port'])
    torch.distributed.init_process_group(
        backend=backend,
        init_method='env://',
        rank=launch['rank'],
        world_size=launch['world_size'],
        timeout=datetime.timedelta(seconds=timeout_s),
        **extra,
    )
    _info = DistInfo(launch['rank'], launch['world_size'], launch['local_rank'], dev, backend)
    return _info


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def get_info() -> DistInfo:
    """This process's DistInfo (single-process defaults before `init`)."""
    return _info if _info is not None else DistInfo()


def get_rank() -> int:
    return torch.distributed.get_rank() if _initialized() else 0


def get_world_size() -> int:
    return torch.distributed.get_world_size() if _initialized() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single-process run)."""
    return get_rank() == 0


def print0(*args, **kwargs) -> None:
    """print() on rank 0 only, flushed (log lines from several ranks never interleave)."""
    if is_main():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    """Wait for every rank (a no-op single-process)."""
    if not _initialized():
        return
    if torch.distributed.get_backend() == 'nccl':
        torch.distributed.barrier(device_ids=[torch.cuda.current_device()])
    else:
        torch.distributed.barrier()


def broadcast_object(obj, src: int = 0):
    """Return rank `src`'s `obj` on every rank (any picklable object; a no-op single-process)."""
    if not _initialized():
        return obj
    holder = [obj]
    torch.distributed.broadcast_object_list(holder, src=src)
    return holder[0]


def shutdown() -> None:
    """Destroy the process group (if any) and flush output; safe to call more than once.

    Destroying the group explicitly, while every rank is still alive, avoids gloo's teardown at
    interpreter exit, which on some machines aborts (SIGABRT) after all the work has finished.
    """
    global _info
    if _initialized():
        torch.distributed.destroy_process_group()
    _info = None
    sys.stdout.flush()
    sys.stderr.flush()


# ----------------------------------------------------------------------------
# Launching one process per rank on this machine (`train.py --gpus N`).


class SpawnError(RuntimeError):
    """A rank started by `spawn` failed; the message holds its rank and traceback or exit status."""


def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _loopback_ifname() -> str | None:
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, 'if_nameindex') else []
    return next((n for n in names if n.startswith('lo')), None)


def _spawn_entry(index, fn, num_procs, port, backend, device, args):
    os.environ.update(
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(port),
        RANK=str(index),
        WORLD_SIZE=str(num_procs),
        LOCAL_RANK=str(index),
        LOCAL_WORLD_SIZE=str(num_procs),
    )
    ifname = _loopback_ifname()
    if ifname is not None:
        os.environ.setdefault('GLOO_SOCKET_IFNAME', ifname)  # all ranks are on this host: stay on loopback
    init(backend=backend, device=device)
    fn(*args)
    shutdown()
    # The rank's work succeeded and its process group is destroyed. Leave now, skipping interpreter
    # teardown: on some machines gloo's exit-time destructors abort (SIGABRT) after all the work is done,
    # which would report a successful rank as failed. `fn` must close its own files before returning.
    os._exit(0)


def _kill_all(context) -> None:
    for process in context.processes:
        if process.is_alive():
            process.kill()
    for process in context.processes:
        process.join(timeout=10)


def spawn(fn, num_procs: int, *args, backend=None, device=None, timeout_s: float | None = None) -> None:
    """Run `fn(*args)` in `num_procs` processes that form one process group on 127.0.0.1.

    Inside `fn`, `distributed.get_info()` (or `init()`) gives the rank and device. `fn` and `args`
    must be picklable (a module-level function; the launching script needs `if __name__ == '__main__'`).
    If any rank raises or dies, the others are killed and SpawnError carries that rank's traceback;
    `timeout_s` bounds the whole run. With num_procs == 1, `fn` runs in this process.
    """
    if num_procs < 1:
        raise ValueError(f'spawn: num_procs must be >= 1, got {num_procs}')
    if num_procs == 1:
        init(backend=backend, device=device)
        try:
            fn(*args)
        finally:
            shutdown()
        return
    port = free_port()
    context = torch.multiprocessing.start_processes(
        _spawn_entry,
        args=(fn, num_procs, port, backend, device, args),
        nprocs=num_procs,
        join=False,
        start_method='spawn',
    )
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while not context.join(timeout=0.5):
            if deadline is not None and time.monotonic() > deadline:
                raise SpawnError(
                    f'spawn: the {num_procs} ranks did not finish within {timeout_s} s; killed them all.'
                )
    except torch.multiprocessing.ProcessRaisedException as err:
        raise SpawnError(f'rank {err.error_index} of {num_procs} failed:{err.msg}') from None
    except torch.multiprocessing.ProcessExitedException as err:
        raise SpawnError(f'rank {err.error_index} of {num_procs} died: {err}') from None
    finally:
        _kill_all(context)
