import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from repo_paths import REPO_ROOT
from shared_doubles import TinyNet, make_tiny_opt, train_tiny

import dnnlib
from torch_utils import checkpoint, misc

ROOT = REPO_ROOT
EXECUTED = []  # Appended to if unpickling ever runs code of _Evil.


class NoKwargsNet(torch.nn.Linear):
    pass


def _record_execution(what):
    EXECUTED.append(what)


class _Evil:
    def __reduce__(self):
        return (_record_execution, ('ran',))


def _snapshot(net, opt, cur_nimg):
    return dict(
        modules=dict(G=checkpoint.module_state(net)),
        optimizers=dict(G=checkpoint.optimizer_state(opt)),
        rng_state=misc.get_rng_state(),
        cur_nimg=cur_nimg,
        training_options=dnnlib.EasyDict(lr=1e-2, betas=(0.0, 0.99)),
    )


def test_resume_continues_bit_exactly(tmp_path):
    path = tmp_path / 'snapshot.pt'
    misc.set_seed(0)
    net = TinyNet(options=dnnlib.EasyDict(dropout=0.2))
    opt = make_tiny_opt(net)
    train_tiny(net, opt, 3)
    checkpoint.save(path, _snapshot(net, opt, cur_nimg=24))
    train_tiny(net, opt, 3)  # the uninterrupted run

    misc.set_seed(123)  # a resumed process starts from unrelated RNG state
    data = checkpoint.load(path)
    assert data['format_version'] == checkpoint.FORMAT_VERSION and data['cur_nimg'] == 24
    resumed = checkpoint.build_module(data['modules']['G']).train()
    resumed_opt = make_tiny_opt(resumed)
    checkpoint.load_optimizer_state(resumed_opt, data['optimizers']['G'])
    misc.set_rng_state(data['rng_state'])
    train_tiny(resumed, resumed_opt, 3)

    final, resumed_final = net.state_dict(), resumed.state_dict()
    assert list(final) == list(resumed_final)
    for key in final:
        assert torch.equal(final[key], resumed_final[key]), key
    for a, b in zip(opt.state.values(), resumed_opt.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in ('step', 'exp_avg', 'exp_avg_sq'))


def test_module_state_is_plain_data(tmp_path):
    net = TinyNet(hidden=(5,), options=dnnlib.EasyDict(dropout=0.0))
    state = checkpoint.module_state(net)
    assert state['class_name'] == 'test.TinyNet'  # the stable name, not the import path
    assert state['init_kwargs'] == dict(in_features=4, hidden=[5], options=dict(dropout=0.0))
    assert type(state['init_kwargs']) is dict and type(state['init_kwargs']['options']) is dict
    checkpoint.save(tmp_path / 'a.pt', dict(modules=dict(G=state), cfg=dnnlib.EasyDict(a=(1, 2))))
    data = checkpoint.load(tmp_path / 'a.pt')  # weights_only=True accepted every entry
    assert data['cfg'] == dict(a=(1, 2)) and type(data['cfg']) is dict
    net_ddp_like = checkpoint.module_state(net)['state_dict']
    assert all(type(v) is torch.Tensor for v in net_ddp_like.values())  # no Parameter subclass stored


def test_every_plain_type_round_trips(tmp_path):
    data = dict(
        ints=[0, -3, 1 << 40],
        floats=(1.5, float('inf')),
        text='a',
        raw=b'\x00\x01',
        flags=[True, False, None],
        nested={1: {'x': [(1, 2), []]}},
        dtype=torch.float16,
        device=torch.device('cpu'),
        size=torch.Size([2, 3]),
        tensor=torch.arange(6, dtype=torch.int16).reshape(2, 3),
    )
    checkpoint.save(tmp_path / 'a.pt', dict(data, np_scalar=np.float32(0.5), np_array=np.eye(2)))
    loaded = checkpoint.load(tmp_path / 'a.pt')
    for key, value in data.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(loaded[key], value) and loaded[key].dtype == value.dtype
        else:
            assert loaded[key] == value and type(loaded[key]) is type(value), key
    assert loaded['np_scalar'] == 0.5 and torch.equal(loaded['np_array'], torch.eye(2, dtype=torch.float64))
    view = torch.arange(10_000)[:3]
    checkpoint.save(tmp_path / 'v.pt', dict(view=view))
    assert os.path.getsize(tmp_path / 'v.pt') < 10_000  # a view stores only what it shows


