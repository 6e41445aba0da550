"""Just-in-time build of C++/CUDA extensions with ninja, cached by a hash of their sources.

    plugin = custom_ops.get_plugin('bias_act_plugin', sources=['bias_act.cpp', 'bias_act.cu'],
                                   headers=['bias_act.h'], source_dir=os.path.dirname(__file__))

- Cache: `$TORCH_EXTENSIONS_DIR/<name>-<hash>/` if that variable is set, else
  `dnnlib.get_cache_dir('torch_extensions', ...)`. The hash covers the sources' bytes, the build flags,
  the CUDA architectures and the torch/CUDA/Python versions, so editing a source rebuilds and a cache hit
  imports the built library directly (no compiler needed).
- Concurrency: several ranks building the same extension take turns through a lock file. A lock whose
  owner died (same host: its pid is gone; any host: its heartbeat stopped for `STALE_AFTER_S`) is broken;
  waiting longer than `lock_timeout` raises an error naming the lock file. Never hangs forever.
- Architectures: `TORCH_CUDA_ARCH_LIST` if set, else the visible GPUs' (else a default set), always
  filtered to what the installed nvcc supports (CUDA 13 dropped sm_70).
- Fallback: `get_plugin_or_none` returns None and warns ONCE (per op and reason) when a build is
  impossible; the ops then run their `ref` path.
- Pre-build / compile check: `python -m torch_utils.custom_ops [op ...]`.
"""

import glob
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings

import torch

import dnnlib

STALE_AFTER_S = 60.0  # A lock file whose heartbeat is older than this is considered abandoned.
HEARTBEAT_S = 5.0  # How often the lock holder refreshes the lock file's mtime.
DEFAULT_ARCHS = ['7.5', '8.0', '8.6', '8.9', '9.0']  # When no GPU is visible and no list is given.
_OK_MARKER = 'BUILD_OK.json'
BASE_CFLAGS = ['-O3']  # Always passed to the C++ compiler (part of the cache hash).
BASE_CUDA_CFLAGS = ['-O3']  # Always passed to nvcc (part of the cache hash).

_plugins = {}  # get_plugin's arguments -> loaded module, for this process.
_failures = {}  # get_plugin's arguments -> BuildError, so a failed build is not retried in this process.
_warned = set()
_build_mutex = threading.Lock()


class BuildError(RuntimeError):
    """An extension could not be built or loaded; the message says why and where the log is."""


def warn_fallback_once(op_name: str, reason: str) -> None:
    """Warn once per (op, reason) that `impl='cuda'` falls back to the pure-PyTorch `ref` path."""
    key = (op_name, reason)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(
        f'{op_name}: impl="cuda" falls back to impl="ref" because {reason}.', RuntimeWarning, stacklevel=3
    )


# ----------------------------------------------------------------------------
# Environment detection.


def _is_cuda_source(path):
    return path.endswith('.cu') or path.endswith('.cuh')


def missing_build_tool(with_cuda: bool) -> str | None:
    """Why a build is impossible here (no compiler, no ninja, no CUDA toolkit), or None if it can be tried."""
    from torch.utils import cpp_extension

    cxx = os.environ.get('CXX', 'c++')
    if shutil.which(cxx) is None:
        return f'no C++ compiler "{cxx}" on PATH (install g++, or set CXX)'
    if not cpp_extension.is_ninja_available():
        return 'ninja is not installed (pip install ninja)'
    if with_cuda:
        if torch.version.cuda is None:
            return f'this PyTorch ({torch.__version__}) is a CPU-only build'
        if _cuda_home() is None or shutil.which(os.path.join(_cuda_home(), 'bin', 'nvcc')) is None:
            return 'no CUDA toolkit with nvcc was found (set CUDA_HOME to the toolkit matching torch.version.cuda)'
    return None


def _cuda_home():
    from torch.utils import cpp_extension

    return os.environ.get('CUDA_HOME') or os.environ.get('CUDA_PATH') or cpp_extension.CUDA_HOME


