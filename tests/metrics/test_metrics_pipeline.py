"""The metric pipeline end to end with an analytic generator, an in-memory dataset and a tiny feature net."""

import json
import math
import os
from typing import NamedTuple

import numpy as np
import pytest
import torch
from shared_doubles import TinyFeatureNet
from test_metrics_geometry import _render_sphere

from dnnlib import registry
from metrics import geometry_eval, metric_main
from metrics import metric_utils as mu
from training.cameras import angles_to_camera

RES = 32


class RenderOutput(NamedTuple):
    image: torch.Tensor
    depth: torch.Tensor
    opacity: torch.Tensor


class SphereGenerator(torch.nn.Module):
    """Analytic 'generator': a textured sphere whose radius and colour shift depend on z; or a billboard."""

    def __init__(self, hue=0.0, flat=False, view_dependent=0.0, opaque_background=False):
        super().__init__()
        self.z_dim, self.img_resolution, self.scene_bounds = 3, RES, 1.0
        self.hue, self.flat, self.view_dependent = hue, flat, view_dependent
        self.opaque_background = opaque_background  # like G without a background model: all pixels opaque

    def forward(
        self, z, camera, patch_params=None, resolution=None, noise_mode='random', foreground_only=False
    ):
        assert patch_params is None and noise_mode == 'const'
        res = resolution or self.img_resolution
        view = _render_sphere(camera, res, radius=0.6, view_dependent=self.view_dependent)
        image = (
            view['image'] * (0.7 + 0.1 * z[:, :1, None, None])
            + self.hue
            + 0.1 * z[:, 1:, None, None].mean(1, True)
        )
        depth = view['depth']
        if self.flat:
            depth = torch.where(view['opacity'] > 0.5, torch.full_like(depth, 2.5), depth)
        opacity = view['opacity']
        if self.opaque_background:  # the background sits at the far bound, radius + b sqrt 3
            far = (
                camera.cam2world[:, :3, 3].norm(dim=-1)[:, None, None, None]
                + math.sqrt(3) * self.scene_bounds
            )
            depth = torch.where(opacity > 0.5, depth, far.expand_as(depth) - 1e-3)
            opacity = torch.ones_like(opacity)
        return RenderOutput(image.clamp(-1, 1), depth, opacity)


class ToyDataset(torch.utils.data.Dataset):
    """Renders of SphereGenerator(hue=0) from cameras around the front, held in memory."""

    def __init__(self, path, size=96, resolution=RES, mirror=False, seed=1):
        self.path, self.name, self.resolution, self.mirror = path, 'toy', resolution, mirror
        g = torch.Generator().manual_seed(seed)
        yaw = (torch.rand(size, generator=g) - 0.5) * 1.2
        self._cameras = angles_to_camera(
            yaw, math.pi / 2 + 0.2 * (torch.rand(size, generator=g) - 0.5), 2.5, 30
        )
        z = torch.randn(size, 3, generator=g)
        opts = mu.MetricOptions(G=None)
        with torch.no_grad():
            self.images = mu.to_uint8(
                SphereGenerator()(z, self._cameras, resolution=resolution, noise_mode='const').image
            )
        del opts

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i].numpy(), self._cameras.select(i).to_label()[0].numpy()

    def cameras(self):
        return self._cameras


registry.register('test.ToyDataset', ToyDataset)  # metrics build datasets by registered name only


TOY_PRIOR = dict(kind='normal', radius=2.5, fov=30.0)  # the run's prior: the toy data's radius and fov


def _kwargs(tmp_path, G=None, **extra):
    data = dict(class_name='test.ToyDataset', path=str(tmp_path / 'toy'))
    extra = dict(dict(camera_prior_kwargs=TOY_PRIOR), **extra)
    return dict(
        G=G or SphereGenerator(),
        dataset_kwargs=data,
        feature_net=TinyFeatureNet(),
        cache_dir=str(tmp_path / 'cache'),
        device='cpu',
        batch_size=32,
        batch_gen=16,
        data_workers=0,
        **extra,
    )


def _image_metrics(opts, num_gen=256):
    """FID, KID, precision of `num_gen` fakes (the registry's functions, with fewer fakes than their names)."""
    return (
        metric_main.fid_full(opts, num_gen)['fid0k_full'],
        metric_main.kid_full(opts, num_gen)['kid0k_full'],
        metric_main.pr_full(opts, num_gen)['pr0k3_full_precision'],
    )


def test_fid_kid_pr_rank_the_right_generator_better(tmp_path):
    fid, kid, precision = _image_metrics(mu.MetricOptions(**_kwargs(tmp_path)))
    bad_fid, bad_kid, bad_precision = _image_metrics(
        mu.MetricOptions(**_kwargs(tmp_path, SphereGenerator(hue=0.4)))
    )
    assert fid < bad_fid / 5 and kid < bad_kid / 5
    assert precision > 0.8 > bad_precision