def test_save_refuses_objects_and_names_the_entry(tmp_path):
    with pytest.raises(TypeError, match=r"data\['cfg'\]\['fn'\] is a builtins.function"):
        checkpoint.save(tmp_path / 'a.pt', dict(cfg=dict(fn=lambda x: x)))
    with pytest.raises(TypeError, match=r"data\['s'\] is a builtins.set"):
        checkpoint.save(tmp_path / 'a.pt', dict(s={1, 2}))
    with pytest.raises(TypeError, match='NumPy array of Python objects'):
        checkpoint.save(tmp_path / 'a.pt', dict(a=np.array([None])))
    assert not os.listdir(tmp_path)


def test_pickled_object_is_refused_without_running_it(tmp_path):
    path = tmp_path / 'evil.pt'
    torch.save(dict(format_version=1, payload=_Evil()), path)  # written bypassing checkpoint.save
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.load(path)
    message = str(info.value)
    assert str(path) in message and 'pickled Python object' in message and 'never executes code' in message
    assert '_record_execution' in message  # names the global it refused
    assert '\n' not in message
    assert EXECUTED == []


@pytest.mark.parametrize('kind', ['empty', 'text', 'truncated', 'no_version', 'newer', 'not_dict'])
def test_unreadable_files_get_one_line_messages(tmp_path, kind):
    path = tmp_path / 'bad.pt'
    good = tmp_path / 'good.pt'
    checkpoint.save(good, dict(x=torch.arange(1000)))
    expected = {
        'empty': 'empty',
        'text': 'not a PGRF checkpoint',
        'truncated': 'truncated or corrupt',
        'no_version': 'no format_version',
        'newer': 'newer than this code supports',
        'not_dict': 'no format_version',
    }[kind]
    if kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'text':
        path.write_text('hello\n')
    elif kind == 'truncated':
        blob = good.read_bytes()
        path.write_bytes(blob[: len(blob) // 2])
    elif kind == 'no_version':
        torch.save(dict(x=1), path)
    elif kind == 'newer':
        torch.save(dict(format_version=checkpoint.FORMAT_VERSION + 1), path)
    else:
        torch.save([1, 2], path)
    with pytest.raises(checkpoint.CheckpointError, match=expected) as info:
        checkpoint.load(path)
    assert str(path) in str(info.value) and '\n' not in str(info.value)
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        checkpoint.load(tmp_path / 'missing.pt')


def test_failure_mid_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / 'snap.pt'
    checkpoint.save(path, dict(value=torch.full([100], 1.0)))
    real_save = torch.save

    def half_then_fail(obj, f):
        real_save(obj, f)
        f.truncate(f.tell() // 2)  # half the bytes reached the temp file
        raise OSError('disk full (simulated)')

    monkeypatch.setattr(checkpoint.torch, 'save', half_then_fail)
    with pytest.raises(OSError, match='simulated'):
        checkpoint.save(path, dict(value=torch.full([100], 2.0)))
    monkeypatch.undo()
    assert torch.equal(checkpoint.load(path)['value'], torch.full([100], 1.0))
    assert os.listdir(tmp_path) == ['snap.pt']  # the temp file was removed


_KILLED_WRITER = """
import sys, time, torch
from torch_utils import checkpoint
def stuck(obj, f):
    f.write(b'PK\\x03\\x04' + b'x' * 1000)
    f.flush()
    print('writing', flush=True)
    time.sleep(60)
checkpoint.torch.save = stuck
checkpoint.save(sys.argv[1], dict(value=torch.zeros(3)))
"""


def test_sigkill_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / 'snap.pt'
    checkpoint.save(path, dict(value=torch.ones(3)))
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.Popen(
        [sys.executable, '-c', textwrap.dedent(_KILLED_WRITER), str(path)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout.readline().strip() == b'writing'
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert torch.equal(checkpoint.load(path)['value'], torch.ones(3))
    leftovers = [n for n in os.listdir(tmp_path) if n != 'snap.pt']
    assert len(leftovers) == 1 and leftovers[0].startswith('.snap.pt.tmp-')  # hidden, never a snapshot


def test_key_mismatch_gives_a_readable_diff():
    state = checkpoint.module_state(TinyNet())
    sd = state['state_dict']
    del sd['layers.1.bias']
    sd['extra.weight'] = torch.zeros(2)
    sd['layers.0.weight'] = torch.zeros(3, 3)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.build_module(state)
    message = str(info.value)
    assert 'missing in checkpoint (1): layers.1.bias' in message
    assert 'unexpected in checkpoint (1): extra.weight' in message
    assert 'shape mismatch: layers.0.weight: module [8, 4], checkpoint [3, 3]' in message


def test_bad_kwargs_and_missing_init_kwargs():
    state = checkpoint.module_state(TinyNet())
    state['init_kwargs']['widht'] = 3
    with pytest.raises(checkpoint.CheckpointError, match='cannot rebuild test.TinyNet .*widht'):
        checkpoint.build_module(state)
    with pytest.raises(TypeError, match='record_init_kwargs'):
        checkpoint.module_state(NoKwargsNet(2, 2))
    with pytest.raises(checkpoint.CheckpointError, match='not a module state'):
        checkpoint.build_module(dict(state_dict={}))


def test_load_network_eval_and_frozen(tmp_path):
    path = tmp_path / 'net.pt'
    net = TinyNet()
    checkpoint.save(
        path, dict(format_version=checkpoint.FORMAT_VERSION, modules={'G_ema': checkpoint.module_state(net)})
    )
    G = checkpoint.load_network(path)
    assert isinstance(G, TinyNet) and not G.training
    assert not any(p.requires_grad for p in G.parameters())
    x = torch.randn(2, 4)
    assert torch.equal(G(x), net.eval()(x))
    with pytest.raises(checkpoint.CheckpointError, match='has no network "D"; it holds: G_ema'):
        checkpoint.load_network(path, name='D')


def test_optimizer_state_mismatch():
    net = TinyNet()
    state = checkpoint.optimizer_state(make_tiny_opt(net))
    other = torch.optim.Adam(list(net.parameters())[:2])
    with pytest.raises(checkpoint.CheckpointError, match=r'param groups of sizes \[4\].*has \[2\]'):
        checkpoint.load_optimizer_state(other, state)


@pytest.mark.gpu
def test_cuda_module_saves_to_cpu_and_loads_on_either(tmp_path):
    net = TinyNet().cuda()
    state = checkpoint.module_state(net)
    assert all(v.device.type == 'cpu' for v in state['state_dict'].values())
    checkpoint.save(tmp_path / 'g.pt', dict(modules=dict(G_ema=state)))
    G = checkpoint.load_network(tmp_path / 'g.pt', device='cuda')
    assert next(G.parameters()).device.type == 'cuda'
    x = torch.randn(2, 4, device='cuda')
    assert torch.equal(G(x), net.eval()(x))
    assert checkpoint.load(tmp_path / 'g.pt', map_location='cuda')['modules']['G_ema']['state_dict'][
        'layers.0.weight'
    ].is_cuda


def test_load_network_is_the_one_loader_with_one_line_errors(tmp_path):
    net = TinyNet()
    state = checkpoint.module_state(net)
    options = dict(dataset_kwargs=dict(path='data'))
    checkpoint.save(tmp_path / 'net.pt', dict(modules={'G_ema': state}, training_options=options))
    G, stored = checkpoint.load_network(tmp_path / 'net.pt', with_options=True)
    assert isinstance(G, TinyNet) and stored == options
    del state['state_dict']['layers.1.bias']
    checkpoint.save(tmp_path / 'old.pt', dict(modules={'G_ema': state}))  # weights that no longer fit
    state = checkpoint.module_state(net)
    state['class_name'] = 'torch_utils.nowhere.Net'
    checkpoint.save(tmp_path / 'foreign.pt', dict(modules={'G_ema': state}))
    (tmp_path / 'text.pt').write_text('hello\n')
    for name, words in (
        ('missing.pt', 'does not exist'),
        ('text.pt', 'not a PGRF checkpoint'),
        ('old.pt', 'missing in checkpoint (1): layers.1.bias'),
        ('foreign.pt', '"torch_utils.nowhere.Net" is not a class PGRF builds by name'),
    ):
        with pytest.raises(checkpoint.CheckpointError) as info:
            checkpoint.load_network(tmp_path / name)
        message = str(info.value)
        assert words in message and str(tmp_path / name) in message and '\n' not in message, message
