"""scripts/dataset_tool.py: convert (crop/pad keep the projection), validate, from-nerfstudio on a
hand-written transforms.json, atomic writes, and one-line errors with a non-zero exit."""

import json
import math
import os
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner
from repo_paths import REPO_ROOT

from training import cameras
from training.dataset import ImageFolderDataset

sys.path.insert(0, os.path.join(REPO_ROOT, 'scripts'))
import dataset_ops as ops  # noqa: E402
import dataset_tool  # noqa: E402


def invoke(*args):
    return CliRunner().invoke(dataset_tool.cli, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, *words):
    assert result.exit_code != 0, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith('Error: '), result.output
    for w in words:
        assert w in lines[0], lines[0]


def write_images(root, size=(12, 8), n=3, mode='RGBA', labels=True):
    os.makedirs(root, exist_ok=True)
    W, H = size
    entries = []
    for i in range(n):
        arr = np.zeros((H, W, 4), np.uint8)
        arr[..., i % 3] = 255
        arr[..., 3] = 255
        PIL.Image.fromarray(arr if mode == 'RGBA' else arr[..., :3], mode).save(
            os.path.join(root, f'im{i}.png')
        )
        cam = cameras.angles_to_camera(0.2 * i, 1.3, 2.0, 30.0, dtype=torch.float64)
        K = np.array([[1.7, 0, 0.55], [0, 1.7 * W / H, 0.45], [0, 0, 1]])  # fx/W and fy/H of square pixels
        entries.append([f'im{i}.png', cam.cam2world[0].reshape(-1).tolist() + K.reshape(-1).tolist()])
    if labels:
        with open(os.path.join(root, 'dataset.json'), 'w') as f:
            json.dump({'labels': entries}, f)
    return entries


@pytest.mark.parametrize('crop', ['center', 'pad'])
def test_convert_crop_keeps_every_point_on_the_same_pixel(tmp_path, crop):
    entries = write_images(tmp_path / 'src')
    result = invoke(
        'convert',
        '--source',
        tmp_path / 'src',
        '--dest',
        tmp_path / 'out.zip',
        '--crop',
        crop,
        '--resolution',
        4,
    )
    assert result.exit_code == 0, result.output
    ds = ImageFolderDataset(tmp_path / 'out.zip')
    assert len(ds) == 3 and ds.resolution == 4
    W, H = 12, 8
    x0, y0, S = ops.square_box(W, H, crop, 'test')
    points = torch.tensor([[[0.1, 0.2, -0.3], [0.0, 0.0, 0.0], [-0.3, 0.1, 0.2]]], dtype=torch.float64)
    for i, (_, label) in enumerate(entries):
        before, _ = cameras.world_to_pixels(
            points, cameras.Camera.from_label(torch.tensor([label], dtype=torch.float64))
        )
        after, _ = cameras.world_to_pixels(
            points, cameras.Camera.from_label(torch.from_numpy(ds[i][1][None]).double())
        )
        px_before = before[0].numpy() * [W, H]  # source pixels
        px_after = after[0].numpy() * S + [x0, y0]  # square pixels mapped back into the source
        assert np.allclose(px_before, px_after, atol=1e-4)
    K = ds.cameras().intrinsics[0]
    assert abs(float(K[0, 0]) - float(K[1, 1])) < 1e-5  # square pixels stay square


