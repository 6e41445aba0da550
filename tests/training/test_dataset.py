"""ImageFolderDataset: label forms, mirroring, compositing, presets, and one clear error per bad input."""

import json
import math
import os
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

from training import cameras
from training.dataset import (
    PRESET_DIR,
    DatasetError,
    ImageFolderDataset,
    angles_to_label,
    load_dataset_preset,
    parse_background,
    preset_camera_prior,
)


def _label(yaw=0.3, pitch=1.2, radius=2.0, fov=30.0):
    return cameras.angles_to_camera(yaw, pitch, radius, fov, dtype=torch.float64).to_label()[0].tolist()


def make_folder(root, n=4, res=8, mode='RGB', labels='eg3d', sizes=None, skip_json=False):
    os.makedirs(root, exist_ok=True)
    rng = np.random.RandomState(0)
    entries = []
    for i in range(n):
        w, h = sizes[i] if sizes else (res, res)
        arr = rng.randint(0, 256, size=(h, w, len(mode) if mode != 'L' else 1)).astype(np.uint8)
        PIL.Image.fromarray(arr.squeeze(-1) if mode == 'L' else arr, mode).save(
            os.path.join(root, f'img{i:03d}.png')
        )
        label = _label(yaw=0.1 * i) if labels == 'eg3d' else [10.0 * i, 80.0, 0.0, 2.0, 30.0]
        entries.append([f'img{i:03d}.png', label])
    if not skip_json:
        with open(os.path.join(root, 'dataset.json'), 'w') as f:
            json.dump({'labels': entries}, f)
    return entries


def test_folder_and_zip_give_identical_items(tmp_path):
    make_folder(tmp_path / 'd')
    with zipfile.ZipFile(tmp_path / 'd.zip', 'w') as zf:
        for name in sorted(os.listdir(tmp_path / 'd')):
            zf.write(tmp_path / 'd' / name, name)
    a, b = ImageFolderDataset(tmp_path / 'd'), ImageFolderDataset(tmp_path / 'd.zip')
    assert len(a) == len(b) == 4 and a.resolution == 8 and a.num_channels == 3 and a.label_format == 'eg3d'
    assert b.name == 'd'
    for i in range(4):
        (ia, la), (ib, lb) = a[i], b[i]
        assert ia.dtype == np.uint8 and ia.shape == (3, 8, 8) and la.dtype == np.float32 and la.shape == (25,)
        assert np.array_equal(ia, ib) and np.array_equal(la, lb)
    expected = np.asarray(PIL.Image.open(tmp_path / 'd' / 'img002.png')).transpose(2, 0, 1)
    assert np.array_equal(a[2][0], expected)
    assert np.allclose(a[2][1], _label(yaw=0.2), atol=1e-6)


