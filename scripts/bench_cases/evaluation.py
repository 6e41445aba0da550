"""Benchmarks of one in-training evaluation, fid2k_full (scripts/bench.py discovers CASES; fn(args) -> dict).

An evaluation renders 2000 full-resolution fakes with G_ema, embeds them with the FID Inception, and takes the
Frechet distance to the real statistics (computed once per run, then cached). Measured with the loop's own
functions (metrics.metric_utils) and the real FID weights (randomly initialised G: speed does not depend on
training):
- eval_fid2k_demo: configs/demo.yaml (64^2, 8 + 8 samples per ray), all 2000 fakes.
- eval_fid2k_paper: configs/ffhq256.yaml (256^2, Rp = 512, 48 + 48 samples); only EVAL_BENCH_FAKES (default
  16) fakes, extrapolated to 2000 (`extrapolated: true`): a CPU renders a paper image in seconds.
Reported: seconds per fake (render + features), per real image (the one-off statistics pass), of the
Frechet distance, and the extrapolated cost of one evaluation and of a whole run's evaluations, with fid2k
and with fid50k. PGRF_BENCH_EVAL_FAKES overrides the number of fakes measured.
"""

import json
import math
import os
import sys
import tempfile
import time

if __name__ == '__main__':  # run directly: the repository root comes first
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import dnnlib  # noqa: E402
from metrics import frechet  # noqa: E402
from metrics import metric_utils as mu  # noqa: E402
from training.options import config, derive  # noqa: E402

NUM_REALS = 16  # real images timed for the one-off statistics pass (then extrapolated to the dataset)


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def build(preset: str, device):
    """G_ema as the training loop builds it for `preset`, and the run's options."""
    opts = config.resolve(config.load_preset(preset), {})
    dp = derive.load_dataset_preset(opts.dataset, preset)
    c = derive.model_kwargs(opts, dp, opts.batch_gpu or opts.batch, preset)
    torch.manual_seed(0)
    G = dnnlib.construct_class_by_name(**c.G_kwargs).eval().requires_grad_(False).to(device)
    return G, opts, c


def write_reals(root: str, c, count: int) -> dict:
    """A dataset folder of `count` random images at the preset's resolution, with cameras from its prior."""
    R = c.dataset_preset['resolution']
    prior = dnnlib.construct_class_by_name(**c.camera_prior_kwargs, dataset=None)
    labels = prior.sample(count, generator=torch.Generator().manual_seed(0)).to_label().tolist()
    g = np.random.RandomState(0)
    names = []
    for i in range(count):
        names.append(f'{i:04d}.png')
        Image.fromarray((g.rand(R, R, 3) * 255).astype(np.uint8)).save(os.path.join(root, names[-1]))
    with open(os.path.join(root, 'dataset.json'), 'w') as f:
        json.dump({'labels': [[n, label] for n, label in zip(names, labels)]}, f)
    return dict(class_name='training.dataset.ImageFolderDataset', path=root)


def _timed(fn, device) -> tuple[float, float]:
    """(wall, process CPU) seconds of one run: on a shared CPU the CPU time is the steadier number."""
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def _case(preset: str, default_fakes: int):
    def case(args):
        device = torch.device(getattr(args, 'device', None) or 'cpu')
        num_fakes = int(os.environ.get('PGRF_BENCH_EVAL_FAKES', default_fakes))
        G, opts, c = build(preset, device)
        with tempfile.TemporaryDirectory() as root:
            kwargs = dict(G=G, dataset_kwargs=write_reals(root, c, NUM_REALS), device=device, cache=False,
                          camera_prior_kwargs=c.camera_prior_kwargs, data_workers=0)  # fmt: skip
            metric_opts = mu.MetricOptions(**kwargs)  # in-training defaults: batch 64, batch_gen 4
            mu.get_feature_net(metric_opts)  # load (and convert once) outside the timings
            real = _timed(lambda: mu.compute_real_features(metric_opts, capture_mean_cov=True), device)
            fake = _timed(
                lambda: mu.compute_fake_features(metric_opts, num_fakes, capture_mean_cov=True), device
            )
        rng = np.random.RandomState(0)
        stats = [frechet.feature_stats(rng.randn(2100, 2048)) for _ in range(2)]
        fd = _timed(lambda: frechet.frechet_distance(*stats[0], *stats[1]), device)
        evals_per_run = math.ceil(opts.kimg / (opts.tick * opts.snap))
        result = dict(preset=preset, resolution=c.dataset_preset['resolution'], fakes_measured=num_fakes,
                      extrapolated=num_fakes < 2000, evals_per_run=evals_per_run)  # fmt: skip
        for clock, k in (('wall', 0), ('cpu', 1)):
            per_fake = fake[k] / num_fakes
            per_eval = {n: n * per_fake + fd[k] for n in (2000, 50_000)}
            result.update({
                f'{clock}_s_per_fake': per_fake, f'{clock}_s_per_real': real[k] / NUM_REALS,
                f'{clock}_frechet_s': fd[k], f'{clock}_fid2k_eval_s': per_eval[2000],
                f'{clock}_fid50k_eval_s': per_eval[50_000],
                f'{clock}_run_eval_hours_fid2k': evals_per_run * per_eval[2000] / 3600,
                f'{clock}_run_eval_hours_fid50k': evals_per_run * per_eval[50_000] / 3600,
            })  # fmt: skip
        return result

    return case


CASES = {
    'eval_fid2k_demo': _case('demo', default_fakes=2000),
    'eval_fid2k_paper': _case('ffhq256', default_fakes=16),
}


if __name__ == '__main__':
    for name in sys.argv[1:] or list(CASES):
        print(json.dumps(dict(case=name, **CASES[name](dnnlib.EasyDict(device=None)))), flush=True)
