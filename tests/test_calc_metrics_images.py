"""calc_metrics.py --images: any folder or zip of samples scored against a dataset, with the snapshot protocol."""

import io
import os
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from shared_doubles import TinyFeatureNet
from test_calc_metrics import _make_dataset

import calc_metrics
from metrics import frechet, image_set, metric_main
from metrics import metric_utils as mu

RES = 16


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format='PNG')
    return buffer.getvalue()


def _samples(n: int, seed=1, res=RES) -> list[np.ndarray]:
    g = np.random.RandomState(seed)
    return [(g.rand(res, res, 3) * 255).astype(np.uint8) for _ in range(n)]


def _write_zip(path, arrays) -> None:
    with zipfile.ZipFile(path, 'w') as z:
        for i, a in enumerate(arrays):
            z.writestr(f'samples/{i:05d}.png', _png(a))


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv('PGRF_CACHE_DIR', str(tmp_path / 'cache'))
    monkeypatch.setattr(mu, 'get_feature_net', lambda opts: TinyFeatureNet().to(opts.device).eval())
    _make_dataset(str(tmp_path / 'data'), res=RES)
    return str(tmp_path / 'data')


def _naive_fid(real_images, fake_images) -> float:
    """FID of the two lists of uint8 [H, W, 3] arrays, straight from the formula."""
    net = TinyFeatureNet()
    feats = [
        net(torch.from_numpy(np.stack(x).transpose(0, 3, 1, 2).copy())) for x in (real_images, fake_images)
    ]
    feats = [f.detach().double().numpy() for f in feats]
    return frechet.frechet_distance(*frechet.feature_stats(feats[0]), *frechet.feature_stats(feats[1]))


def test_cli_scores_a_zip_like_the_naive_formula(data, tmp_path):
    samples = _samples(1003)  # the first 1000 in name order are used
    _write_zip(tmp_path / 'samples.zip', samples)
    args = ['--images', str(tmp_path / 'samples.zip'), '--data', data, '--quiet']
    result = CliRunner().invoke(calc_metrics.main, args + ['--metrics', 'fid1k_full,kid1k_full,pr1k3_full'])
    assert result.exit_code == 0, result.output
    reals = [np.asarray(Image.open(os.path.join(data, f'img{i:03d}.png'))) for i in range(12)]
    fid = float(next(line for line in result.output.splitlines() if ' fid1k_full ' in line).split()[3])
    assert fid == pytest.approx(_naive_fid(reals, samples[:1000]), rel=1e-4)
    assert 'kid1k_full' in result.output and 'pr1k3_full_precision' in result.output


def test_folder_and_zip_agree_and_rgba_is_composited_on_the_background(data, tmp_path):
    folder = tmp_path / 'folder'
    folder.mkdir()
    rgba = np.zeros((RES, RES, 4), np.uint8)
    rgba[: RES // 2, :, :3], rgba[: RES // 2, :, 3] = (
        200,
        255,
    )  # top half opaque grey, bottom half transparent
    arrays = _samples(6)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f'{i}.png')
    Image.fromarray(rgba).save(folder / 'z.png')
    _write_zip(tmp_path / 'same.zip', arrays)
    kwargs = dict(dataset_kwargs=dict(class_name=calc_metrics.DATASET_CLASS, path=data), device='cpu')
    fids = [
        metric_main.fid_full(mu.MetricOptions(**kwargs, fake_images=str(p)), 6)['fid0k_full']
        for p in (folder, tmp_path / 'same.zip')
    ]
    assert fids[0] == pytest.approx(fids[1], rel=1e-9)
    for background, value in (('black', 0), ('white', 255)):
        last = image_set.ImageSet(str(folder), RES, background)[6]
        assert (last[:, : RES // 2] == 200).all() and (last[:, RES // 2 :] == value).all()


def test_bad_image_sets_fail_with_one_line(data, tmp_path):
    empty, mixed, few, big = (tmp_path / n for n in ('empty', 'mixed', 'few', 'big'))
    for folder in (empty, mixed, few, big):
        folder.mkdir()
    (empty / 'notes.txt').write_text('no images here')
    for i, a in enumerate(_samples(3) + _samples(1, res=RES * 2)):
        Image.fromarray(a).save(mixed / f'{i}.png')
    for i, a in enumerate(_samples(10)):
        Image.fromarray(a).save(few / f'{i}.jpg')
    Image.fromarray(_samples(1, res=32)[0]).save(big / '0.png')
    cases = [
        (['--images', str(empty), '--data', data], 'no PNG/JPG images'),
        (['--images', str(mixed), '--data', data], 'all samples must have one size'),
        (
            ['--images', str(few), '--data', data, '--metrics', 'fid1k_full'],
            '10 images, but the metric needs 1000',
        ),
        (['--images', str(big), '--data', data], 'resize them to 16x16'),
        (['--images', str(few)], 'needs --data'),
        (['--images', str(tmp_path / 'nowhere'), '--data', data], 'no such file'),
        (['--images', str(few), '--data', data, '--metrics', 'swd1k'], 'need a generator'),
        (['--images', str(few), '--data', data, '--run', str(tmp_path)], 'not both'),
    ]
    for args, words in cases:
        result = CliRunner().invoke(calc_metrics.main, args + ['--quiet'])
        assert result.exit_code != 0 and words in result.output, (args, result.output)
        assert result.output.count('\n') == 1, result.output
