"""scripts/bench.py discovery and the generator cases' FLOP accounting (the benchmarks themselves are not tests)."""

import importlib.util
import os
import sys

import torch
import torch.utils.flop_counter
from repo_paths import REPO_ROOT

from training.networks.generator import Generator

ROOT = REPO_ROOT


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_discovers_generator_cases():
    bench = _load('scripts/bench.py', 'pgrf_bench')
    cases = bench.discover_cases()
    for name in ['G_paper_fwd', 'G_paper_fwdbwd', 'G_demo_fwd', 'G_demo_fwdbwd']:
        assert callable(cases[name])


def test_synthesis_flops_match_a_flop_counter():
    sys.path.insert(0, os.path.join(ROOT, 'scripts'))
    cases = _load('scripts/bench_cases/generator.py', 'pgrf_bench_generator')
    G = Generator(
        z_dim=8, w_dim=8, plane_resolution=16, plane_channels=2, channel_base=64, channel_max=8
    ).eval()
    ws = torch.randn(2, G.num_ws, 8)
    counted = 0
    for block in G.synthesis.blocks:  # count only the modulated convs, as the bench does
        for layer in [getattr(block, 'conv0', None), block.conv1]:
            if layer is None:
                continue
            res, up = block.resolution, layer.up
            cout, cin, kh, kw = layer.weight.shape
            counted += 2 * 2 * cout * cin * kh * kw * (res // up) ** 2
        counted += (
            2 * 2 * block.to_planes.weight.shape[0] * block.to_planes.weight.shape[1] * block.resolution**2
        )
    assert cases.synthesis_conv_flops(G, 2) == counted
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        G.synthesis(ws, noise_mode='const')
    assert counter.get_total_flops() >= counted  # the counter also sees the resampling filters