def test_real_stats_are_cached_and_keyed(tmp_path, monkeypatch):
    first = metric_main.calc_metric('fid1k_full', **_kwargs(tmp_path))
    files = os.listdir(tmp_path / 'cache')
    assert len(files) == 1 and files[0].startswith('toy-tiny-test-net-')
    monkeypatch.setattr(ToyDataset, '__getitem__', lambda self, i: pytest.fail('real images read again'))
    second = metric_main.calc_metric('fid1k_full', **_kwargs(tmp_path))
    assert second.results.fid1k_full == first.results.fid1k_full
    monkeypatch.undo()
    kwargs = _kwargs(tmp_path)
    kwargs['dataset_kwargs']['mirror'] = True  # another key -> computed again, a second file
    metric_main.calc_metric('fid1k_full', **kwargs)
    assert len(os.listdir(tmp_path / 'cache')) == 2


def test_fake_items_do_not_depend_on_batching(tmp_path):
    a = metric_main.fid_full(mu.MetricOptions(**dict(_kwargs(tmp_path), batch_size=7, batch_gen=3)), 200)
    b = metric_main.fid_full(mu.MetricOptions(**_kwargs(tmp_path)), 200)
    assert a['fid0k_full'] == pytest.approx(b['fid0k_full'], rel=1e-5)


def test_swd_through_registry(tmp_path):
    same = metric_main.calc_metric('swd1k', **_kwargs(tmp_path)).results
    other = metric_main.calc_metric('swd1k', **_kwargs(tmp_path, SphereGenerator(hue=0.4))).results
    assert set(same) == {'swd1k_32', 'swd1k_16', 'swd1k_avg'}
    assert same.swd1k_avg < other.swd1k_avg


def test_nonflat_and_mvc(tmp_path):
    opts = mu.MetricOptions(**_kwargs(tmp_path))
    sphere = geometry_eval.nonflatness(opts, num_items=8)
    flat = geometry_eval.nonflatness(
        mu.MetricOptions(**_kwargs(tmp_path, SphereGenerator(flat=True))), num_items=8
    )
    assert flat['nonflat'] < 1e-9 and sphere['nonflat'] > 1.0
    consistent = geometry_eval.multiview_consistency(opts, num_items=8)
    assert consistent['mvc'] < 0.01 and consistent['mvc_coverage'] > 0.2
    vd = mu.MetricOptions(**_kwargs(tmp_path, SphereGenerator(view_dependent=0.5)))
    assert geometry_eval.multiview_consistency(vd, num_items=8)['mvc'] > 5 * consistent['mvc']
    # An opaque background at the far bound (G without a background model) is not counted as foreground.
    opaque = mu.MetricOptions(**_kwargs(tmp_path, SphereGenerator(opaque_background=True)))
    assert geometry_eval.nonflatness(opaque, num_items=8) == pytest.approx(sphere)
    # (silhouette pixels differ slightly: bilinear lookups there mix in the far background instead of zeros)
    assert geometry_eval.multiview_consistency(opaque, num_items=8) == pytest.approx(consistent, rel=0.05)


def test_registry_names_errors_and_report(tmp_path):
    for name in (
        'fid50k_full',
        'fid2k_full',
        'fid10k_full',
        'kid50k_full',
        'pr50k3_full',
        'swd',
        'swd2k',
        'nonflat',
        'mvc',
        'chamfer',
    ):
        assert metric_main.is_valid_metric(name), name
    assert not metric_main.is_valid_metric('fid0k_full') and not metric_main.is_valid_metric('fidk_full')
    with pytest.raises(ValueError, match='unknown metric "fod50k".*fid50k_full'):
        metric_main.calc_metric('fod50k', **_kwargs(tmp_path))
    with pytest.raises(ValueError, match='no real data'):
        metric_main.calc_metric('fid1k_full', **dict(_kwargs(tmp_path), dataset_kwargs={}))
    result = metric_main.calc_metric('fid1k_full', **_kwargs(tmp_path))
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    metric_main.report_metric(result, str(run_dir), str(run_dir / 'network-snapshot-000004.pt'))
    line = json.loads((run_dir / 'metric-fid1k_full.jsonl').read_text().splitlines()[0])
    assert (
        line['snapshot_pkl'] == 'network-snapshot-000004.pt'
        and line['results']['fid1k_full'] == result.results.fid1k_full
    )
    assert np.isfinite(line['total_time'])


def _small_metrics(opts):
    """Odd item counts, so that the last batch of one rank wraps around."""
    return dict(
        fid=metric_main.fid_full(opts, 101),
        swd=metric_main.sliced_wasserstein(opts, 37),
        mvc=geometry_eval.multiview_consistency(opts, 21),
        nonflat=geometry_eval.nonflatness(opts, 21),
    )


