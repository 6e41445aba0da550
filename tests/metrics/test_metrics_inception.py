"""The FID Inception-v3: architecture, TF-style preprocessing and state_dict loading (random weights; no download)."""

import os

import pytest
import torch

from metrics import inception


def test_tf_resize_matches_naive_legacy_formula():
    in_size, out_size = 7, 11
    m = inception.tf_resize_matrix(in_size, out_size, dtype=torch.float64)
    x = torch.randn(in_size, dtype=torch.float64)
    naive = []
    for i in range(out_size):
        src = i * in_size / out_size  # TF legacy: no half-pixel offset
        lo = int(src)
        hi = min(lo + 1, in_size - 1)
        naive.append(x[lo] * (1 - (src - lo)) + x[hi] * (src - lo))
    assert torch.allclose(m @ x, torch.stack(naive))
    # Downsampling by 2 picks the even pixels exactly; the same size is the identity.
    assert torch.equal(
        inception.tf_resize_matrix(8, 4, dtype=torch.float64) @ torch.arange(8.0).double(),
        torch.tensor([0.0, 2, 4, 6], dtype=torch.float64),
    )
    assert torch.equal(inception.tf_resize_matrix(5, 5), torch.eye(5))


def test_preprocess_range_and_size():
    net = inception.InceptionV3FID()
    img = torch.tensor([0.0, 128.0, 255.0]).reshape(1, 3, 1, 1).expand(1, 3, 16, 16)
    x = net.preprocess(img)
    assert x.shape == (1, 3, 299, 299)
    assert torch.allclose(x[0, :, 100, 100], torch.tensor([-1.0, 0.0, 127 / 128]))


def test_block_widths_and_pool_features():
    torch.manual_seed(0)
    net = inception.InceptionV3FID().eval()
    x = torch.randn(1, 3, 75, 75)  # the smallest input the graph accepts, to keep the test fast
    with torch.no_grad():
        fmap = net.features(x)
        assert fmap.shape == (1, 2048, 1, 1)
        feats = net(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8))  # full 299x299 path
    assert feats.shape == (2, 2048) and (feats >= 0).all() and torch.isfinite(feats).all()
    assert not torch.allclose(feats[0], feats[1])
    widths = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, n=n: widths.__setitem__(n, o.shape[1]))
        for n, m in net.named_children()
        if n.startswith('Mixed')
    ]
    with torch.no_grad():
        net.features(x)
    for h in hooks:
        h.remove()
    assert widths == dict(
        Mixed_5b=256,
        Mixed_5c=288,
        Mixed_5d=288,
        Mixed_6a=768,
        Mixed_6b=768,
        Mixed_6c=768,
        Mixed_6d=768,
        Mixed_6e=768,
        Mixed_7a=1280,
        Mixed_7b=2048,
        Mixed_7c=2048,
    )
    # torchvision's Inception-v3 has 27,161,264 parameters; less its auxiliary head (3,326,696) and its
    # 1000-way classifier (2,049,000) that leaves the shared trunk: 21,785,568.
    n_params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith('fc.'))
    assert n_params == 21_785_568


def test_state_dict_roundtrip_and_errors(tmp_path, monkeypatch):
    torch.manual_seed(1)
    ref = inception.InceptionV3FID()
    for m in ref.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / 'inception.pth'
    state = {k: v for k, v in ref.state_dict().items() if not k.endswith('num_batches_tracked')}
    torch.save(state, path)
    net = inception.load_inception(str(path))
    assert net.tag.startswith('inception-2015-12-05-sha256:') and not net.training
    for k, v in ref.state_dict().items():
        if not k.endswith('num_batches_tracked'):
            assert torch.equal(net.state_dict()[k], v), k
    monkeypatch.setenv(inception.ENV_VAR, str(path))
    assert inception.resolve_weights_path(None) == str(path)
    with pytest.raises(FileNotFoundError, match='--feature-net'):
        inception.load_inception(str(tmp_path / 'missing.pth'))
    bad = tmp_path / 'bad.pth'
    torch.save({'conv.weight': torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match='not an FID Inception-v3 state_dict'):
        inception.load_inception(str(bad))
    assert os.path.isfile(path)