def test_convert_resizes_with_antialiasing_and_rgba(tmp_path):
    os.makedirs(tmp_path / 'src')
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)  # 1-pixel checkerboard
    PIL.Image.fromarray(checker, 'L').save(tmp_path / 'src' / 'c.png')
    assert (
        invoke(
            'convert', '--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip', '--resolution', 8
        ).exit_code
        == 0
    )
    with zipfile.ZipFile(tmp_path / 'o.zip') as zf:
        small = np.asarray(PIL.Image.open(zf.open('c.png')))
        assert 'dataset.json' not in zf.namelist()
    assert small.shape == (8, 8, 3) and np.abs(small.astype(int) - 128).max() <= 4  # no aliasing: mid grey
    write_images(tmp_path / 'sq', size=(8, 8))
    assert (
        invoke(
            'convert', '--source', tmp_path / 'sq', '--dest', tmp_path / 'a.zip', '--channels', 'rgba'
        ).exit_code
        == 0
    )
    with zipfile.ZipFile(tmp_path / 'a.zip') as zf:
        assert PIL.Image.open(zf.open('im0.png')).mode == 'RGBA'


def test_convert_failure_leaves_no_archive(tmp_path):
    write_images(tmp_path / 'src', size=(8, 8))
    (tmp_path / 'src' / 'im1.png').write_bytes(b'garbage')
    result = invoke('convert', '--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip')
    assert_one_line_error(result, 'im1.png', 'cannot read')
    assert os.listdir(tmp_path) == ['src']


def test_convert_glob_source(tmp_path):
    write_images(tmp_path / 'src', size=(8, 8))
    result = invoke('convert', '--source', str(tmp_path / 'src' / 'im[01].png'), '--dest', tmp_path / 'g.zip')
    assert result.exit_code == 0, result.output
    assert len(ImageFolderDataset(tmp_path / 'g.zip')) == 2


def test_validate_reports_and_plots(tmp_path):
    write_images(tmp_path / 'd', size=(8, 8))
    result = invoke('validate', '--data', tmp_path / 'd', '--plot', tmp_path / 'p.png')
    assert result.exit_code == 0, result.output
    assert (
        'images       3' in result.output
        and 'radius       mean 2' in result.output
        and 'WARNING' not in result.output
    )
    assert PIL.Image.open(tmp_path / 'p.png').size[0] > 100
    # OpenGL-style cameras (z backwards) look away from the origin: the report says so.
    path = tmp_path / 'd' / 'dataset.json'
    data = json.loads(path.read_text())
    for _, label in data['labels']:
        M = np.array(label[:16]).reshape(4, 4) @ ops.OPENGL_TO_OPENCV
        label[:16] = M.reshape(-1).tolist()
    path.write_text(json.dumps(data))
    assert (
        'look away from the origin'
        in invoke('validate', '--data', tmp_path / 'd', '--plot', tmp_path / 'p.png').output
    )


def _nerfstudio_scene(root, centre, scale, tilt):
    """Our cameras, moved into a z-up, shifted, scaled world with OpenGL camera axes, as nerfstudio writes."""
    yaw = torch.arange(8, dtype=torch.float64).repeat(2) * (math.pi / 4)
    pitch = torch.tensor([1.2] * 8 + [1.9] * 8, dtype=torch.float64)
    ours = cameras.angles_to_camera(yaw, pitch, 2.0, 40.0, dtype=torch.float64).cam2world.numpy()
    os.makedirs(root / 'images')
    frames = []
    for i, M in enumerate(ours):
        W = np.eye(4)
        W[:3, :3], W[:3, 3] = tilt * scale, centre  # world_ns = scale * tilt @ x + centre
        gl = W @ M @ ops.OPENGL_TO_OPENCV
        gl[:3, :3] /= scale  # cameras stay rigid; only positions scale
        PIL.Image.fromarray(np.full((6, 8, 3), 40 * (i % 6), np.uint8)).save(
            root / 'images' / f'f{i:02d}.png'
        )
        frames.append(dict(file_path=f'images/f{i:02d}.png', transform_matrix=gl.tolist()))
    transforms = dict(fl_x=8.0, fl_y=8.0, cx=4.0, cy=3.0, w=8, h=6, camera_model='OPENCV', frames=frames)
    (root / 'transforms.json').write_text(json.dumps(transforms))
    return ours


