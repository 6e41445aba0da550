"""Checkpoints as plain data: save atomically, load without executing code, rebuild modules by name.

A checkpoint is a dict of plain data only: numbers, strings, bools, None, lists, tuples, dicts and
tensors, plus `format_version`. Modules are stored as `module_state(...)`: the class's stable name
from dnnlib/registry.py, its recorded constructor kwargs (`misc.record_init_kwargs`) and its
state_dict. The layout of a training snapshot is training/loop/snapshots.py's (the only writer of one).

`save` writes with `torch.save` to a temp file beside the target, fsyncs and renames it over the
target, so a crash or kill during the write leaves the previous file intact. `load` reads with
`torch.load(weights_only=True)`, so a file that holds a pickled Python object is refused, never run;
then every `class_name` in the file must be registered and its kwargs plain data, so nothing a file
names can be imported or built unless PGRF lists it. Modules are loaded strictly; a key or shape
mismatch is reported as a readable diff.

Format versions: 1 stored import paths as class names (still read, as registry aliases); 2 stores
stable names and the device type of the training RNG states.
"""

import contextlib
import os
import pickle
import re
import secrets
from collections import OrderedDict

import numpy as np
import torch

import dnnlib
from dnnlib import registry

FORMAT_VERSION = 2  # Bump when the layout changes; `load` reads every version up to this one.
_ZIP_MAGIC = b'PK\x03\x04'  # torch.save's (zip) format starts with a zip local-file header.
_MAX_LISTED = 12  # How many keys a mismatch message lists per category.


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or does not fit the code (the message says which file and why)."""


# ----------------------------------------------------------------------------
# Plain data.


def to_plain(obj, where: str = 'data', lists: bool = False):
    """Return `obj` as plain data; raise TypeError naming the offending entry for anything else.

    dict subclasses (EasyDict) become dicts (OrderedDict is kept: state_dicts carry `_metadata`),
    NumPy scalars become Python numbers and arrays become tensors, tensors are detached and moved
    to the CPU. With `lists=True` tuples become lists (JSON-like, used for constructor kwargs).
    """
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    if isinstance(obj, torch.Tensor):
        return _plain_tensor(obj)
    if isinstance(obj, (torch.dtype, torch.device, torch.Size)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError(
                f'{where} is a NumPy array of Python objects; checkpoints hold numeric arrays only'
            )
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(
                    f'{where}: key {key!r} is a {type(key).__name__}; checkpoint keys must be str or int'
                )
            out[key] = to_plain(value, f'{where}[{key!r}]', lists)
        if isinstance(obj, OrderedDict) and hasattr(obj, '_metadata'):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f'{where}[{i}]', lists) for i, v in enumerate(obj)]
        return items if (lists or isinstance(obj, list)) else tuple(items)
    raise TypeError(
        f'{where} is a {type(obj).__module__}.{type(obj).__qualname__}; checkpoints hold plain data only '
        f'(numbers, strings, bools, None, lists, tuples, dicts, tensors). Store its state as plain data instead.'
    )


def _plain_tensor(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    if isinstance(t, torch.nn.Parameter) or type(t) is not torch.Tensor:
        t = t.as_subclass(torch.Tensor)
    t = t.cpu()
    if t.untyped_storage().nbytes() > t.numel() * t.element_size():
        t = t.clone()  # A view of a larger tensor: save only what it shows, not the whole storage.
    return t


# ----------------------------------------------------------------------------
# Modules.


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module itself, without DistributedDataParallel or torch.compile wrappers."""
    while True:
        if isinstance(module, torch.nn.parallel.DistributedDataParallel):
            module = module.module
        elif isinstance(getattr(module, '_orig_mod', None), torch.nn.Module):
            module = module._orig_mod
        else:
            return module


def class_name_of(module: torch.nn.Module) -> str:
    """The stable registry name ('pgrf.Generator') under which a checkpoint stores the module's class."""
    cls = type(_unwrap(module))
    try:
        return registry.name_of(cls)
    except registry.UnknownClassError as err:
        raise TypeError(str(err)) from None


