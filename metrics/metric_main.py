"""Metric registry: names -> functions of MetricOptions, plus `calc_metric` and `report_metric`.

The training loop and calc_metrics.py both call `calc_metric(name, G=G_ema, dataset_kwargs=...,
camera_prior_kwargs=<the run's>, ...)`, so in-training and standalone numbers come from the same code with
the same seeds and cameras.
"""

import json
import os
import re
import time

import dnnlib
from metrics import frechet, geometry_eval, kernel_inception, precision_recall
from metrics import metric_utils as mu
from metrics import swd as swd_lib

_metric_dict = {}  # name -> fn(opts) -> dict of results

# Names with a number in them: pattern -> (function of (opts, number), example shown in listings).
_dynamic = {
    re.compile(r'fid(\d+)k_full'): (lambda opts, n: fid_full(opts, n * 1000), 'fid<N>k_full'),
    re.compile(r'kid(\d+)k_full'): (lambda opts, n: kid_full(opts, n * 1000), 'kid<N>k_full'),
    re.compile(r'pr(\d+)k3_full'): (lambda opts, n: pr_full(opts, n * 1000, k=3), 'pr<N>k3_full'),
    re.compile(r'swd(\d+)k'): (lambda opts, n: sliced_wasserstein(opts, n * 1000), 'swd<N>k'),
}


def register_metric(fn):
    assert callable(fn)
    _metric_dict[fn.__name__] = fn
    return fn


def _lookup(metric: str):
    """The function computing `metric`, or None."""
    if metric in _metric_dict:
        return _metric_dict[metric]
    for pattern, (fn, _) in _dynamic.items():
        match = pattern.fullmatch(metric)
        if match and int(match.group(1)) > 0:
            return lambda opts, fn=fn, n=int(match.group(1)): fn(opts, n)
    return None


def is_valid_metric(metric: str) -> bool:
    return _lookup(metric) is not None


def uses_feature_net(metric: str) -> bool:
    """True for the metrics computed on Inception features (FID, KID, precision/recall)."""
    return re.match(r'(fid|kid|pr)\d', metric) is not None


# Metrics where a larger value is better (precision/recall, non-flatness); all others are distances or errors.
_HIGHER_IS_BETTER = re.compile(r'pr\d+k\d+_full|nonflat')


def higher_is_better(metric: str) -> bool:
    return _HIGHER_IS_BETTER.fullmatch(metric) is not None


def headline_value(metric: str, results: dict) -> float | None:
    """The number that ranks snapshots by `metric`: results[metric], else its average (swd: `<name>_avg`),
    else its first value (pr: precision)."""
    if not results:
        return None
    value = results.get(metric, results.get(f'{metric}_avg', next(iter(results.values()))))
    return float(value) if isinstance(value, (int, float)) else None