def test_from_nerfstudio_recovers_the_scene(tmp_path):
    tilt = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # our +y becomes nerfstudio's +z
    ours = _nerfstudio_scene(tmp_path / 'ns', centre=[1.0, -2.0, 0.5], scale=3.0, tilt=tilt)
    result = invoke(
        'from-nerfstudio', '--source', tmp_path / 'ns', '--dest', tmp_path / 'o.zip', '--radius', 2.0
    )
    assert result.exit_code == 0, result.output  # --source: the folder holding transforms.json
    with zipfile.ZipFile(tmp_path / 'o.zip') as zf:
        names = sorted(n for n in zf.namelist() if n.endswith('.png'))
        labels, fmt = ops.labels_for(names, zf.read('dataset.json'), 'o.zip')
    assert fmt == 'eg3d' and names[0] == 'images/f00.png'
    assert np.allclose(labels[:, :16].reshape(-1, 4, 4), ours, atol=1e-5)
    assert np.allclose(labels[0, 16:].reshape(3, 3), [[1.0, 0, 0.5], [0, 8 / 6, 0.5], [0, 0, 1]])
    # The 8x6 frames then go through convert; the origin stays at the image centre.
    result = invoke(
        'convert', '--source', tmp_path / 'o.zip', '--dest', tmp_path / 'sq.zip', '--crop', 'center'
    )
    assert result.exit_code == 0, result.output
    ds = ImageFolderDataset(tmp_path / 'sq.zip')
    assert ds.resolution == 6 and len(ds) == 16
    uv, _ = cameras.world_to_pixels(torch.zeros(16, 1, 3), ds.cameras())
    assert torch.allclose(uv, torch.full_like(uv, 0.5), atol=1e-5)


def test_from_nerfstudio_errors(tmp_path):
    (tmp_path / 't.json').write_text('{"frames": [{"file_path": "x.png"}]}')
    assert_one_line_error(
        invoke('from-nerfstudio', '--source', tmp_path / 't.json', '--dest', tmp_path / 'o.zip'), 'frame 0'
    )
    (tmp_path / 'u.json').write_text('not json')
    assert_one_line_error(
        invoke('from-nerfstudio', '--source', tmp_path / 'u.json', '--dest', tmp_path / 'o.zip'), 'u.json'
    )
    assert_one_line_error(
        invoke('from-nerfstudio', '--source', tmp_path, '--dest', tmp_path / 'o.zip'), 'no transforms.json'
    )
    _nerfstudio_scene(tmp_path / 'ns', centre=[0.0, 0, 0], scale=1.0, tilt=np.eye(3))
    transforms = json.loads((tmp_path / 'ns' / 'transforms.json').read_text())
    for frames in (transforms['frames'][:1], transforms['frames'][:1] * 3):  # one frame; one place thrice
        (tmp_path / 'ns' / 'transforms.json').write_text(json.dumps(dict(transforms, frames=frames)))
        result = invoke('from-nerfstudio', '--source', tmp_path / 'ns', '--dest', tmp_path / 'o.zip')
        assert_one_line_error(result, 'sit at their common look-at point')
    assert not (tmp_path / 'o.zip').exists()


def test_render_missing_mesh_and_protocol_defaults(tmp_path, monkeypatch):
    import render_multiview as rm

    result = invoke('render', '--mesh', tmp_path / 'missing.obj', '--dest', tmp_path / 'out')
    assert_one_line_error(result, 'missing.obj', 'does not exist')
    seen = []

    class FakeRenderer:  # no offscreen context needed: the command stops at the cameras
        def __init__(self, resolution):
            pass

        def set_mesh(self, *args, **kwargs):
            pass

        def close(self):
            pass

    def sphere_cameras(views, radius, fov, seed):
        seen.append((radius, fov))
        raise rm.RenderError('stop')

    monkeypatch.setattr(rm, 'MeshRenderer', FakeRenderer)
    monkeypatch.setattr(rm, 'sphere_cameras', sphere_cameras)
    (tmp_path / 'tri.obj').write_text('v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n')
    monkeypatch.setattr(rm, 'MEGASCANS_RADIUS', 2.25)  # the defaults are the module's protocol constants
    assert_one_line_error(
        invoke('render', '--mesh', tmp_path / 'tri.obj', '--dest', tmp_path / 'out'), 'stop'
    )
    assert_one_line_error(
        invoke('render', '--mesh', tmp_path / 'tri.obj', '--dest', tmp_path / 'out', '--fov', 30), 'stop'
    )
    assert seen == [(2.25, rm.MEGASCANS_FOV), (2.25, 30.0)]