def test_angles_form_matches_cameras_conventions(tmp_path):
    make_folder(tmp_path / 'd', labels='angles')
    ds = ImageFolderDataset(tmp_path / 'd')
    assert ds.label_format == 'angles'
    yaw, pitch, radius = cameras.camera_to_angles(ds.cameras().cam2world.double())
    assert torch.allclose(yaw, torch.deg2rad(torch.tensor([0.0, 10, 20, 30], dtype=torch.float64)), atol=1e-5)
    assert torch.allclose(pitch, torch.full((4,), math.radians(80), dtype=torch.float64), atol=1e-5)
    assert torch.allclose(radius, torch.full((4,), 2.0, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(
        cameras.intrinsics_to_fov_deg(ds.cameras().intrinsics), torch.full((4,), 30.0), atol=1e-3
    )


def test_angles_round_trip_and_roll_turns_content_counter_clockwise():
    rng = np.random.RandomState(1)
    ang = np.stack(
        [
            rng.uniform(-170, 170, 20),
            rng.uniform(5, 175, 20),
            np.zeros(20),
            rng.uniform(1, 4, 20),
            rng.uniform(10, 60, 20),
        ],
        1,
    )
    cam = cameras.Camera.from_label(torch.from_numpy(angles_to_label(ang)))
    yaw, pitch, radius = cameras.camera_to_angles(cam.cam2world)
    assert np.allclose(np.degrees(yaw.numpy()), ang[:, 0], atol=1e-6) and np.allclose(
        np.degrees(pitch.numpy()), ang[:, 1], atol=1e-6
    )
    assert np.allclose(radius.numpy(), ang[:, 3]) and np.allclose(
        cameras.intrinsics_to_fov_deg(cam.intrinsics).numpy(), ang[:, 4]
    )
    # Roll 90 deg on the front camera: a point to the right of the centre (+x) moves to the top of the image.
    rolled = cameras.Camera.from_label(torch.from_numpy(angles_to_label([[0, 90, 90, 2.0, 30]])))
    uv, _ = cameras.world_to_pixels(torch.tensor([[[0.3, 0.0, 0.0]]], dtype=torch.float64), rolled)
    assert abs(uv[0, 0, 0] - 0.5) < 1e-9 and uv[0, 0, 1] < 0.5
    # Roll keeps the camera centre and the look-at point.
    assert np.allclose(
        angles_to_label([[25, 70, 33, 2.0, 30]])[0, [3, 7, 11]],
        angles_to_label([[25, 70, 0, 2.0, 30]])[0, [3, 7, 11]],
    )


def test_mirror_doubles_with_flipped_images_and_consistent_projection(tmp_path):
    make_folder(tmp_path / 'd')
    ds = ImageFolderDataset(tmp_path / 'd', mirror=True)
    assert len(ds) == 8 and ds.cameras().batch_size == 8
    img, label = ds[5]
    assert np.array_equal(img, ds[1][0][:, :, ::-1])
    cam, cam_m = (
        cameras.Camera.from_label(torch.from_numpy(ds[1][1][None])),
        cameras.Camera.from_label(torch.from_numpy(label[None])),
    )
    yaw, _, _ = cameras.camera_to_angles(cam.cam2world)
    yaw_m, _, _ = cameras.camera_to_angles(cam_m.cam2world)
    assert torch.allclose(yaw_m, -yaw, atol=1e-6)
    # An object point X seen at u by the camera is seen at 1 - u (same v) at its mirror F X by the mirrored camera.
    X = torch.tensor([[[0.2, -0.1, 0.3], [0.0, 0.0, 0.0]]])
    uv, _ = cameras.world_to_pixels(X, cam)
    uv_m, _ = cameras.world_to_pixels(X * torch.tensor([-1.0, 1.0, 1.0]), cam_m)
    assert torch.allclose(uv_m[..., 0], 1 - uv[..., 0], atol=1e-5) and torch.allclose(
        uv_m[..., 1], uv[..., 1], atol=1e-5
    )


def test_rgba_composited_and_grayscale_expanded(tmp_path):
    os.makedirs(tmp_path / 'd')
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[0, 2, 3] = 255, 0, 128
    PIL.Image.fromarray(rgba, 'RGBA').save(tmp_path / 'd' / 'a.png')
    PIL.Image.fromarray(np.full((4, 4), 77, np.uint8), 'L').save(tmp_path / 'd' / 'b.png')
    json.dump(
        {'labels': [['a.png', _label()], ['b.png', _label()]]}, open(tmp_path / 'd' / 'dataset.json', 'w')
    )
    white = ImageFolderDataset(tmp_path / 'd')[0][0]
    assert white[:, 0, 0].tolist() == [200, 0, 0] and white[:, 0, 1].tolist() == [255, 255, 255]
    assert white[:, 0, 2].tolist() == [round(200 * 128 / 255 + 255 * 127 / 255), 127, 127]
    black = ImageFolderDataset(tmp_path / 'd', background='#000000')[0][0]
    assert black[:, 0, 1].tolist() == [0, 0, 0]
    gray = ImageFolderDataset(tmp_path / 'd')[1][0]
    assert gray.shape == (3, 4, 4) and (gray == 77).all()
    assert parse_background([1, 2, 3]) == (1, 2, 3)


def test_max_size_subset_is_seeded(tmp_path):
    make_folder(tmp_path / 'd', n=6)
    a = ImageFolderDataset(tmp_path / 'd', max_size=3, random_seed=5)
    b = ImageFolderDataset(tmp_path / 'd', max_size=3, random_seed=5)
    assert len(a) == 3 and [a.image_name(i) for i in range(3)] == [b.image_name(i) for i in range(3)]


def test_dataloader_with_workers_reads_zip(tmp_path):
    make_folder(tmp_path / 'd')
    with zipfile.ZipFile(tmp_path / 'd.zip', 'w') as zf:
        for name in sorted(os.listdir(tmp_path / 'd')):
            zf.write(tmp_path / 'd' / name, name)
    ds = ImageFolderDataset(tmp_path / 'd.zip', mirror=True)
    ds[0]  # opens the zip in this process; workers must reopen their own handle
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=1, shuffle=False)
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 8, 8) and labels.shape == (4, 25)
    assert torch.equal(images[1], torch.from_numpy(ds[1][0]))