def _two_rank_worker(tmp_dir):
    """Runs in each of 2 gloo ranks (module level so that spawn can pickle it)."""
    import pathlib

    from torch_utils import distributed

    info = distributed.get_info()
    kwargs = dict(_kwargs(pathlib.Path(tmp_dir)), num_gpus=2, rank=info.rank, batch_size=8, cache=False)
    with open(os.path.join(tmp_dir, f'rank{info.rank}.json'), 'w') as f:
        json.dump(_small_metrics(mu.MetricOptions(**kwargs)), f)


def test_two_ranks_give_the_single_process_numbers(tmp_path):
    from torch_utils import distributed

    distributed.spawn(_two_rank_worker, 2, str(tmp_path), device='cpu', timeout_s=300)
    single = _small_metrics(mu.MetricOptions(**dict(_kwargs(tmp_path), batch_size=8, cache=False)))
    for rank in (0, 1):
        ranked = json.loads((tmp_path / f'rank{rank}.json').read_text())
        for m, values in single.items():
            assert ranked[m] == pytest.approx(values, rel=1e-5), (rank, m)


def test_fake_cameras_from_dataset_poses_or_prior(tmp_path):
    opts = mu.MetricOptions(**_kwargs(tmp_path))
    cams = mu.fake_cameras(opts, 50)
    dataset_positions = mu.get_dataset(opts).cameras().cam2world[:, :3, 3]
    assert (
        torch.cdist(cams.cam2world[:, :3, 3].double(), dataset_positions.double()).min(dim=1).values < 1e-6
    ).all()
    prior = dict(
        class_name='training.cameras.make_camera_prior', kind='normal', radius=3.0, fov=20.0, yaw_std=0.1
    )
    opts = mu.MetricOptions(**_kwargs(tmp_path, camera_prior_kwargs=prior), camera_source='prior')
    cams = mu.fake_cameras(opts, 50)
    assert torch.allclose(cams.cam2world[:, :3, 3].norm(dim=-1), torch.full((50,), 3.0), atol=1e-5)
    assert torch.equal(mu.fake_cameras(opts, 50).cam2world, cams.cam2world)  # seeded
    with pytest.raises(ValueError, match='camera_prior_kwargs'):
        mu.MetricOptions(**_kwargs(tmp_path, camera_prior_kwargs=None), camera_source='prior')


@pytest.mark.gpu
def test_cuda_gives_the_cpu_numbers(tmp_path):
    def run(device):
        opts = mu.MetricOptions(**dict(_kwargs(tmp_path), device=device, cache=False))
        return dict(
            fid=metric_main.fid_full(opts, 64), kid=metric_main.kid_full(opts, 64), pr=metric_main.pr_full(opts, 64),
            swd=metric_main.sliced_wasserstein(opts, 16), mvc=geometry_eval.multiview_consistency(opts, 8),
            nonflat=geometry_eval.nonflatness(opts, 8),
        )  # fmt: skip

    cpu, cuda = run('cpu'), run('cuda')
    for name, values in cpu.items():
        tolerance = 1 / 32 if name == 'pr' else 1e-4  # one of 64 points may flip at a k-NN radius
        assert cuda[name] == pytest.approx(values, rel=1e-3, abs=tolerance), name


@pytest.mark.parametrize(
    'metric, values, best',
    [('pr1k3_full', [0.5, 0.7, 0.6], 0.7), ('nonflat', [1.0, 2.0, 1.5], 2.0), ('fid2k_full', [30, 20, 25], 20),
     ('mvc', [0.03, 0.01, 0.02], 0.01), ('swd1k', [5.0, 3.0, 4.0], 3.0)],
)  # fmt: skip
def test_training_keeps_the_best_value_in_each_metrics_direction(metric, values, best, monkeypatch):
    """PR and nonflat are higher-is-better; the rest are distances. swd ranks by its average, pr by precision."""
    from types import SimpleNamespace

    from training.loop import training_loop

    def results(value):
        if metric.startswith('pr'):
            return {f'{metric}_precision': value, f'{metric}_recall': 1 - value}
        if metric.startswith('swd'):
            return {f'{metric}_16': 100 - value, f'{metric}_avg': value}  # the first key is not the headline
        return {metric: value}

    pending = iter(values)
    monkeypatch.setattr(
        metric_main, 'calc_metric', lambda **kw: dict(metric=metric, results=results(next(pending)))
    )
    c = SimpleNamespace(metrics=[metric], dataset_kwargs={}, camera_prior_kwargs={}, run_dir=None)
    s = SimpleNamespace(c=c, G_ema=None, world_size=1, rank=0, device='cpu', best_metric=None)
    for kimg, _ in enumerate(values):
        s.progress = SimpleNamespace(cur_nimg=kimg * 1000)
        training_loop.maybe_evaluate(s, None)
    assert s.best_metric == dict(name=metric, value=best, kimg=values.index(best))
