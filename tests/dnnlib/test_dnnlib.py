import hashlib
import os

import pytest

import dnnlib


def test_easydict_attribute_access():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d['b'] == 2 and d.a == 1
    del d.a
    assert 'a' not in d
    with pytest.raises(AttributeError):
        _ = d.missing


def test_construct_class_by_name_builds_registered_classes_only():
    prior = dnnlib.construct_class_by_name(
        class_name='pgrf.make_camera_prior', kind='normal', radius=2.0, fov=30.0
    )
    old = dnnlib.construct_class_by_name(
        class_name='training.cameras.make_camera_prior', kind='normal', radius=2.0, fov=30.0
    )  # the import path that format-1 snapshots and older training_options.json hold: an alias
    assert type(prior) is type(old) and type(prior).__name__ == 'NormalCameraPrior'
    with pytest.raises(TypeError):
        dnnlib.construct_class_by_name(class_name='pgrf.make_camera_prior', kindd='normal')
    with pytest.raises(ValueError, match='"collections.OrderedDict" is not a class PGRF builds by name'):
        dnnlib.construct_class_by_name(class_name='collections.OrderedDict', a=1)


def test_open_url_local_path_and_hash(tmp_path):
    path = tmp_path / 'weights.bin'
    path.write_bytes(b'abc')
    digest = hashlib.sha256(b'abc').hexdigest()
    with dnnlib.open_url(str(path), sha256=digest) as f:
        assert f.read() == b'abc'
    with pytest.raises(OSError, match='corrupt'):
        dnnlib.open_url(str(path), sha256='0' * 64)
    with pytest.raises(FileNotFoundError):
        dnnlib.open_url(str(tmp_path / 'missing.bin'))


def test_open_url_uses_cache_and_explains_offline_failure(tmp_path, monkeypatch):
    monkeypatch.setenv('PGRF_CACHE_DIR', str(tmp_path))
    url = 'http://127.0.0.1:9/unreachable/net.pt'  # discard port: nothing listens
    with pytest.raises(OSError, match='place it at') as info:
        dnnlib.open_url(url, timeout=2)
    cached = str(info.value).split('place it at ')[1].split(' ')[0]
    assert cached.startswith(str(tmp_path))
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached, 'wb') as f:
        f.write(b'offline copy')
    with dnnlib.open_url(url) as f:
        assert f.read() == b'offline copy'
