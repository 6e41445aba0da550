"""Test doubles and helpers that tests in several folders share (no tests here).

Tests import them from here rather than from each other: a test module imported by another test
would be imported twice (once by pytest), and its registrations would then name two different classes.
"""

import os
import time

import torch

import dnnlib
from dnnlib import registry
from torch_utils import misc

# The environment variables of a launcher (torchrun, SLURM): removed so a test controls how ranks start.
LAUNCH_VARS = [
    'RANK',
    'WORLD_SIZE',
    'LOCAL_RANK',
    'MASTER_ADDR',
    'MASTER_PORT',
    'SLURM_PROCID',
    'SLURM_NTASKS',
]


class TinyNet(torch.nn.Module):
    @misc.record_init_kwargs
    def __init__(self, in_features=4, hidden=(8, 6), options=None):
        super().__init__()
        options = options or dnnlib.EasyDict(dropout=0.2)
        sizes = [in_features, *hidden]
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.drop = torch.nn.Dropout(options.dropout)  # options is an EasyDict again after rebuilding
        self.register_buffer('calls', torch.zeros([], dtype=torch.int64))

    def forward(self, x):
        self.calls += 1
        for layer in self.layers:
            x = self.drop(torch.relu(layer(x)))
        return x


registry.register('test.TinyNet', TinyNet)  # from code, as a plugin would; files cannot add names


def train_tiny(net, opt, steps):
    for _ in range(steps):
        x = torch.randn(8, net.init_kwargs.in_features)  # the data depends on the RNG state too
        loss = net(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def make_tiny_opt(net):
    return torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.0, 0.99))


def wait_for(path, text, proc, timeout=120):
    """Wait until `text` appears in the file `path`, while the subprocess `proc` runs."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return
        if proc.poll() is not None:
            raise AssertionError(f'training exited early:\n{proc.stdout.read()}')
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f'"{text}" did not appear in {path}')


# The smallest real Generator that renders in milliseconds: a 16^2 image of 8^2 patches, 16^2 planes.
TINY_G = dict(
    z_dim=8, w_dim=8, img_resolution=16, patch_resolution=8, plane_resolution=16, plane_channels=4,
    channel_base=64, channel_max=8, decoder_hidden=8, num_coarse=6, num_fine=6, scene_bounds=0.5,
    ray_start=0.5, ray_end=1.5, checkpoint_res=None, density_shift=1.0,
)  # fmt: skip


class TinyFeatureNet(torch.nn.Module):
    """A fixed random projection of 4x4 average-pooled images: stands in for Inception in tests."""

    feature_dim, tag = 16, 'tiny-test-net'

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(48, 16)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(self.proj.bias)

    def forward(self, images):
        x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 127.5 - 1, 4).flatten(1)
        return torch.tanh(self.proj(x))


def naive_modulated_conv(
    x, weight, styles, up=1, padding=0, resample_filter=None, demodulate=True, flip_weight=True
):
    """StyleGAN2's modulated conv the slow, obvious way, as the reference of G's two fast forms: each
    sample's own weight w'_{o,i} = w_{o,i} s_i (divided by ||w'_o|| when demodulating), one conv each."""
    from torch_utils.ops import conv2d_resample

    out = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)  # [Cout, Cin, kh, kw]
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        out.append(
            conv2d_resample.conv2d_resample(
                x[n : n + 1], w, resample_filter, up, 1, padding, flip_weight=flip_weight
            )
        )
    return torch.cat(out)