def is_improvement(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` of `metric` beats the best so far (None: nothing yet)."""
    if best is None:
        return True
    return value > best if higher_is_better(metric) else value < best


def list_valid_metrics() -> list[str]:
    return list(_metric_dict.keys()) + [example for _, example in _dynamic.values()]


def calc_metric(metric: str, **kwargs) -> dnnlib.EasyDict:
    """Compute `metric` (all ranks must call this); kwargs are MetricOptions'. Returns results and timing."""
    fn = _lookup(metric)
    if fn is None:
        raise ValueError(f'unknown metric "{metric}"; valid metrics: {", ".join(list_valid_metrics())}')
    opts = mu.MetricOptions(**kwargs)
    start = time.time()
    was_training = opts.G is not None and opts.G.training
    if was_training:
        opts.G.eval()  # no ray jitter or other training-time randomness while measuring
    try:
        results = fn(opts)
    finally:
        if was_training:
            opts.G.train()
    total_time = time.time() - start
    return dnnlib.EasyDict(
        results=dnnlib.EasyDict(results),
        metric=metric,
        total_time=total_time,
        total_time_str=f'{total_time:.1f}s',
        num_gpus=opts.num_gpus,
    )


def report_metric(result_dict, run_dir=None, snapshot_path=None) -> str:
    """Append the result as one JSON line to <run_dir>/metric-<name>.jsonl (when run_dir is given); return it."""
    snapshot = os.path.relpath(snapshot_path, run_dir) if snapshot_path and run_dir else snapshot_path
    line = json.dumps(dict(result_dict, snapshot_pkl=snapshot, timestamp=time.time()))
    if run_dir is not None and os.path.isdir(run_dir):
        with open(os.path.join(run_dir, f'metric-{result_dict["metric"]}.jsonl'), 'a') as f:
            f.write(line + '\n')
    return line


# ----------------------------------------------------------------------------
# Image metrics (features of the FID Inception-v3, or of an injected feature network).


def fid_full(opts, num_gen: int) -> dict:
    """FID of `num_gen` fakes against all real images."""
    mu_real, sigma_real = mu.compute_real_features(opts, capture_mean_cov=True).get_mean_cov()
    mu_fake, sigma_fake = mu.compute_fake_features(opts, num_gen, capture_mean_cov=True).get_mean_cov()
    return {f'fid{num_gen // 1000}k_full': frechet.frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake)}


@register_metric
def fid50k_full(opts):
    return fid_full(opts, 50_000)


@register_metric
def fid2k_full(opts):
    return fid_full(opts, 2_000)


def kid_full(opts, num_gen: int, max_real: int = 1_000_000) -> dict:
    """KID of `num_gen` fakes against up to `max_real` reals (100 subsets of up to 1000)."""
    real = mu.compute_real_features(opts, max_items=max_real, capture_all=True).get_all()
    fake = mu.compute_fake_features(opts, num_gen, capture_all=True).get_all()
    kid = kernel_inception.kernel_inception_distance(
        real, fake, 100, 1000, seed=opts.seed, device=opts.device
    )
    return {f'kid{num_gen // 1000}k_full': kid}


@register_metric
def kid50k_full(opts):
    return kid_full(opts, 50_000)


def pr_full(opts, num_gen: int, k: int = 3, max_real: int = 200_000) -> dict:
    """Precision and recall of `num_gen` fakes against up to `max_real` reals with k-NN manifolds.

    DEVIATION: the protocol of Kynkaanniemi et al. embeds images with VGG-16; we use the FID Inception
    features (one pretrained network to obtain, not two), so numbers are comparable within PGRF only.
    """
    real = mu.compute_real_features(opts, max_items=max_real, capture_all=True).get_all()
    fake = mu.compute_fake_features(opts, num_gen, capture_all=True).get_all()
    p, r = precision_recall.precision_recall(real, fake, k=k, device=opts.device)
    name = f'pr{num_gen // 1000}k{k}_full'
    return {f'{name}_precision': p, f'{name}_recall': r}


@register_metric
def pr50k3_full(opts):
    return pr_full(opts, 50_000, k=3)


# ----------------------------------------------------------------------------
# SWD (no pretrained network).


def sliced_wasserstein(opts, num_items: int) -> dict:
    """ProGAN SWD between min(num_items, len(dataset)) real and as many fake images, per pyramid level."""
    name = 'swd' if num_items == 16384 else f'swd{num_items // 1000}k'
    num_items = min(num_items, len(mu.get_dataset(opts)))
    resolution = int(mu.get_dataset(opts).resolution)
    real = swd_lib.SWDAccumulator(seed=opts.seed, max_items=num_items)
    fake = swd_lib.SWDAccumulator(seed=opts.seed + 1, max_items=num_items)
    with mu.progress_bar(opts, 2 * num_items, 'swd') as bar:
        for images, count, items in mu.iterate_real_images(opts, num_items, opts.batch_size):
            real.append_descriptors([mu.gather(d, opts) for d in real.describe(images, items)])
            bar.update(count)
        for out, _camera, count, items in mu.render_fakes(opts, num_items, opts.batch_size, resolution):
            fake.append_descriptors(
                [mu.gather(d, opts) for d in fake.describe(mu.to_uint8(out.image), items)]
            )
            bar.update(count)
    result = swd_lib.swd_between(real, fake, seed=opts.seed)
    resolutions = [resolution >> i for i in range(len(result['swd_levels']))]
    out = {f'{name}_{r}': v for r, v in zip(resolutions, result['swd_levels'])}
    out[f'{name}_avg'] = result['swd_mean']
    return out


@register_metric
def swd(opts):  # the ProGAN protocol's 16384 images per set
    return sliced_wasserstein(opts, 16384)


# ----------------------------------------------------------------------------
# 3D metrics.


@register_metric
def nonflat(opts):
    return geometry_eval.nonflatness(opts, num_items=1024)


@register_metric
def mvc(opts):
    return geometry_eval.multiview_consistency(opts, num_items=256)


@register_metric
def chamfer(opts):
    return geometry_eval.chamfer_to_source_meshes(opts)