def module_state(module: torch.nn.Module) -> dict:
    """Plain-data description of a module: dict(class_name, init_kwargs, state_dict)."""
    module = _unwrap(module)
    if not hasattr(module, 'init_kwargs'):
        raise TypeError(
            f'{type(module).__qualname__} has no init_kwargs: decorate its __init__ with '
            f'@misc.record_init_kwargs so that a checkpoint can rebuild it.'
        )
    name = class_name_of(module)
    init_kwargs = to_plain(dict(module.init_kwargs), f'{name}.init_kwargs', lists=True)
    try:  # What `load` will demand, refused when writing: a snapshot nobody can open is worse than none.
        registry.check_plain(init_kwargs, f'{name}.init_kwargs')
    except registry.NotPlainDataError as err:
        raise TypeError(f'{err} (store a string or number instead, e.g. a dtype by its name)') from None
    return dict(
        class_name=name,
        init_kwargs=init_kwargs,
        state_dict=to_plain(module.state_dict(), f'{name}.state_dict'),
    )


def _easydicts(obj):
    if isinstance(obj, dict):
        return dnnlib.EasyDict({k: _easydicts(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_easydicts(v) for v in obj]
    return obj


def _check_module_state(state, where: str) -> None:
    if not isinstance(state, dict) or not {'class_name', 'init_kwargs', 'state_dict'} <= set(state):
        keys = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f'{where}: not a module state (expected a dict with class_name, init_kwargs, state_dict; got {keys})'
        )


def state_dict_diff(expected: dict, given: dict) -> tuple[list, list, list]:
    """(missing keys, unexpected keys, [(key, expected shape, given shape)]) between two state_dicts."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shape = lambda v: list(v.shape) if isinstance(v, torch.Tensor) else None  # noqa: E731 (extra_state: no shape)
    shapes = [
        (k, shape(expected[k]), shape(given[k]))
        for k in sorted(set(expected) & set(given))
        if shape(expected[k]) != shape(given[k])
    ]
    return missing, unexpected, shapes


def _format_keys(keys: list) -> str:
    shown = ', '.join(str(k) for k in keys[:_MAX_LISTED])
    return shown + (f', ... ({len(keys) - _MAX_LISTED} more)' if len(keys) > _MAX_LISTED else '')


def load_module_state(module: torch.nn.Module, state_dict: dict, where: str = 'checkpoint') -> None:
    """Load `state_dict` into `module` strictly; a mismatch raises CheckpointError with a readable diff."""
    module = _unwrap(module)
    missing, unexpected, shapes = state_dict_diff(module.state_dict(), state_dict)
    if missing or unexpected or shapes:
        lines = [f'{where}: the stored weights do not fit {type(module).__qualname__}:']
        if missing:
            lines.append(f'  missing in checkpoint ({len(missing)}): {_format_keys(missing)}')
        if unexpected:
            lines.append(f'  unexpected in checkpoint ({len(unexpected)}): {_format_keys(unexpected)}')
        for key, want, got in shapes[:_MAX_LISTED]:
            lines.append(f'  shape mismatch: {key}: module {want}, checkpoint {got}')
        if len(shapes) > _MAX_LISTED:
            lines.append(f'  ... and {len(shapes) - _MAX_LISTED} more shape mismatches')
        lines.append('  (was the checkpoint written by a different version of the code or another config?)')
        raise CheckpointError('\n'.join(lines))
    module.load_state_dict(state_dict, strict=True)


def build_module(state: dict, device='cpu', where: str = 'checkpoint') -> torch.nn.Module:
    """Rebuild a module from `module_state(...)`: construct by class name and kwargs, then load strictly."""
    _check_module_state(state, where)
    try:  # Both checks before anything is imported or constructed: the file names what to build.
        registry.stable_name(state['class_name'])
        registry.check_plain(state['init_kwargs'], f'{state["class_name"]}.init_kwargs')
    except ValueError as err:
        raise CheckpointError(f'{where}: {err}') from None
    kwargs = _easydicts(dict(state['init_kwargs']))
    try:
        module = dnnlib.construct_class_by_name(class_name=state['class_name'], **kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f'{where}: cannot rebuild {state["class_name"]} from its stored kwargs: {err}'
        ) from err
    load_module_state(module, state['state_dict'], f'{where} ({state["class_name"]})')
    return module.to(device)


# ----------------------------------------------------------------------------
# Optimizers.


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state_dict as plain data (moments, step counts, param groups)."""
    return to_plain(optimizer.state_dict(), f'{type(optimizer).__name__}.state_dict')


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict, where: str = 'checkpoint') -> None:
    """Restore `optimizer_state(...)` into an optimizer built over the same parameters, in the same order."""
    groups, stored = optimizer.param_groups, state.get('param_groups', [])
    want = [len(g['params']) for g in groups]
    got = [len(g['params']) for g in stored]
    if want != got:
        raise CheckpointError(
            f'{where}: the optimizer state has param groups of sizes {got}, but the optimizer has {want}: '
            f'build the optimizer over the same parameters as the run that saved it.'
        )
    optimizer.load_state_dict(state)