def _bad(fn, *words):
    with pytest.raises(DatasetError) as e:
        fn()
    msg = str(e.value)
    assert '\n' not in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_every_bad_input_gives_one_clear_line(tmp_path):
    os.makedirs(tmp_path / 'empty')
    _bad(lambda: ImageFolderDataset(tmp_path / 'empty'), 'no images')
    (tmp_path / 'empty' / 'dataset.zip').write_bytes(b'')
    _bad(
        lambda: ImageFolderDataset(tmp_path / 'empty'),
        'no images',
        'pass ' + str(tmp_path / 'empty' / 'dataset.zip'),
    )
    _bad(lambda: ImageFolderDataset(tmp_path / 'nowhere'), 'no such file')
    (tmp_path / 'notzip.zip').write_bytes(b'hello')
    _bad(lambda: ImageFolderDataset(tmp_path / 'notzip.zip'), 'not a zip')
    make_folder(tmp_path / 'corrupt')
    (tmp_path / 'corrupt' / 'img001.png').write_bytes(b'\x89PNG broken')
    _bad(lambda: ImageFolderDataset(tmp_path / 'corrupt'), 'img001.png', 'cannot read')
    _bad(
        lambda: ImageFolderDataset(tmp_path / 'corrupt', check_all_sizes=False)[1],
        'img001.png',
        'cannot read',
    )
    make_folder(tmp_path / 'mixed', sizes=[(8, 8), (8, 8), (16, 16), (8, 8)])
    _bad(lambda: ImageFolderDataset(tmp_path / 'mixed'), 'img002.png', '--resolution')
    make_folder(tmp_path / 'wide', sizes=[(12, 8)] * 4)
    _bad(lambda: ImageFolderDataset(tmp_path / 'wide'), 'not square', '--crop')
    make_folder(tmp_path / 'ok')
    _bad(lambda: ImageFolderDataset(tmp_path / 'ok', resolution=16), 'resolution 16')
    make_folder(tmp_path / 'nojson', skip_json=True)
    _bad(lambda: ImageFolderDataset(tmp_path / 'nojson'), 'dataset.json', 'missing')


@pytest.mark.parametrize(
    'case, words',
    [
        ('malformed', ['not valid JSON']),
        ('missing_entry', ['no label', 'img003.png']),
        ('wrong_length', ['img001.png', '7 numbers']),
        ('nan', ['img002.png', 'NaN']),
        ('non_rigid', ['img000.png', 'not rigid']),
        ('pixel_intrinsics', ['not normalized', 'divide']),
        ('bad_angles', ['img001.png', 'radius']),
    ],
)
def test_bad_labels(tmp_path, case, words):
    entries = make_folder(tmp_path / 'd', labels='angles' if case == 'bad_angles' else 'eg3d')
    path = tmp_path / 'd' / 'dataset.json'
    if case == 'malformed':
        path.write_text('{"labels": [["img000.png", [1, 2')
    else:
        if case == 'missing_entry':
            entries = entries[:3]
        elif case == 'wrong_length':
            entries[1][1] = [0.0] * 7
        elif case == 'nan':
            entries[2][1][3] = float('nan')
        elif case == 'non_rigid':
            entries[0][1][0] *= 2
        elif case == 'pixel_intrinsics':
            entries[0][1][18] = 128.0
        elif case == 'bad_angles':
            entries[1][1][3] = -1.0
        path.write_text(json.dumps({'labels': entries}))
    msg = _bad(lambda: ImageFolderDataset(tmp_path / 'd'), *words)
    assert 'dataset.json' in msg


