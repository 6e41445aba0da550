"""From command-line options to running processes: resolve the options, make the run directory, and
start one process, N spawned local processes (`--gpus N`), or join a torchrun/SLURM job (env://).
"""

import contextlib
import multiprocessing
import os
import signal

import dnnlib

# Keys of training_options.json that describe the run rather than the model or its training.
from training.loop import run_dir
from training.options import config

# Keys of training_options.json that describe the run rather than the model or its training.
RUN_KEYS = ('cfg', 'seed', 'num_gpus', 'desc', 'outdir', 'run_dir', 'resume', 'resume_file')
# Options that may change when a run is resumed in place; every other option must match the stored one.
RESUME_MUTABLE = ('kimg', 'max_minutes', 'tick', 'snap', 'image_snap', 'metrics', 'workers', 'desc', 'resume')


def torchrun_world_size() -> int | None:
    """WORLD_SIZE when launched by torchrun (or another env:// launcher), else None."""
    if 'RANK' in os.environ and 'WORLD_SIZE' in os.environ:
        return int(os.environ['WORLD_SIZE'])
    return None


def _default_desc(cfg: str, opts, num_gpus: int, desc: str | None) -> str:
    name = os.path.splitext(os.path.basename(cfg))[0]
    gamma = opts.gamma if isinstance(opts.gamma, str) else f'{opts.gamma:g}'
    text = f'{name}-gpus{num_gpus}-batch{opts.batch}-gamma{gamma}'
    return f'{text}-{desc}' if desc else text


def resolve_training_options(outdir, cfg, data, gpus, resume, seed, desc, flags) -> dnnlib.EasyDict:
    """All the plain data a training process needs (written to training_options.json)."""
    from training.options import derive  # imports the model modules; kept out of --help

    world = torchrun_world_size()
    if world is not None and gpus not in (1, world):
        raise config.ConfigError(f"--gpus {gpus} contradicts the launcher's WORLD_SIZE={world}; drop --gpus")
    num_gpus = world or gpus
    preset_source = cfg if cfg.endswith(('.yaml', '.yml')) else f'configs/{cfg}.yaml'
    opts = config.resolve(config.load_preset(cfg), flags)
    config.validate(opts, num_gpus, source=preset_source)
    c = derive.derive_training_kwargs(opts, data_path=data, num_gpus=num_gpus, preset_source=preset_source)
    run = dict(cfg=cfg, seed=seed, num_gpus=num_gpus, desc=_default_desc(cfg, opts, num_gpus, desc))
    run.update(outdir=outdir, run_dir=None, resume=None, resume_file=None)
    c.update(run)
    if resume is not None:
        target, kind = run_dir.resolve_resume(resume, outdir)
        if kind == 'file':
            _check_resume_file(target)
            c.resume_file = target
        else:
            c = _merge_stored_options(c, target)
    return c


def _check_resume_file(path: str) -> None:
    """Read --resume FILE once before any run directory or process exists: a corrupt, foreign or crafted
    file (one naming a class outside dnnlib/registry.py) is a one-line error and nothing is built."""
    from torch_utils import checkpoint

    try:
        checkpoint.load(path)
    except checkpoint.CheckpointError as err:
        raise config.ConfigError(f'--resume: {err}') from None


def _merge_stored_options(c: dnnlib.EasyDict, target_run: str) -> dnnlib.EasyDict:
    """Continue in `target_run`: its stored options win, except the RESUME_MUTABLE ones."""
    try:
        stored = dnnlib.EasyDict(run_dir.read_options(target_run))
    except ValueError as err:  # not JSON, or it names a class outside the registry
        raise config.ConfigError(f'--resume {target_run}: {err}') from None
    for key, value in c.items():
        if key in RESUME_MUTABLE or key in ('outdir', 'run_dir', 'resume_file'):
            continue
        if key in stored and _plain(stored[key]) != _plain(value):
            raise config.ConfigError(
                f'--resume {target_run}: option "{key}" is {_plain(value)!r} here but {_plain(stored[key])!r} in '
                f"that run's training_options.json; resume with the same options (only {', '.join(RESUME_MUTABLE)} may change)"
            )
    for key in RESUME_MUTABLE:
        if key in c and key not in ('desc', 'resume'):
            stored[key] = c[key]
    stored.update(run_dir=target_run, resume='in_place', resume_file=None, outdir=c.outdir)
    return stored


def _plain(value):
    """JSON round trip, so tuples and lists (and int/float of equal value) compare as stored; class names
    compare by their stable registry name (a run written with import paths resumes under stable names)."""
    import json

    return _stable_class_names(json.loads(json.dumps(value)))


def _stable_class_names(value):
    if isinstance(value, dict):
        out = {k: _stable_class_names(v) for k, v in value.items()}
        if dnnlib.registry.is_known(out.get('class_name')):
            out['class_name'] = dnnlib.registry.stable_name(out['class_name'])
        return out
    if isinstance(value, list):
        return [_stable_class_names(v) for v in value]
    return value


def _prepare_run_dir(c: dnnlib.EasyDict) -> None:
    """Create the run directory (unless resuming in place) and write training_options.json."""
    if c.run_dir is None:
        c.run_dir = run_dir.make_run_dir(c.outdir, c.desc)
    run_dir.write_options(c.run_dir, c)


def launch(c: dnnlib.EasyDict) -> None:
    """Run training in this process, in N spawned processes, or as one rank of a torchrun/SLURM job."""
    from torch_utils import distributed

    if distributed.launch_env() is not None:
        _run_launched_rank(c, prepared=False)
        return
    _prepare_run_dir(c)
    if c.num_gpus == 1:
        _run_launched_rank(c, prepared=True)
        return
    forward = _ForwardSignals()
    try:
        with forward:
            distributed.spawn(_spawned_rank, c.num_gpus, dict(c))
    except distributed.SpawnError as err:
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        raise run_dir.TrainingStopped(
            f'{lines[0]} {lines[-1].strip()}' if lines else 'a rank failed'
        ) from None


class _ForwardSignals:
    """In the `--gpus N` parent: pass SIGTERM/SIGINT on to the ranks (they snapshot and exit cleanly)."""

    def __enter__(self):
        self.previous = {sig: signal.signal(sig, self._forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _forward(self, signum, frame):
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _spawned_rank(c: dict) -> None:
    """Entry of each `--gpus N` process (distributed.spawn has joined the process group)."""
    from torch_utils import distributed
    from training.loop import training_loop

    info = distributed.get_info()
    training_loop.training_loop(
        dnnlib.EasyDict(c), rank=info.rank, world_size=info.world_size, device=info.device
    )


def _run_launched_rank(c: dnnlib.EasyDict, prepared: bool) -> None:
    """Single process, or one rank started by torchrun/SLURM (then rank 0 makes the run directory)."""
    from torch_utils import distributed
    from training.loop import training_loop

    info = distributed.init()
    try:
        if not prepared:
            if info.rank == 0:
                _prepare_run_dir(c)
            c.run_dir = distributed.broadcast_object(c.run_dir, src=0)
        training_loop.training_loop(c, rank=info.rank, world_size=info.world_size, device=info.device)
    finally:
        distributed.shutdown()
