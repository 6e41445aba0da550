"""Full training-state snapshots in the safe checkpoint format, and their exact restore.

The one writer and reader of training snapshots. A snapshot is plain data:

    dict(format_version=checkpoint.FORMAT_VERSION,
         modules=dict(G=..., D=..., G_ema=..., augment_pipe=...),   # checkpoint.module_state
         optimizers=dict(G=..., D=...),                              # checkpoint.optimizer_state
         ada=AdaController.state_dict() or None,
         training_options={...}, progress={cur_nimg, cur_tick, batch_idx, tick_start_nimg, total_time},
         rng=dict(world_size=W, device_type='cpu' | 'cuda', states=[every rank's RNG state],
                  inputs=the global batch's input stream state, one for all ranks),
         best_metric=dict(name, value, kimg) or None)

`--resume` continues bit-for-bit when the world size, the device type and the torch build match the
run that wrote it; otherwise the global input stream continues, every rank's own stream is reseeded
deterministically, and a warning says so.
"""

import inspect
import os

import torch

from dnnlib import registry
from torch_utils import checkpoint, misc
from training.loop import run_dir
from training.loop.train_state import Progress, TrainState

MODULE_NAMES = TrainState.MODULES
PROGRESS_KEYS = Progress.KEYS
REQUIRED_KEYS = ('modules', 'optimizers', 'progress', 'rng')
# Constructor kwargs that only trade memory for time (equal results), by stable class name: a resume may
# differ in them: the memory budget of the machine that resumes decides them (training/options/derive.py).
RESUME_MAY_CHANGE = {'pgrf.Generator': ('ray_chunk', 'point_chunk', 'checkpoint_res', 'checkpoint_decode')}


def gather_rng_states(world_size: int) -> list:
    """Every rank's RNG state (plain data), on every rank."""
    state = misc.get_rng_state()
    if world_size == 1:
        return [state]
    states = [None] * world_size
    torch.distributed.all_gather_object(states, state)
    return states


def make_snapshot(s: TrainState) -> dict:
    """The full training state of `s` (a TrainState) as plain data. Collective: call on every rank."""
    rng_states = gather_rng_states(s.world_size)
    modules = {name: checkpoint.module_state(module) for name, module in s.modules().items()}
    return dict(
        format_version=checkpoint.FORMAT_VERSION,
        modules=modules,
        optimizers={name: checkpoint.optimizer_state(opt) for name, opt in s.optimizers.items()},
        ada=s.ada.state_dict() if s.ada is not None else None,
        training_options=dict(s.c),
        progress=s.progress.as_dict(),
        rng=dict(
            world_size=s.world_size,
            device_type=s.device.type,
            states=rng_states,
            inputs=s.input_stream.get_state(),
        ),
        best_metric=s.best_metric,
    )


def save_snapshot(s: TrainState) -> str | None:
    """Write <run_dir>/<run_dir.snapshot_name(cur_nimg)> atomically from rank 0; returns its path there."""
    data = make_snapshot(s)
    if s.rank != 0:
        return None
    path = os.path.join(s.c.run_dir, run_dir.snapshot_name(s.progress.cur_nimg))
    checkpoint.save(path, data)
    return path


def load_latest(run_path: str, log) -> tuple[dict, str]:
    """The newest snapshot of a run that loads; an unreadable newer one is skipped with a warning naming both.

    Raises CheckpointError (one line) if no snapshot of the run can be read.
    """
    unreadable = []  # (path, one-line reason), newest first
    for path in reversed(run_dir.list_snapshots(run_path)):
        try:
            data = checkpoint.load(path)
        except checkpoint.CheckpointError as err:  # truncated, corrupt, foreign or tampered
            unreadable.append((path, str(err)))
            continue
        for bad, reason in unreadable:
            log.print(f'WARNING: skipping unreadable snapshot {bad}; resuming from {path} instead ({reason})')
        return data, path
    reasons = '; '.join(reason for _, reason in unreadable) or 'none found'
    raise checkpoint.CheckpointError(f'--resume {run_path}: no readable snapshot ({reasons})')