def test_cli_bad_inputs_exit_nonzero_with_one_line(tmp_path):
    os.makedirs(tmp_path / 'empty')
    assert_one_line_error(invoke('validate', '--data', tmp_path / 'empty'), 'no images')
    (tmp_path / 'x.zip').write_text('not a zip')
    assert_one_line_error(invoke('validate', '--data', tmp_path / 'x.zip'), 'not a zip')
    write_images(tmp_path / 'wide')
    assert_one_line_error(invoke('validate', '--data', tmp_path / 'wide'), 'not square', '--crop')
    result = invoke('convert', '--source', tmp_path / 'wide', '--dest', tmp_path / 'w.zip')
    assert_one_line_error(result, 'not square', '--crop')
    write_images(tmp_path / 'mixed', size=(8, 8), n=2)
    PIL.Image.new('RGB', (16, 16)).save(tmp_path / 'mixed' / 'im9.png')
    assert_one_line_error(invoke('validate', '--data', tmp_path / 'mixed'), 'im9.png', '--resolution')
    write_images(tmp_path / 'nolabels', size=(8, 8), labels=False)
    assert_one_line_error(invoke('validate', '--data', tmp_path / 'nolabels'), 'dataset.json', 'missing')
    write_images(tmp_path / 'nan', size=(8, 8))
    (tmp_path / 'nan' / 'dataset.json').write_text('{"labels": [["im0.png", [NaN]]]}')
    assert_one_line_error(invoke('validate', '--data', tmp_path / 'nan'), 'dataset.json')


def test_convert_angles_form_of_a_wide_image_keeps_the_vertical_fov(tmp_path):
    write_images(tmp_path / 'src', labels=False)  # 12 x 8
    labels = [[f'im{i}.png', [10.0 * i, 80.0, 0.0, 2.0, 30.0]] for i in range(3)]
    (tmp_path / 'src' / 'dataset.json').write_text(json.dumps({'labels': labels}))
    result = invoke('convert', '--source', tmp_path / 'src', '--dest', tmp_path / 'o.zip', '--crop', 'center')
    assert result.exit_code == 0, result.output
    cam = ImageFolderDataset(tmp_path / 'o.zip').cameras()
    assert torch.allclose(cameras.intrinsics_to_fov_deg(cam.intrinsics), torch.full((3,), 30.0), atol=1e-4)
    assert torch.allclose(cam.intrinsics[:, 0, 0], cam.intrinsics[:, 1, 1], atol=1e-6)
    uv, _ = cameras.world_to_pixels(torch.zeros(3, 1, 3), cam)
    assert torch.allclose(uv, torch.full_like(uv, 0.5), atol=1e-5)


def test_convert_carries_the_classes(tmp_path):
    from test_train_fixtures import add_classes, make_tiny_dataset

    src = add_classes(make_tiny_dataset(str(tmp_path / 'src')), [i % 3 for i in range(12)], ['a', 'b', 'c'])
    result = invoke(
        'convert', '--source', src, '--dest', tmp_path / 'c.zip', '--resolution', 8, '--max-images', 5
    )
    assert result.exit_code == 0, result.output
    ds = ImageFolderDataset(tmp_path / 'c.zip')
    assert (ds.classes.tolist(), ds.class_names) == ([0, 1, 2, 0, 1], ['a', 'b', 'c'])
