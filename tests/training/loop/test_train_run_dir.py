"""Run directories, snapshot discovery, --resume resolution, the log tee, and the resumable data stream."""

import itertools
import os

import pytest

from training.loop import data_iter, run_dir


def test_run_dirs_are_numbered_and_never_reused(tmp_path):
    a = run_dir.make_run_dir(str(tmp_path), 'demo')
    b = run_dir.make_run_dir(str(tmp_path), 'demo-x')
    assert os.path.basename(a) == '00000-demo' and os.path.basename(b) == '00001-demo-x'
    os.rmdir(a)
    assert os.path.basename(run_dir.make_run_dir(str(tmp_path), 'y')) == '00002-y'


def test_latest_run_and_snapshots(tmp_path):
    first = run_dir.make_run_dir(str(tmp_path), 'a')
    run_dir.make_run_dir(str(tmp_path), 'b')  # no snapshot: not resumable
    for kimg in (4, 12, 8):
        open(os.path.join(first, run_dir.snapshot_name(kimg * 1000)), 'wb').close()
    assert run_dir.find_latest_run(str(tmp_path)) == first
    names = [os.path.basename(p) for p in run_dir.list_snapshots(first)]
    assert names == ['network-snapshot-000004.pt', 'network-snapshot-000008.pt', 'network-snapshot-000012.pt']
    assert run_dir.resolve_resume('latest', str(tmp_path)) == (first, None)
    snap = run_dir.list_snapshots(first)[0]
    assert run_dir.resolve_resume(snap, str(tmp_path)) == (snap, 'file')


def test_resume_errors_are_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match='no run with a snapshot'):
        run_dir.resolve_resume('latest', str(tmp_path))
    with pytest.raises(FileNotFoundError, match='no such file or run directory'):
        run_dir.resolve_resume(str(tmp_path / 'missing.pt'), str(tmp_path))
    empty = run_dir.make_run_dir(str(tmp_path), 'e')
    with pytest.raises(FileNotFoundError, match='holds no network-snapshot'):
        run_dir.resolve_resume(empty, str(tmp_path))


def test_log_tees_without_touching_stdout(tmp_path, capsys):
    import sys

    stdout = sys.stdout
    log = run_dir.RunLog(str(tmp_path / 'log.txt'))
    log.print('tick', 1)
    log.close()
    assert sys.stdout is stdout
    assert capsys.readouterr().out == 'tick 1\n'
    assert (tmp_path / 'log.txt').read_text() == 'tick 1\n'


def test_infinite_sampler_ranks_interleave_and_resume_exactly():
    n, seed = 7, 3
    single = list(itertools.islice(iter(data_iter.InfiniteSampler(n, seed=seed)), 40))
    assert sorted(single[:7]) == list(range(7)) and sorted(single[7:14]) == list(range(7))  # epochs
    ranks = [list(itertools.islice(iter(data_iter.InfiniteSampler(n, r, 2, seed)), 20)) for r in range(2)]
    assert [x for pair in zip(*ranks) for x in pair] == single  # rank k reads positions k, k + 2, ...
    resumed = list(itertools.islice(iter(data_iter.InfiniteSampler(n, seed=seed, start=12)), 28))
    assert resumed == single[12:]