# ----------------------------------------------------------------------------
# Files.


def _fsync_dir(dirname: str) -> None:
    with contextlib.suppress(OSError):  # Some filesystems (and Windows) cannot open a directory.
        fd = os.open(dirname, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(path: str, data: dict) -> None:
    """Write `data` (plain data; format_version added if absent) to `path` atomically.

    The bytes go to a hidden temp file in the same directory, are flushed and fsynced, and the temp
    file is renamed over `path` (os.replace is atomic), then the directory is fsynced. A crash at any
    point leaves either the old file or the new one, never a half-written one.
    """
    if not isinstance(data, dict):
        raise TypeError(f'checkpoint.save: data must be a dict, got {type(data).__name__}')
    plain = to_plain(data)
    plain.setdefault('format_version', FORMAT_VERSION)
    path = os.fspath(path)
    dirname = os.path.dirname(os.path.abspath(path))
    os.makedirs(dirname, exist_ok=True)
    tmp = os.path.join(dirname, f'.{os.path.basename(path)}.tmp-{os.getpid()}-{secrets.token_hex(4)}')
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, 'wb') as f:
            torch.save(plain, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_dir(dirname)


def _read_head(path: str) -> bytes:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    with open(path, 'rb') as f:
        return f.read(4)


def _torch_load(path: str, map_location):
    head = _read_head(path)
    if not head:
        raise CheckpointError(
            f'{path}: the file is empty (0 bytes): the write that produced it did not finish.'
        )
    if head != _ZIP_MAGIC:
        raise CheckpointError(f'{path}: not a PGRF checkpoint (not a torch.save archive).')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r'GLOBAL (\S+)', str(err))
        what = f' ({found.group(1)})' if found else ''
        raise CheckpointError(
            f'{path}: refusing to load: the file contains a pickled Python object{what}, and loading a '
            f'checkpoint never executes code. PGRF checkpoints hold plain data only (state_dicts, kwargs, numbers).'
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        first_line = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise CheckpointError(
            f'{path}: the file is truncated or corrupt ({first_line}); use an earlier snapshot.'
        ) from None


def load(path: str, map_location='cpu') -> dict:
    """Read a checkpoint written by `save` with torch.load(weights_only=True); clear errors otherwise."""
    path = os.fspath(path)
    data = _torch_load(path, map_location)
    if not isinstance(data, dict) or 'format_version' not in data:
        raise CheckpointError(f'{path}: not a PGRF checkpoint (no format_version entry).')
    version = data['format_version']
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f'{path}: checkpoint format version {version} is newer than this code supports '
            f'({FORMAT_VERSION}); update PGRF to read it.'
        )
    try:  # Whatever the file names (modules, the options' datasets and priors) must be registered plain data.
        registry.check_specs(data, 'checkpoint')
    except ValueError as err:
        raise CheckpointError(f'{path}: {_one_line(err)}') from None
    return data


def _one_line(err: BaseException) -> str:
    return ' '.join(str(err).split()) or type(err).__name__


def load_network(path: str, name: str = 'G_ema', device='cpu', with_options: bool = False):
    """Rebuild network `name` from a checkpoint, in eval mode with requires_grad off.

    The one loader of snapshots for the command-line tools: every failure (missing, empty, corrupt or
    pickled file, no such network, code that no longer fits the weights) is a CheckpointError with a
    one-line message naming the file. With `with_options=True` returns (network, training options or {}).
    """
    path = os.fspath(path)
    try:
        data = load(path)
    except FileNotFoundError:
        raise CheckpointError(
            f'{path}: the snapshot does not exist; pass a <run>/network-snapshot-*.pt'
        ) from None
    modules = data.get('modules') or {}
    if name not in modules:
        raise CheckpointError(
            f'{path}: has no network "{name}"; it holds: {", ".join(sorted(modules)) or "none"}'
        )
    try:
        module = build_module(modules[name], device=device, where=f'{path}: {name}')
    except CheckpointError as err:
        raise CheckpointError(_one_line(err)) from None
    except Exception as err:  # the stored kwargs or weights do not fit this code (or the device is bad)
        raise CheckpointError(f'{path}: cannot rebuild network "{name}": {_one_line(err)}') from None
    module.eval().requires_grad_(False)
    if not with_options:
        return module
    options = data.get('training_options')
    return module, (options if isinstance(options, dict) else {})