def test_presets_load_and_reject_unknown_keys(tmp_path):
    ffhq = load_dataset_preset('ffhq256')
    # FFHQ/Cats: G draws the dataset's own poses (public code); Table 4's fits stay as camera_fit.
    assert ffhq['resolution'] == 256 and ffhq['fov'] == 12.0 and ffhq['camera_prior'] == 'dataset'
    assert (
        ffhq['camera_fit']
        == dict(kind='normal', yaw_mean=0.0, yaw_std=0.3, pitch_mean=math.pi / 2, pitch_std=0.2)
        and load_dataset_preset('cats256')['camera_fit']['yaw_std'] == 0.2
    )
    assert preset_camera_prior(ffhq) == ('dataset', {}) and preset_camera_prior(ffhq, 'fit')[0] == 'normal'
    assert load_dataset_preset('ffhq512')['resolution'] == 512
    for name in ['plants256', 'food256', 'demo']:
        assert load_dataset_preset(name)['camera_prior'] == 'uniform_sphere'
    assert (
        load_dataset_preset('plants256')['mirror'] and load_dataset_preset('food256')['mirror']
    )  # public code
    with pytest.raises(ValueError, match='no camera_fit'):
        preset_camera_prior(load_dataset_preset('plants256'), 'fit')
    bad = tmp_path / 'bad.yaml'
    bad.write_text(open(os.path.join(PRESET_DIR, 'demo.yaml')).read() + 'radiuss: 2\n')
    _bad(lambda: load_dataset_preset(str(bad)), 'radiuss')
    _bad(lambda: load_dataset_preset('nope'), 'not found', 'demo')


def test_an_eg3d_ffhq_label_reads_as_a_frontal_camera(tmp_path):
    # A frontal label as published in EG3D's FFHQ dataset.json (quoted in NVlabs/eg3d issue #65).
    label = [0.9999417662620544, 0.010793998837471008, 0.00011557899415493011, 0.0015220991844047327]
    label += [0.010792133398354053, -0.9998840093612671, 0.01074833795428276, -0.012054688543150803]
    label += [0.0002315831370651722, -0.010746465064585209, -0.9999422430992126, 2.699972660546436]
    label += [0.0, 0.0, 0.0, 1.0, 4.2647, 0.0, 0.5, 0.0, 4.2647, 0.5, 0.0, 0.0, 1.0]
    os.makedirs(tmp_path / 'd')
    PIL.Image.new('RGB', (4, 4)).save(tmp_path / 'd' / '00023.png')
    (tmp_path / 'd' / 'dataset.json').write_text(json.dumps({'labels': [['00023.png', label]]}))
    cam = ImageFolderDataset(tmp_path / 'd').cameras()
    yaw, pitch, radius = cameras.camera_to_angles(cam.cam2world.double())
    assert (
        abs(yaw.item()) < 0.01 and abs(pitch.item() - math.pi / 2) < 0.01 and abs(radius.item() - 2.7) < 1e-3
    )
    assert abs(cameras.intrinsics_to_fov_deg(cam.intrinsics).item() - 13.37) < 0.01
    uv, _ = cameras.world_to_pixels(torch.tensor([[[0.0, 0.1, 0.0]]]), cam)
    assert uv[0, 0, 1] < 0.5  # world +y is up in the image: the same world as ours
