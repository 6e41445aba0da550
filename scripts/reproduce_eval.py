"""Evaluation of one training snapshot for scripts/reproduce.py, and the tiny setup of its --quick mode.

A snapshot is scored with the same metric functions as calc_metrics.py and the in-training metrics
(metrics/metric_main.py), called directly so that the sample counts can be chosen below the registry's
1000-image granularity: on a 2-core CPU an Inception forward costs ~0.1 s per image, so fid1k at every
snapshot of every arm would cost more than the training itself.
"""

import json
import math
import os
import time

import numpy as np
import PIL.Image
import torch

from metrics import frechet, geometry_eval, inception, metric_main
from metrics import metric_utils as mu
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


def fid_small(opts, num_fakes: int) -> float:
    """FID of `num_fakes` fakes against all reals (metric_main.fid_full's protocol, any count).

    Biased upwards for small counts (the estimate of the fakes' 2048-d covariance): comparable only
    between arms scored with the same count, which reproduce.py guarantees.
    """
    mu_real, sigma_real = mu.compute_real_features(opts, capture_mean_cov=True).get_mean_cov()
    mu_fake, sigma_fake = mu.compute_fake_features(opts, num_fakes, capture_mean_cov=True).get_mean_cov()
    return float(frechet.frechet_distance(mu_real, sigma_real, mu_fake, sigma_fake))


def evaluate_snapshot(path: str, counts: dict, feature_net, final: bool, progress: bool) -> dict:
    """FID (if a network is given), SWD and, for the final snapshot, non-flatness of G_ema at `path`.

    counts: dict(fid=..., swd=..., nonflat=...) sample counts. Returns the metrics and the seconds taken.
    """
    start = time.time()
    G, options = checkpoint.load_network(path, 'G_ema', with_options=True)
    opts = mu.MetricOptions(
        G=G, dataset_kwargs=options['dataset_kwargs'], camera_prior_kwargs=options['camera_prior_kwargs'],
        feature_net=feature_net, batch_gen=16, data_workers=0, progress=progress,
    )  # fmt: skip
    G.eval()
    out = dict(fid=None, swd=None, nonflat=None)
    if feature_net is not None:
        out['fid'] = fid_small(opts, counts['fid'])
    swd = metric_main.sliced_wasserstein(opts, counts['swd'])
    out['swd'] = next(v for k, v in swd.items() if k.endswith('_avg'))
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
    with open(os.path.join(data, 'dataset.json'), 'w') as f:
        json.dump(dict(labels=entries), f)
    dataset_yaml = os.path.join(dest, 'quick_dataset.yaml')
    with open(dataset_yaml, 'w') as f:
        yaml.safe_dump(quick_dataset_preset(data), f)
    cfg = os.path.join(dest, 'quick.yaml')
    with open(cfg, 'w') as f:
        f.write(QUICK_PRESET.format(dataset_yaml=dataset_yaml))
    return cfg, data