def nvcc_supported_archs(nvcc: str | None = None) -> list[str]:
    """Compute capabilities ('8.0', '9.0', ...) the installed nvcc can compile for; [] if unknown."""
    nvcc = nvcc or (os.path.join(_cuda_home(), 'bin', 'nvcc') if _cuda_home() else 'nvcc')
    try:
        out = subprocess.run([nvcc, '--list-gpu-arch'], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    archs = []
    for token in out.split():
        if token.startswith('compute_') and token[8:].isdigit():
            num = token[8:]
            archs.append(f'{num[:-1]}.{num[-1]}')
    return archs


def select_cuda_archs(requested: str | None, visible: list[str], supported: list[str]) -> list[str]:
    """The architectures to build for.

    requested: TORCH_CUDA_ARCH_LIST ('8.0;9.0+PTX', spaces or semicolons); None = `visible` GPUs' archs,
    or DEFAULT_ARCHS without a GPU. Archs the toolkit cannot compile raise (when requested or visible,
    since a kernel for them is needed) or are dropped (defaults).
    """

    def base(a):  # '9.0a+PTX' -> '9.0'; names such as 'Hopper' pass through unchecked.
        a = a.replace('+PTX', '').rstrip('abf')
        return a if a.replace('.', '').isdigit() else supported[-1] if supported else a

    if requested:
        wanted, must = [a for a in requested.replace(';', ' ').split() if a], True
    elif visible:
        wanted, must = sorted(set(visible), key=float), True
    else:
        wanted, must = list(DEFAULT_ARCHS), False
    if not supported:
        return wanted
    bad = [a for a in wanted if base(a) not in supported]
    if bad and must:
        raise BuildError(
            f'CUDA architecture(s) {bad} are not supported by this CUDA toolkit (it supports {supported}). '
            f'For sm_70 (V100) install a CUDA 12.x build of PyTorch; otherwise fix TORCH_CUDA_ARCH_LIST.'
        )
    kept = [a for a in wanted if base(a) in supported]
    return kept or supported[-1:]


def _cuda_arch_list() -> list[str]:
    visible = []
    if torch.cuda.is_available():
        visible = [
            '{}.{}'.format(*torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())
        ]
    return select_cuda_archs(os.environ.get('TORCH_CUDA_ARCH_LIST'), visible, nvcc_supported_archs())


def _cuda_extra_include_paths() -> list[str]:
    """Headers (cuBLAS, cuSPARSE, ...) that pip's nvidia-* packages ship beside torch."""
    root = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(glob.glob(os.path.join(root, 'nvidia', '*', 'include')))


# ----------------------------------------------------------------------------
# The build lock.


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BuildLock:
    """An exclusive lock file with stale-owner detection and a bounded wait (a context manager)."""

    def __init__(self, path: str, timeout: float = 1800.0, stale_after: float = STALE_AFTER_S):
        self.path = path
        self.timeout = timeout
        self.stale_after = stale_after
        self._token = f'{socket.gethostname()}:{os.getpid()}:{time.time_ns()}'
        self._stop = threading.Event()
        self._thread = None

    def _owner(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _stale_reason(self):
        """(why the existing lock is abandoned, its token), or (None, None) while its owner may be building."""
        try:
            age = time.time() - os.path.getmtime(self.path)
        except OSError:
            return None, None  # Vanished: just retry.
        owner = self._owner() or {}
        if owner.get('host') == socket.gethostname() and not _pid_alive(int(owner.get('pid', -1))):
            return f'its owner (pid {owner.get("pid")}) is gone', owner.get('token')
        if age > self.stale_after:
            return f'it was not refreshed for {age:.0f} s', owner.get('token')
        return None, None

    def _break(self, stale_token):
        """Remove the lock judged stale; restore it if, in a race, it was replaced by a live one meanwhile."""
        grabbed = f'{self.path}.broken-{self._token}'
        try:
            os.rename(self.path, grabbed)
        except FileNotFoundError:
            return
        try:
            with open(grabbed) as f:
                token = json.load(f).get('token')
        except (OSError, ValueError):
            token = None
        if token != stale_token:
            try:
                os.link(grabbed, self.path)  # Atomic: fails if someone created a new lock since.
            except FileExistsError:
                pass
        os.remove(grabbed)

    def _try_create(self):
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, 'w') as f:
            json.dump(dict(host=socket.gethostname(), pid=os.getpid(), token=self._token), f)
        return True

    def acquire(self):
        os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
        start = time.monotonic()
        delay = 0.05
        while not self._try_create():
            reason, stale_token = self._stale_reason()
            if reason is not None:
                warnings.warn(
                    f'custom_ops: breaking stale build lock {self.path}: {reason}.',
                    RuntimeWarning,
                    stacklevel=2,
                )
                self._break(stale_token)
                continue
            if time.monotonic() - start > self.timeout:
                owner = self._owner() or {}
                raise BuildError(
                    f'timed out after {self.timeout:g} s waiting for build lock {self.path} held by '
                    f'pid {owner.get("pid")} on {owner.get("host")}. If no build is running, delete that file.'
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        self._thread = threading.Thread(target=self._heartbeat, daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self):
        while not self._stop.wait(min(HEARTBEAT_S, self.stale_after / 4)):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if (self._owner() or {}).get('token') == self._token:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ----------------------------------------------------------------------------
# Building and loading.


def _cache_root() -> str:
    return os.environ.get('TORCH_EXTENSIONS_DIR') or dnnlib.get_cache_dir('torch_extensions')


def _build_spec(name, paths, with_cuda, extra_cflags, extra_cuda_cflags, extra_include_paths):
    """Everything that determines the built library, and its hash."""
    archs = _cuda_arch_list() if with_cuda else []
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.basename(path).encode() + b'\0')
        with open(path, 'rb') as f:
            digest.update(f.read() + b'\0')
    flags = [BASE_CFLAGS, extra_cflags, BASE_CUDA_CFLAGS, extra_cuda_cflags]
    meta = [torch.__version__, torch.version.cuda, sys.version, archs, flags]
    digest.update(json.dumps(meta + [list(extra_include_paths)]).encode())
    return archs, digest.hexdigest()[:16]


def _import_from_path(module_name: str, path: str):
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_cached(build_dir: str, module_name: str):
    """The library built earlier into `build_dir` (by any process), or None."""
    try:
        with open(os.path.join(build_dir, _OK_MARKER)) as f:
            library = os.path.join(build_dir, json.load(f)['library'])
    except (OSError, ValueError, KeyError):
        return None
    if not os.path.isfile(library):
        return None
    try:
        return _import_from_path(module_name, library)
    except ImportError as err:
        warnings.warn(
            f'custom_ops: rebuilding {build_dir}: its library does not import ({err})',
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _compile(
    module_name, build_dir, paths, sources, archs, extra_cflags, extra_cuda_cflags, includes, verbose
):
    """Copy the sources into `build_dir` and build them there with ninja (the caller holds the lock)."""
    from torch.utils import cpp_extension

    os.makedirs(build_dir, exist_ok=True)
    for path in paths:
        shutil.copyfile(path, os.path.join(build_dir, os.path.basename(path)))
    baton = os.path.join(
        build_dir, 'lock'
    )  # torch's own lock: a leftover from a killed build would hang load().
    if os.path.exists(baton):
        os.remove(baton)
    env_archs = os.environ.get('TORCH_CUDA_ARCH_LIST')
    if archs:
        os.environ['TORCH_CUDA_ARCH_LIST'] = ';'.join(archs)
    try:
        module = cpp_extension.load(
            name=module_name,
            sources=[os.path.join(build_dir, os.path.basename(s)) for s in sources],
            extra_cflags=[*BASE_CFLAGS, *extra_cflags],
            extra_cuda_cflags=[*BASE_CUDA_CFLAGS, *extra_cuda_cflags] if archs else None,
            extra_include_paths=list(includes),
            build_directory=build_dir,
            verbose=verbose,
            with_cuda=bool(archs),
        )
    finally:
        if env_archs is None:
            os.environ.pop('TORCH_CUDA_ARCH_LIST', None)
        else:
            os.environ['TORCH_CUDA_ARCH_LIST'] = env_archs
    with open(os.path.join(build_dir, _OK_MARKER), 'w') as f:
        json.dump(dict(library=os.path.basename(module.__file__), archs=archs), f)
    return module


def get_plugin(
    module_name,                # Python name of the extension; the sources must use TORCH_EXTENSION_NAME.
    sources,                    # .cpp/.cu files to compile (relative to source_dir).
    headers=(),                 # Extra files that the sources include (hashed and copied, not compiled).
    source_dir=None,            # Folder of sources and headers; None = paths are as given.
    extra_cflags=(),            # Extra flags for the C++ compiler.
    extra_cuda_cflags=(),       # Extra flags for nvcc.
    extra_include_paths=(),     # Extra include folders.
    lock_timeout=1800.0,        # Seconds to wait for another process's build before giving up.
    verbose=False,              # Print the compiler's commands and output.
):  # fmt: skip
    """Build (first use) or load (cache hit) an extension; raises BuildError with a clear message on failure.

    Repeated calls with the same arguments return the loaded module (or raise the first error) at once:
    a failed build is not retried within a process.
    """
    paths = [os.path.join(source_dir, p) if source_dir else p for p in [*sources, *headers]]
    flags = (tuple(extra_cflags), tuple(extra_cuda_cflags), tuple(extra_include_paths))
    call_key = (module_name, tuple(paths), flags, os.environ.get('TORCH_CUDA_ARCH_LIST'), _cache_root())
    if call_key in _plugins:
        return _plugins[call_key]
    if call_key in _failures:
        raise _failures[call_key]
    with _build_mutex:
        try:
            module = _build_or_load(module_name, paths, sources, *flags, lock_timeout, verbose)
        except BuildError as err:
            _failures[call_key] = err  # Not retried in this process; the next process tries again.
            raise
    _plugins[call_key] = module
    return module


def _build_or_load(module_name, paths, sources, extra_cflags, extra_cuda_cflags, extra_include_paths, lock_timeout,
                   verbose):  # fmt: skip
    for path in paths:
        if not os.path.isfile(path):
            raise BuildError(f'custom_ops: source file {path} of "{module_name}" does not exist')
    with_cuda = any(_is_cuda_source(p) for p in sources)
    reason = missing_build_tool(with_cuda)
    if reason is not None:
        raise BuildError(f'cannot build "{module_name}": {reason}')
    includes = [*extra_include_paths, *(_cuda_extra_include_paths() if with_cuda else [])]
    archs, key = _build_spec(
        module_name, paths, with_cuda, list(extra_cflags), list(extra_cuda_cflags), includes
    )
    build_dir = os.path.join(_cache_root(), f'{module_name}-{key}')
    module = _load_cached(build_dir, module_name)
    if module is None:
        with BuildLock(build_dir + '.lock', timeout=lock_timeout):
            module = _load_cached(build_dir, module_name)  # Another rank may have built it meanwhile.
            if module is None:
                module = _compile_or_raise(module_name, build_dir, paths, sources, archs, extra_cflags,
                                           extra_cuda_cflags, includes, verbose)  # fmt: skip
    return module


def _compile_or_raise(module_name, build_dir, paths, *args):
    try:
        return _compile(module_name, build_dir, paths, *args)
    except Exception as err:  # A compiler error arrives as RuntimeError / CalledProcessError / OSError.
        os.makedirs(build_dir, exist_ok=True)
        log = os.path.join(build_dir, 'build_error.log')
        with open(log, 'w') as f:
            f.write(f'{type(err).__name__}: {err}\n')
        first = next(
            (line for line in str(err).splitlines() if 'error' in line.lower()), str(err).split('\n')[0]
        )
        raise BuildError(f'building "{module_name}" failed ({first.strip()[:200]}); full log: {log}') from err


def get_plugin_or_none(op_name, module_name, sources, **kwargs):
    """`get_plugin(...)`, or None after ONE warning (per op and reason) if the build is impossible or fails."""
    try:
        return get_plugin(module_name, sources, **kwargs)
    except BuildError as err:
        warn_fallback_once(op_name, f'its extension could not be built: {err}')
        return None


def load_cuda_twin(op_name: str, x: torch.Tensor, recipe: dict):
    """The compiled module of an op's CUDA twin for input `x`, or None after one warning when it cannot run.

    `recipe` holds get_plugin's arguments (module_name, sources, headers, source_dir, ...); an op module
    exposes it as `PLUGIN` so that `python -m torch_utils.custom_ops <op>` can pre-build it. Typical use:
        plugin = custom_ops.load_cuda_twin('volume_render', x, PLUGIN) if impl == 'cuda' else None
        if plugin is None: return _ref(...)
    """
    if x.device.type != 'cuda':
        warn_fallback_once(op_name, 'the input is not on a CUDA device')
        return None
    return get_plugin_or_none(op_name, **recipe)


# ----------------------------------------------------------------------------
# Command line: pre-build (or compile-check) the CUDA twins of ops that define a PLUGIN recipe.


def build_op(op: str, verbose: bool = False):
    """Build the extension of `torch_utils.ops.<op>` from its module-level PLUGIN dict; returns the module."""
    try:
        recipe = importlib.import_module(f'torch_utils.ops.{op}').PLUGIN
    except (ImportError, AttributeError) as err:
        raise BuildError(f'torch_utils.ops.{op} has no PLUGIN build recipe ({err})') from err
    return get_plugin(**recipe, verbose=verbose)


def _main(argv):
    import argparse

    parser = argparse.ArgumentParser(
        description='Build (or compile-check) the CUDA twins of torch_utils.ops.'
    )
    parser.add_argument('ops', nargs='*', default=['bias_act', 'upfirdn2d'], help='op modules to build')
    parser.add_argument('--verbose', action='store_true', help='print the compiler commands and output')
    args = parser.parse_args(argv)
    print(f'cache: {_cache_root()}  TORCH_CUDA_ARCH_LIST: {os.environ.get("TORCH_CUDA_ARCH_LIST")}')
    failed = 0
    for op in args.ops:
        start = time.time()
        try:
            module = build_op(op, verbose=args.verbose)
            print(f'{op}: OK in {time.time() - start:.0f} s -> {module.__file__}')
        except BuildError as err:
            failed += 1
            print(f'{op}: FAILED: {err}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(_main(sys.argv[1:]))
