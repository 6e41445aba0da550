"""training/loop/snapshots.py, the one writer and reader of training snapshots: exact restore, reseeding when the
world differs, refusal of files it cannot resume, fallback past a corrupt newest snapshot, unique names."""

import os

import pytest
import torch
from shared_doubles import TinyNet, make_tiny_opt, train_tiny
from test_train_fixtures import tiny_train_state

from torch_utils import checkpoint, misc
from training.loop import run_dir, snapshots


class Lines:
    """Stands in for RunLog: keeps what the loop would print."""

    def __init__(self):
        self.lines = []

    def print(self, *parts):
        self.lines.append(' '.join(str(p) for p in parts))


def _saved_state(tmp_path, steps=2, cur_nimg=16):
    misc.set_seed(1)
    net = TinyNet()
    opt = make_tiny_opt(net)
    train_tiny(net, opt, steps)
    s = tiny_train_state(net, dict(G=opt), run_dir=str(tmp_path))
    s.progress.cur_nimg, s.progress.batch_idx = cur_nimg, steps
    return s, snapshots.save_snapshot(s)


def test_restore_continues_bit_exactly(tmp_path):
    s, path = _saved_state(tmp_path)
    assert os.path.basename(path) == 'network-snapshot-000000.016.pt'
    train_tiny(s.G, s.optimizers['G'], 2)  # the uninterrupted run
    misc.set_seed(77)  # a resumed process starts from unrelated RNG state
    net = TinyNet()
    resumed = tiny_train_state(net, dict(G=make_tiny_opt(net)))
    snapshots.restore(resumed, checkpoint.load(path), path)
    train_tiny(resumed.G, resumed.optimizers['G'], 2)
    assert resumed.progress.cur_nimg == 16 and resumed.progress.batch_idx == 2
    for a, b in zip(s.G.state_dict().values(), resumed.G.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(s.optimizers['G'].state.values(), resumed.optimizers['G'].state.values()):
        assert all(torch.equal(a[k], b[k]) for k in ('step', 'exp_avg', 'exp_avg_sq'))


def test_other_world_size_or_device_warns_and_reseeds_deterministically(tmp_path):
    s, path = _saved_state(tmp_path)
    data = checkpoint.load(path)
    two_ranks = dict(data, rng=dict(data['rng'], world_size=2, states=data['rng']['states'] * 2))
    on_cuda = dict(data, rng=dict(data['rng'], device_type='cuda'))
    for changed, words in (
        (two_ranks, 'written by 2 process(es) on cpu'),
        (on_cuda, '1 process(es) on cuda'),
    ):
        draws = []
        for _ in range(2):
            resumed = tiny_train_state(TinyNet(), {})
            resumed.log = Lines()
            snapshots.restore(resumed, changed, path)
            draws.append(torch.rand(3))
            [line] = resumed.log.lines
            assert line.startswith('WARNING: ') and words in line and 'not bit-wise' in line, line
        assert torch.equal(draws[0], draws[1])  # deterministic given the snapshot


def test_files_that_cannot_be_resumed_are_refused_in_one_line(tmp_path):
    s, path = _saved_state(tmp_path)
    data = checkpoint.load(path)
    networks_only = dict(format_version=1, modules=data['modules'], cur_nimg=16)  # the removed layout
    with pytest.raises(checkpoint.CheckpointError, match='not a training snapshot written by train.py'):
        snapshots.restore(tiny_train_state(TinyNet(), {}), networks_only, 'old.pt')
    wider = TinyNet(hidden=(8, 7))
    with pytest.raises(
        checkpoint.CheckpointError, match=r'built with hidden=\[8, 6\] but this run uses hidden=\[8, 7\]'
    ):
        snapshots.restore(tiny_train_state(wider, {}), data, path)
    other_class = dict(data, modules=dict(G=dict(data['modules']['G'], class_name='pgrf.Generator')))
    with pytest.raises(
        checkpoint.CheckpointError, match='G is a pgrf.Generator in the snapshot but a test.TinyNet'
    ):
        snapshots.restore(tiny_train_state(TinyNet(), {}), other_class, path)


def test_a_snapshot_from_before_a_new_constructor_parameter_resumes_with_its_default(tmp_path):
    _, path = _saved_state(tmp_path)
    data = checkpoint.load(path)
    G = data['modules']['G']
    older = dict(
        data,
        modules=dict(G=dict(G, init_kwargs={k: v for k, v in G['init_kwargs'].items() if k != 'hidden'})),
    )
    snapshots.restore(
        tiny_train_state(TinyNet(), {}), older, path
    )  # built with hidden's default, as this run
    with pytest.raises(checkpoint.CheckpointError, match=r'built with hidden=\[8, 6\] but this run uses'):
        snapshots.restore(
            tiny_train_state(TinyNet(hidden=(8, 7)), {}), older, path
        )  # the default is not this


def test_corrupt_newest_snapshot_falls_back_with_a_warning_naming_both(tmp_path):
    _, good = _saved_state(tmp_path, cur_nimg=16)
    newest = os.path.join(tmp_path, run_dir.snapshot_name(24))
    with open(good, 'rb') as f:
        head = f.read(2000)
    with open(newest, 'wb') as f:
        f.write(head)  # a write cut short (e.g. copied off a full disk)
    log = Lines()
    data, path = snapshots.load_latest(str(tmp_path), log)
    assert path == good and data['progress']['cur_nimg'] == 16
    [line] = log.lines
    assert line.startswith('WARNING: skipping unreadable snapshot') and newest in line and good in line, line
    os.remove(good)
    with pytest.raises(checkpoint.CheckpointError, match='no readable snapshot .*truncated or corrupt'):
        snapshots.load_latest(str(tmp_path), Lines())


def test_snapshot_names_are_unique_inside_one_kimg_and_sort_by_images():
    names = [run_dir.snapshot_name(n) for n in (16, 32, 1000, 1016, 12000)]
    assert names == [
        'network-snapshot-000000.016.pt', 'network-snapshot-000000.032.pt', 'network-snapshot-000001.pt',
        'network-snapshot-000001.016.pt', 'network-snapshot-000012.pt',
    ]  # fmt: skip
    assert [run_dir.snapshot_nimg(n) for n in names] == [16, 32, 1000, 1016, 12000]
    assert run_dir.snapshot_nimg('network-snapshot-12.pt.tmp') is None


def test_input_stream_continues_across_world_sizes(tmp_path):
    """The global batch's input stream is restored whatever the world size (it is one for all ranks)."""
    s = tiny_train_state(TinyNet(), {}, run_dir=str(tmp_path))
    torch.rand(5, generator=s.input_stream)  # the run has drawn some inputs before the snapshot
    path = snapshots.save_snapshot(s)
    expected = torch.rand(4, generator=s.input_stream)  # what the uninterrupted run draws next
    data = checkpoint.load(path)
    two_ranks = dict(data, rng=dict(data['rng'], world_size=2, states=data['rng']['states'] * 2))
    for rank in range(2):
        resumed = tiny_train_state(TinyNet(), {}, rank=rank, world_size=2)
        resumed.log = Lines()
        snapshots.restore(resumed, two_ranks, path)
        assert torch.equal(torch.rand(4, generator=resumed.input_stream), expected)
