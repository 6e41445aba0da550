"""Evaluation of one training snapshot for scripts/reproduce.py, and the tiny setup of its --quick mode.

A snapshot is scored with the protocols of calc_metrics.py and the in-training metrics (metrics/metric_main.py),
built from the same metric_utils pieces so that the sample counts can be chosen below the registry's 1000-image
granularity, and the fakes are rendered once for FID and SWD: on a 2-core CPU an Inception forward costs ~0.1 s
per image (idle) and rendering a 64^2 fake about as much, so fid1k + swd at every snapshot of every arm would
cost more than the training itself.
"""

import json
import math
import os
import time

import numpy as np
import PIL.Image
import torch

from metrics import frechet, geometry_eval, inception
from metrics import metric_utils as mu
from metrics import swd as swd_lib
from torch_utils import checkpoint

# ----------------------------------------------------------------------------
# Which FID network is available.


def resolve_feature_net(feature_net, quick: bool, fid: bool = True):
    """(what MetricOptions.feature_net gets, or None for 'no FID'; a note for the summary).

    An nn.Module (a test's tiny network) is used as is. Otherwise the Inception weights come from
    `feature_net`, $PGRF_FEATURE_NET or the download cache, as everywhere in PGRF. A real run needs them and
    fails here, before any training; --quick runs without them (SWD only) instead of trying a download.
    """
    if not fid:
        return None, 'FID skipped (--no-fid): SWD only'
    if isinstance(feature_net, torch.nn.Module):
        return feature_net, f'FID on the features of an injected {type(feature_net).__name__}'
    spec = feature_net or os.environ.get(inception.ENV_VAR)
    if quick and not spec:
        return None, f'FID skipped: --quick without --feature-net or ${inception.ENV_VAR} (SWD only)'
    try:
        path = inception.resolve_weights_path(spec)
    except OSError as err:
        if quick:
            return None, f'FID skipped: {err}'
        raise OSError(
            f'FID needs the Inception weights: {err} (set ${inception.ENV_VAR} or --feature-net, or pass --no-fid)'
        ) from None
    return path, f'FID on Inception-v3 pool_3 features ({os.path.basename(path)})'


# ----------------------------------------------------------------------------
# Scoring one snapshot.


def snapshot_kimg(path: str) -> float:
    """kimg of a training snapshot (its progress counter, not its rounded file name)."""
    return checkpoint.load(path)['progress']['cur_nimg'] / 1000


def fid_and_swd(opts, num_items: int, with_fid: bool) -> tuple[float | None, float]:
    """FID of `num_items` fakes against all reals and SWD of as many fakes and reals, from one render of the
    fakes (single process).

    The protocols of metric_main.fid_full and metric_main.sliced_wasserstein (same items, cameras, seeds and
    descriptors; tests/scripts/test_reproduce.py checks the parity), but the fakes, the larger part of a CPU
    evaluation, are rendered once instead of twice. Like SWD, it never takes more fakes than there are reals.
    FID of a few hundred fakes is biased upwards (the fakes' 2048-d covariance): compare arms only.
    """
    assert opts.num_gpus == 1, 'fid_and_swd runs in one process'
    dataset = mu.get_dataset(opts)
    num_items = min(num_items, len(dataset))
    real = swd_lib.SWDAccumulator(seed=opts.seed, max_items=num_items)
    fake = swd_lib.SWDAccumulator(seed=opts.seed + 1, max_items=num_items)
    for images, _count, items in mu.iterate_real_images(opts, num_items, opts.batch_size):
        real.append_descriptors(real.describe(images, items))
    net = mu.get_feature_net(opts) if with_fid else None
    stats = mu.FeatureStats(capture_mean_cov=True, max_items=num_items)
    resolution = int(dataset.resolution)
    with mu.progress_bar(opts, num_items, 'fakes (FID, SWD)') as bar:
        for out, _camera, count, items in mu.render_fakes(opts, num_items, opts.batch_size, resolution):
            images = mu.to_uint8(out.image)
            fake.append_descriptors(fake.describe(images, items))
            if net is not None:
                with torch.no_grad():
                    stats.append(net(images).cpu().numpy())
            bar.update(count)
    swd = float(swd_lib.swd_between(real, fake, seed=opts.seed)['swd_mean'])
    if net is None:
        return None, swd
    mu_real, sigma_real = mu.compute_real_features(opts, capture_mean_cov=True).get_mean_cov()
    mu_fake, sigma_fake = stats.get_mean_cov()
    return float(frechet.frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake)), swd


