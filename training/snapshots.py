"""Full training-state snapshots in the safe checkpoint format, and exact restore.

A snapshot holds `modules` (G, D, G_ema, augment_pipe as checkpoint.module_state), both optimizers,
the resolved training options, the progress counters, every rank's RNG states and the best metric,
all as plain data, so `--resume` continues bit-for-bit (same world size, same device type).
"""

import os

import torch

from torch_utils import checkpoint, misc
from training import run_dir

MODULE_NAMES = ('G', 'D', 'G_ema', 'augment_pipe')
PROGRESS_KEYS = ('cur_nimg', 'cur_tick', 'batch_idx', 'tick_start_nimg', 'total_time')


def gather_rng_states(world_size: int) -> list:
    """Every rank's RNG state (plain data), on every rank."""
    state = misc.get_rng_state()
    if world_size == 1:
        return [state]
    states = [None] * world_size
    torch.distributed.all_gather_object(states, state)
    return states


def make_snapshot(s) -> dict:
    """The full training state of `s` (a TrainState) as plain data. Collective: call on every rank."""
    rng_states = gather_rng_states(s.world_size)
    modules = {name: checkpoint.module_state(s[name]) for name in MODULE_NAMES if s.get(name) is not None}
    return dict(
        format_version=checkpoint.FORMAT_VERSION,
        modules=modules,
        optimizers={name: checkpoint.optimizer_state(opt) for name, opt in s.optimizers.items()},
        ada=s.ada.state_dict() if s.ada is not None else None,
        training_options=dict(s.c),
        progress={key: s.progress[key] for key in PROGRESS_KEYS},
        rng=dict(world_size=s.world_size, states=rng_states),
        best_metric=s.best_metric,
    )


def save_snapshot(s) -> str | None:
    """Write <run_dir>/network-snapshot-<kimg>.pt atomically from rank 0; returns its path there."""
    data = make_snapshot(s)
    if s.rank != 0:
        return None
    path = os.path.join(s.c.run_dir, run_dir.snapshot_name(s.progress.cur_nimg))
    checkpoint.save(path, data)
    return path


def load_latest(run_path: str, log) -> tuple[dict, str]:
    """The newest snapshot of a run that loads; an unreadable newer one is reported and skipped."""
    errors = []
    for path in reversed(run_dir.list_snapshots(run_path)):
        try:
            return checkpoint.load(path), path
        except Exception as err:  # a truncated or foreign file: fall back to the previous snapshot
            errors.append(f'{os.path.basename(path)}: {err}')
            log.print(f'Skipping unreadable snapshot {path}: {err}')
    raise FileNotFoundError(f'no readable snapshot in {run_path} ({"; ".join(errors) or "none found"})')


def _check_kwargs(name: str, module: torch.nn.Module, state: dict, source: str) -> None:
    """The module of this run must be built like the stored one (else the weights cannot mean the same)."""
    stored = checkpoint.to_plain(dict(state.get('init_kwargs', {})), lists=True)
    current = checkpoint.to_plain(dict(getattr(module, 'init_kwargs', {})), lists=True)
    diff = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    if diff:
        k = diff[0]
        raise checkpoint.CheckpointError(
            f'{source}: {name} was built with {k}={stored.get(k)!r} but this run uses {k}={current.get(k)!r}; '
            f'resume with the options of the run that wrote it'
        )


def restore(s, data: dict, source: str) -> None:
    """Load a snapshot into the TrainState `s` (modules, optimizers, counters, RNG, best metric)."""
    for name in MODULE_NAMES:
        if s.get(name) is None:
            continue
        if name not in data['modules']:
            raise checkpoint.CheckpointError(
                f'{source}: the snapshot has no "{name}"; was it written by train.py?'
            )
        _check_kwargs(name, s[name], data['modules'][name], source)
        checkpoint.load_module_state(s[name], data['modules'][name]['state_dict'], f'{source}: {name}')
    for name, opt in s.optimizers.items():
        checkpoint.load_optimizer_state(opt, data['optimizers'][name], f'{source}: optimizer {name}')
    if s.ada is not None and data.get('ada') is not None:
        s.ada.load_state_dict(data['ada'])
    s.progress.update({key: data['progress'][key] for key in PROGRESS_KEYS})
    s.best_metric = data.get('best_metric')
    rng = data['rng']
    if rng['world_size'] == s.world_size:
        misc.set_rng_state(rng['states'][s.rank])
    else:
        s.log.print(
            f'Note: the snapshot was written by {rng["world_size"]} processes, this run has {s.world_size}; '
            'random streams are reseeded, so the continuation is statistically but not bit-wise the same'
        )
        misc.set_seed(s.c.seed * s.world_size + s.rank + s.progress.batch_idx)
