"""custom_ops: build + cache hit, one-warning fallback, build lock (stale owners, timeout), CUDA arch choice."""

import json
import os
import subprocess
import sys
import threading
import time
import warnings

import pytest

from torch_utils import custom_ops

TINY_OP = """
#include <pybind11/pybind11.h>
int add_twice(int a, int b) { return a + 2 * b; }
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("add_twice", &add_twice); }
"""

BROKEN_OP = 'int broken( {\n'


@pytest.fixture
def ext_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path / 'ext'))
    monkeypatch.setattr(custom_ops, '_plugins', {})
    monkeypatch.setattr(custom_ops, '_failures', {})
    monkeypatch.setattr(custom_ops, '_warned', set())
    return tmp_path / 'ext'


def _write(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return str(folder)


@pytest.mark.slow
def test_build_run_then_cache_hit_without_compiler(ext_dir, tmp_path, monkeypatch):
    src = _write(tmp_path / 'src', 'tiny_op.cpp', TINY_OP)
    module = custom_ops.get_plugin('pgrf_tiny_op', ['tiny_op.cpp'], source_dir=src, extra_cflags=['-O0'])
    assert module.add_twice(1, 3) == 7
    (build_dir,) = [p for p in ext_dir.iterdir() if p.is_dir()]
    assert build_dir.name.startswith('pgrf_tiny_op-')
    assert json.loads((build_dir / custom_ops._OK_MARKER).read_text())['library'].endswith('.so')
    assert not (ext_dir / f'{build_dir.name}.lock').exists()

    # A new process (simulated: empty in-memory cache) loads the library from disk; no compiler is run.
    from torch.utils import cpp_extension

    monkeypatch.setattr(custom_ops, '_plugins', {})
    monkeypatch.setattr(cpp_extension, 'load', lambda **kw: pytest.fail('cache hit must not rebuild'))
    again = custom_ops.get_plugin('pgrf_tiny_op', ['tiny_op.cpp'], source_dir=src, extra_cflags=['-O0'])
    assert again.add_twice(2, 5) == 12

    # Editing the source changes the hash, so the next load would build into a new folder.
    paths = [os.path.join(src, 'tiny_op.cpp')]
    _, key1 = custom_ops._build_spec('pgrf_tiny_op', paths, False, ['-O0'], [], [])
    _write(tmp_path / 'src', 'tiny_op.cpp', TINY_OP.replace('2 * b', '3 * b'))
    _, key2 = custom_ops._build_spec('pgrf_tiny_op', paths, False, ['-O0'], [], [])
    assert key1 == build_dir.name.split('-')[-1] and key2 != key1


def test_failed_build_falls_back_with_one_warning(ext_dir, tmp_path, monkeypatch):
    src = _write(tmp_path / 'src', 'broken_op.cpp', BROKEN_OP)
    with pytest.warns(RuntimeWarning, match=r'my_op: impl="cuda" falls back to impl="ref".*build_error\.log'):
        assert (
            custom_ops.get_plugin_or_none('my_op', 'pgrf_broken_op', ['broken_op.cpp'], source_dir=src)
            is None
        )
    (log,) = ext_dir.glob('pgrf_broken_op-*/build_error.log')
    assert 'error' in log.read_text().lower()
    # Second use in this process: no retry, no second warning.
    monkeypatch.setattr(custom_ops, '_compile', lambda *a: pytest.fail('a failed build must not be retried'))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert (
            custom_ops.get_plugin_or_none('my_op', 'pgrf_broken_op', ['broken_op.cpp'], source_dir=src)
            is None
        )
    with pytest.raises(custom_ops.BuildError, match='building "pgrf_broken_op" failed'):
        custom_ops.get_plugin('pgrf_broken_op', ['broken_op.cpp'], source_dir=src)


def test_missing_tools_and_sources_give_clear_errors(ext_dir, tmp_path, monkeypatch):
    src = _write(tmp_path / 'src', 'tiny_op.cpp', TINY_OP)
    with pytest.raises(custom_ops.BuildError, match='nope.cpp .* does not exist'):
        custom_ops.get_plugin('pgrf_tiny_op', ['nope.cpp'], source_dir=src)
    monkeypatch.setenv('CXX', 'no-such-compiler-xyz')
    with pytest.raises(custom_ops.BuildError, match='no C\\+\\+ compiler "no-such-compiler-xyz"'):
        custom_ops.get_plugin('pgrf_tiny_op', ['tiny_op.cpp'], source_dir=src)
    with pytest.warns(RuntimeWarning, match='falls back'):
        assert custom_ops.get_plugin_or_none('tiny', 'pgrf_tiny_op', ['tiny_op.cpp'], source_dir=src) is None
    monkeypatch.delenv('CXX')
    _write(tmp_path / 'src', 'k.cu', '__global__ void k() {}\n')
    if custom_ops.missing_build_tool(with_cuda=True) is not None:  # CPU-only torch here: CUDA build refused.
        with pytest.raises(custom_ops.BuildError, match='cannot build "pgrf_k"'):
            custom_ops.get_plugin('pgrf_k', ['k.cu'], source_dir=src)


# ----------------------------------------------------------------------------
# The build lock.


def _write_lock(path, pid, host=None, age=0.0):
    path.write_text(json.dumps(dict(host=host or custom_ops.socket.gethostname(), pid=pid, token='old')))
    t = time.time() - age
    os.utime(path, (t, t))


def test_lock_breaks_when_owner_pid_is_gone(tmp_path):
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()  # Its pid is now free (and not reused this fast in practice).
    lock_path = tmp_path / 'x.lock'
    _write_lock(lock_path, proc.pid)
    with pytest.warns(RuntimeWarning, match='stale build lock .*pid .* is gone'):
        with custom_ops.BuildLock(str(lock_path), timeout=5):
            assert json.loads(lock_path.read_text())['pid'] == os.getpid()
    assert not lock_path.exists()


def test_lock_breaks_when_heartbeat_stopped(tmp_path):
    lock_path = tmp_path / 'x.lock'
    _write_lock(lock_path, pid=1, host='another-node', age=120)  # Other host: only the age tells.
    with pytest.warns(RuntimeWarning, match='not refreshed for'):
        with custom_ops.BuildLock(str(lock_path), timeout=5, stale_after=60):
            pass
    assert not lock_path.exists()


def test_lock_times_out_with_clear_message_while_owner_lives(tmp_path):
    lock_path = tmp_path / 'x.lock'
    _write_lock(lock_path, pid=os.getppid())  # A live process on this host, fresh heartbeat.
    start = time.monotonic()
    with pytest.raises(
        custom_ops.BuildError, match=r'timed out after 0.5 s .*x\.lock held by .*delete that file'
    ):
        custom_ops.BuildLock(str(lock_path), timeout=0.5).acquire()
    assert time.monotonic() - start < 5
    assert json.loads(lock_path.read_text())['token'] == 'old'  # Someone else's lock is left alone.


def test_lock_heartbeat_and_mutual_exclusion(tmp_path):
    lock_path = str(tmp_path / 'x.lock')
    events = []

    def worker(i):
        with custom_ops.BuildLock(lock_path, timeout=20, stale_after=0.4):
            events.append(('in', i))
            time.sleep(0.6)  # Longer than stale_after: only the heartbeat keeps the lock alive.
            events.append(('out', i))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # A lock broken while its owner works would warn.
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(events) == 6
    for k in range(0, 6, 2):  # Strictly alternating in/out of the same worker.
        assert events[k][0] == 'in' and events[k + 1] == ('out', events[k][1])
    assert not os.path.exists(lock_path)


# ----------------------------------------------------------------------------
# CUDA architectures.


def test_select_cuda_archs():
    supported = ['7.5', '8.0', '8.6', '9.0', '10.0']
    assert custom_ops.select_cuda_archs('8.0;9.0+PTX', [], supported) == ['8.0', '9.0+PTX']
    assert custom_ops.select_cuda_archs('8.6 9.0', ['8.0'], supported) == ['8.6', '9.0']  # The list wins.
    assert custom_ops.select_cuda_archs('9.0a;Hopper', [], supported) == ['9.0a', 'Hopper']
    assert custom_ops.select_cuda_archs(None, ['9.0', '8.0', '9.0'], supported) == ['8.0', '9.0']
    assert custom_ops.select_cuda_archs(None, [], ['8.0', '9.0']) == ['8.0', '9.0']  # Defaults, filtered.
    with pytest.raises(custom_ops.BuildError, match=r"\['7.0'\] are not supported .*CUDA 12"):
        custom_ops.select_cuda_archs(None, ['7.0'], supported)  # A V100 with a CUDA 13 toolkit.
    with pytest.raises(custom_ops.BuildError, match='TORCH_CUDA_ARCH_LIST'):
        custom_ops.select_cuda_archs('7.0;8.0', [], supported)


def test_nvcc_supported_archs_parses_toolkit_list(tmp_path):
    fake = tmp_path / 'nvcc'
    fake.write_text('#!/bin/sh\necho "compute_75 compute_90"\necho compute_100\n')
    fake.chmod(0o755)
    assert custom_ops.nvcc_supported_archs(str(fake)) == ['7.5', '9.0', '10.0']
    assert custom_ops.nvcc_supported_archs(str(tmp_path / 'missing')) == []