def metric_options(G, options: dict, feature_net, progress: bool) -> mu.MetricOptions:
    """The options of calc_metrics.py for a run's G_ema: its data, its camera prior."""
    return mu.MetricOptions(
        G=G, dataset_kwargs=options['dataset_kwargs'], camera_prior_kwargs=options['camera_prior_kwargs'],
        feature_net=feature_net, batch_gen=16, data_workers=0, progress=progress,
    )  # fmt: skip


def evaluate_snapshot(path: str, counts: dict, feature_net, final: bool, progress: bool) -> dict:
    """FID (if a network is given), SWD and, for the final snapshot, non-flatness of G_ema at `path`.

    counts: dict(fakes=..., nonflat=...) sample counts. Returns the metrics and the seconds taken.
    """
    start = time.time()
    G, options = checkpoint.load_network(path, 'G_ema', with_options=True)
    opts = metric_options(G.eval(), options, feature_net, progress)
    fid, swd = fid_and_swd(opts, counts['fakes'], with_fid=feature_net is not None)
    out = dict(fid=fid, swd=swd, nonflat=None)
    if final:
        out['nonflat'] = geometry_eval.nonflatness(opts, num_items=counts['nonflat'])['nonflat']
    out['eval_s'] = time.time() - start
    return out


# ----------------------------------------------------------------------------
# --quick: a tiny dataset and preset written into the output folder.

QUICK_RESOLUTION = 16
QUICK_IMAGES = 16

# The demo preset shrunk to a few milliseconds a step; only keys every version of the demo preset has.
QUICK_PRESET = """\
# scripts/reproduce.py --quick: the demo preset at toy size (a pipeline check, not an experiment).
base: demo
dataset: {dataset_yaml}
batch: 4
patch_res: 16
triplane_res: 8
ray_steps: 4
workers: 0
grid_seeds: 2
grid_cameras: 2
ema_kimg: 0.01
density_noise_kimg: 0.01
G_kwargs: {{z_dim: 8, w_dim: 8, plane_channels: 4, channel_base: 64, channel_max: 8, decoder_hidden: 8}}
D_kwargs: {{channel_base: 64, channel_max: 8}}
"""


def quick_dataset_preset(data_path: str) -> dict:
    """configs/datasets/demo.yaml's camera protocol at the quick resolution."""
    from training.dataset import load_dataset_preset

    preset = dict(load_dataset_preset('demo'))
    preset.update(
        description='scripts/reproduce.py --quick: coloured discs',
        path=data_path,
        resolution=QUICK_RESOLUTION,
    )
    return preset


def make_quick_setup(dest: str) -> tuple[str, str]:
    """Write dest/data (QUICK_IMAGES coloured discs with demo-protocol cameras), the dataset preset and
    the model preset; returns (preset path, data path). Deterministic, so a rerun reuses the same files."""
    import yaml

    from training import cameras

    data = os.path.join(dest, 'data')
    os.makedirs(data, exist_ok=True)
    rng = np.random.RandomState(0)
    n, res = QUICK_IMAGES, QUICK_RESOLUTION
    yaw = torch.from_numpy(rng.uniform(-math.pi, math.pi, n))
    pitch = torch.from_numpy(rng.uniform(0.6, 2.5, n))
    labels = cameras.angles_to_camera(yaw, pitch, 3.5, 45.0, dtype=torch.float64).to_label()
    yy, xx = np.mgrid[:res, :res]
    disc = (yy - res / 2 + 0.5) ** 2 + (xx - res / 2 + 0.5) ** 2 < (res / 3) ** 2
    entries = []
    for i in range(n):
        img = np.full((res, res, 3), 255, np.uint8)
        img[disc] = rng.randint(0, 256, 3)
        PIL.Image.fromarray(img).save(os.path.join(data, f'img{i:03d}.png'))
        entries.append([f'img{i:03d}.png', labels[i].tolist()])
    classes = [
        [name, i % 2] for i, (name, _) in enumerate(entries)
    ]  # the demo preset trains class-conditionally
    with open(os.path.join(data, 'dataset.json'), 'w') as f:
        json.dump(dict(labels=entries, classes=classes, class_names=['even', 'odd']), f)
    dataset_yaml = os.path.join(dest, 'quick_dataset.yaml')
    with open(dataset_yaml, 'w') as f:
        yaml.safe_dump(quick_dataset_preset(data), f)
    cfg = os.path.join(dest, 'quick.yaml')
    with open(cfg, 'w') as f:
        f.write(QUICK_PRESET.format(dataset_yaml=dataset_yaml))
    return cfg, data
