"""Benchmarks of the discriminator side (scripts/bench.py discovers CASES; each fn(args) -> dict).

- disc_main_{hyper,std}: ms per D forward + backward on a batch of paper-sized patches (R = 256, r = 64),
  with and without the hypernetwork: the cost of the paper's scale/location-aware D.
- disc_r1: ms per lazy-R1 evaluation (forward, input gradient with create_graph, backward to weights).
- disc_augment: ms per ADA pipeline call at p = 1 on the same batch.
"""

import statistics
import time

import torch

from training.augment import AugmentPipe
from training.loss import r1_penalty
from training.networks.discriminator import PatchDiscriminator
from training.patches import make_patch_sampler

PAPER_D = dict(img_resolution=256, patch_resolution=64)


def _device(args):
    return torch.device(getattr(args, 'device', None) or 'cpu')


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _median_ms(fn, device, repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _inputs(device, batch):
    torch.manual_seed(0)
    img = torch.randn(batch, 3, 64, 64, device=device)
    params = make_patch_sampler('beta', 256, 64, beta_end=0.8, anneal_kimg=10000).sample(
        batch, 5_000_000, device=device
    )
    return img, params


def _main_case(hyper_mod):
    def case(args):
        device, batch = _device(args), int(getattr(args, 'batch', None) or 4)
        D = PatchDiscriminator(**PAPER_D, hyper_mod=hyper_mod).to(device)
        img, params = _inputs(device, batch)

        def step():
            D.zero_grad(set_to_none=True)
            torch.nn.functional.softplus(-D(img, params)).mean().backward()

        return dict(batch=batch, ms=_median_ms(step, device, repeats=3), hyper_mod=hyper_mod)

    return case


def disc_r1(args):
    device, batch = _device(args), int(getattr(args, 'batch', None) or 4)
    D = PatchDiscriminator(**PAPER_D).to(device)
    img, params = _inputs(device, batch)

    def step():
        D.zero_grad(set_to_none=True)
        penalty, _ = r1_penalty(D, img, params)
        (penalty.mean() * 0.025).backward()

    return dict(batch=batch, ms=_median_ms(step, device, repeats=3))


def disc_augment(args):
    device, batch = _device(args), int(getattr(args, 'batch', None) or 4)
    pipe = AugmentPipe(init_p=1.0).to(device)
    img, _ = _inputs(device, batch)
    return dict(batch=batch, ms=_median_ms(lambda: pipe(img), device, repeats=5))


CASES = {
    'disc_main_hyper': _main_case(True),
    'disc_main_std': _main_case(False),
    'disc_r1': disc_r1,
    'disc_augment': disc_augment,
}