def _check_built_alike(name: str, module: torch.nn.Module, state: dict, source: str) -> None:
    """The module of this run must be the stored class built with the stored kwargs (else the weights mean
    something else, or the file names a class this run would never build)."""
    try:
        stored_class = registry.stable_name(state.get('class_name') if isinstance(state, dict) else None)
    except registry.UnknownClassError as err:
        raise checkpoint.CheckpointError(f'{source}: {name}: {err}') from None
    current_class = checkpoint.class_name_of(module)
    if stored_class != current_class:
        raise checkpoint.CheckpointError(
            f'{source}: {name} is a {stored_class} in the snapshot but a {current_class} in this run'
        )
    stored = checkpoint.to_plain(dict(state.get('init_kwargs', {})), lists=True)
    current = checkpoint.to_plain(dict(getattr(module, 'init_kwargs', {})), lists=True)
    # A parameter added since the snapshot was written: that module was built with its default.
    stored.update(_new_parameter_defaults(module, stored, current))
    may_change = RESUME_MAY_CHANGE.get(current_class, ())
    diff = sorted(
        k for k in set(stored) | set(current) if stored.get(k) != current.get(k) and k not in may_change
    )
    if diff:
        k = diff[0]
        raise checkpoint.CheckpointError(
            f'{source}: {name} was built with {k}={stored.get(k)!r} but this run uses {k}={current.get(k)!r}; '
            f'resume with the options of the run that wrote it'
        )


def _new_parameter_defaults(module: torch.nn.Module, stored: dict, current: dict) -> dict:
    """{name: default} of the constructor parameters this run records but the snapshot does not hold.

    A parameter added to a network later gets a default that builds what the code built before, so a
    snapshot written earlier was built with that default and resumes as such."""
    params = inspect.signature(type(module).__init__).parameters
    missing = set(current) - set(stored)
    return {
        name: checkpoint.to_plain(params[name].default, lists=True)
        for name in missing
        if name in params and params[name].default is not inspect.Parameter.empty
    }


def _check_layout(data: dict, source: str) -> None:
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise checkpoint.CheckpointError(
            f'{source}: not a training snapshot written by train.py (no {", ".join(missing)}); '
            f'it can still be used by gen_samples.py and calc_metrics.py, but a run cannot resume from it'
        )


def restore(s: TrainState, data: dict, source: str) -> None:
    """Load a snapshot into the TrainState `s` (modules, optimizers, counters, RNG, best metric)."""
    _check_layout(data, source)
    for name, module in s.modules().items():
        if name not in data['modules']:
            raise checkpoint.CheckpointError(
                f'{source}: the snapshot has no "{name}"; was it written by train.py?'
            )
        _check_built_alike(name, module, data['modules'][name], source)
        checkpoint.load_module_state(module, data['modules'][name]['state_dict'], f'{source}: {name}')
    for name, opt in s.optimizers.items():
        checkpoint.load_optimizer_state(opt, data['optimizers'][name], f'{source}: optimizer {name}')
    if s.ada is not None and data.get('ada') is not None:
        s.ada.load_state_dict(data['ada'])
    s.progress.load(data['progress'])
    s.best_metric = data.get('best_metric')
    restore_rng(s, data['rng'])


def restore_rng(s: TrainState, rng: dict) -> None:
    """This rank's stored RNG state when the run is set up as the one that wrote it; else a reseed and a warning.

    The input stream (latents, cameras, patches of the global batch) is one for all ranks, so it
    continues exactly on any world size; snapshots from before it existed reseed it by step.
    """
    if rng.get('inputs') is not None:
        s.input_stream.set_state(rng['inputs'])
    else:
        s.input_stream.manual_seed(s.input_stream.initial_seed() + s.progress.batch_idx)
    saved = (rng['world_size'], rng.get('device_type', s.device.type))  # format 1 did not record the device
    if saved == (s.world_size, s.device.type):
        misc.set_rng_state(rng['states'][s.rank])
        return
    s.log.print(
        f'WARNING: the snapshot was written by {saved[0]} process(es) on {saved[1]}, this run has '
        f"{s.world_size} on {s.device.type}; latents, cameras and patches continue exactly, but G's noise "
        'and the augmentations are reseeded, so the continuation is statistically, not bit-wise, the same'
    )
    misc.set_seed(s.c.seed * s.world_size + s.rank + s.progress.batch_idx)
