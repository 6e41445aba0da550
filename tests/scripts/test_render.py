"""The VTK renderer is our pinhole camera: a box rendered with our labels covers exactly the pixels its
projected corners say. Rendering runs in a subprocess so a VTK/EGL crash cannot take the suite down."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest
import torch
from repo_paths import REPO_ROOT

from training import cameras
from training.dataset import load_dataset_preset

ROOT = REPO_ROOT
BOX = np.array([[-0.2, -0.5, -0.4], [0.9, 0.3, 0.6]])  # an off-centre box: catches u/v flips and offsets


def run_python(code: str, timeout=120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f'subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}'
    return proc


@pytest.mark.slow
def test_rendered_box_matches_projected_corners(tmp_path):
    yaw = torch.tensor([0.0, 0.9, -2.3, 2.8])
    pitch = torch.tensor([1.5707963, 0.5, 2.6, 1.9])  # front, above, below, behind
    cam = cameras.angles_to_camera(yaw, pitch, 3.5, 45.0, dtype=torch.float64)
    np.save(tmp_path / 'labels.npy', cam.to_label().numpy())
    np.save(tmp_path / 'mirrored.npy', cameras.mirror_camera(cam).to_label().numpy())
    run_python(f"""
        import numpy as np, pyvista as pv, sys
        sys.path.insert(0, 'scripts')
        import render_multiview as rm
        r = rm.MeshRenderer(64, supersample=1)
        def views(box, labels):
            r.set_mesh(pv.Box(bounds=(box[0, 0], box[1, 0], box[0, 1], box[1, 1], box[0, 2], box[1, 2])).triangulate())
            return np.stack([r.render(l[:16].reshape(4, 4), l[16:].reshape(3, 3))[..., 3] for l in labels])
        box = np.array({BOX.tolist()})
        np.save({str(tmp_path / 'alpha.npy')!r}, views(box, np.load({str(tmp_path / 'labels.npy')!r})))
        mirrored_box = np.sort(box * [-1, 1, 1], axis=0)  # the box reflected across x = 0
        np.save({str(tmp_path / 'alpha_m.npy')!r}, views(mirrored_box, np.load({str(tmp_path / 'mirrored.npy')!r})))
    """)
    # The mirrored camera sees the mirrored world as the x-flipped image (what dataset mirroring assumes).
    alpha_m = np.load(tmp_path / 'alpha_m.npy')
    flipped = np.load(tmp_path / 'alpha.npy')[:, :, ::-1]
    assert ((alpha_m > 127) != (flipped > 127)).mean() < 0.005
    alpha = np.load(tmp_path / 'alpha.npy')  # [4, 64, 64]
    corners = torch.tensor(
        [[BOX[i, 0], BOX[j, 1], BOX[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    )
    uv, z = cameras.world_to_pixels(corners[None].expand(4, 8, 3), cam)
    assert (z > 0).all()
    for n in range(4):
        rows, cols = np.nonzero(alpha[n] > 127)
        assert len(rows) > 50, f'view {n}: the box is not visible'
        # Pixel j covers u in [j/R, (j+1)/R]: the mask's pixel bounds contain the projected extremes.
        u_lo, u_hi = cols.min() / 64, (cols.max() + 1) / 64
        v_lo, v_hi = rows.min() / 64, (rows.max() + 1) / 64
        p_lo, p_hi = uv[n].min(0).values.numpy(), uv[n].max(0).values.numpy()
        tol = 1.01 / 64
        assert abs(u_lo - p_lo[0]) < tol and abs(u_hi - p_hi[0]) < tol, (n, u_lo, u_hi, p_lo, p_hi)
        assert abs(v_lo - p_lo[1]) < tol and abs(v_hi - p_hi[1]) < tol, (n, v_lo, v_hi, p_lo, p_hi)


def test_supersampled_alpha_is_antialiased_and_colour_straight():
    sys.path.insert(0, os.path.join(ROOT, 'scripts'))
    import render_multiview as rm

    big = np.zeros((4, 4, 4))
    big[:2, :2] = [255, 0, 0, 255]  # one red opaque quarter, the rest transparent
    big[:2, 2:] = [0, 0, 255, 255]
    big[2:, 2:3] = [0, 255, 0, 255]
    small = rm.downsample_rgba(big, 2)
    assert small[0, 0].tolist() == [255, 0, 0, 255] and small[0, 1].tolist() == [0, 0, 255, 255]
    assert small[1, 1].tolist() == [0, 255, 0, 128]  # half covered: straight colour, half alpha
    assert small[1, 0, 3] == 0


@pytest.mark.slow
def test_render_command_writes_a_loadable_megascans_style_dataset(tmp_path):
    import trimesh

    trimesh.creation.box(bounds=[[0, 0, 0], [4, 2, 1]]).export(tmp_path / 'box.ply')
    tool = os.path.join(ROOT, 'scripts', 'dataset_tool.py')
    args = [
        'render',
        '--mesh',
        str(tmp_path / 'box.ply'),
        '--dest',
        str(tmp_path / 'out'),
        '--views',
        '3',
        '--resolution',
        '32',
    ]
    run_python(
        f'import sys, runpy; sys.argv = {[tool] + args!r}; runpy.run_path({tool!r}, run_name="__main__")'
    )
    from training.dataset import ImageFolderDataset

    ds = ImageFolderDataset(tmp_path / 'out' / 'dataset.zip')
    assert len(ds) == 3 and ds.resolution == 32
    _, pitch, radius = cameras.camera_to_angles(ds.cameras().cam2world)
    assert torch.allclose(radius, torch.full((3,), 3.5), atol=1e-5)
    assert torch.allclose(
        cameras.intrinsics_to_fov_deg(ds.cameras().intrinsics), torch.full((3,), 45.0), atol=1e-3
    )
    img = ds[0][0]
    assert (img == 255).all(0).mean() > 0.3 and (img < 255).any(0).mean() > 0.05  # object on white
    mesh = trimesh.load(tmp_path / 'out' / 'meshes' / 'box.ply')
    assert np.allclose(mesh.bounds, [[-1, -0.5, -0.25], [1, 0.5, 0.25]], atol=1e-6)  # scaled into [-1, 1]^3


@pytest.mark.slow
@pytest.mark.parametrize(
    'demo_set,images,objects,shapes', [('shapes', 10, 5, ['arrow', 'box', 'cone', 'nut', 'torus']),
                                      ('classic', 64, 32, ['airplane', 'ant', 'arrow', 'cone', 'globe',
                                                           'nut', 'supertoroid', 'torus'])],
)  # fmt: skip
def test_demo_command_renders_once_then_is_cached(tmp_path, demo_set, images, objects, shapes):
    tool = os.path.join(ROOT, 'scripts', 'dataset_tool.py')
    dest = tmp_path / 'demo'
    args = ['demo', '--set', demo_set, '--dest', str(dest), '--views', '2', '--resolution', '16']
    code = f'import sys, runpy; sys.argv = {[tool] + args!r}; runpy.run_path({tool!r}, run_name="__main__")'
    assert f'rendered {images} images of {objects} objects' in run_python(code).stdout
    from training.dataset import ImageFolderDataset

    ds = ImageFolderDataset(dest / 'dataset.zip')
    assert len(ds) == images and ds.resolution == 16
    meshes = sorted(os.listdir(dest / 'meshes'))
    assert meshes == [f'{name}.ply' for name in shapes]
    import trimesh

    for name in meshes:
        bounds = trimesh.load(dest / 'meshes' / name).bounds
        assert np.isclose(np.abs(bounds).max(), 1.0, atol=1e-5), name  # normalised into [-1, 1]^3
    with zipfile.ZipFile(dest / 'dataset.zip') as zf:
        meta = json.loads(zf.read('dataset.json'))
    classes = dict(meta['classes'])  # one class per object (folder <shape>_c<colouring>)
    assert len(meta['class_names']) == objects and len(classes) == images
    assert sorted(set(classes.values())) == list(range(objects))
    first_classes = meta['class_names'][: len(shapes)]  # the training grid's rows and seeds 0..S-1
    assert sorted(n.split('_c')[0] for n in first_classes) == shapes
    for name, k in classes.items():  # named after the shape where the shape has one colouring
        folder = name.split('/')[0]
        assert meta['class_names'][k] == (folder.split('_c')[0] if objects == len(shapes) else folder), name
    proc = run_python(code)
    assert 'already' in proc.stdout


def test_demo_shapes_cameras_stay_in_the_upper_band():
    """The `shapes` set's cameras: every azimuth, polar angle 40-100 deg (the demo preset's camera prior)."""
    sys.path.insert(0, os.path.join(ROOT, 'scripts'))
    import demo_data
    import render_multiview as rm

    cam = rm.sphere_cameras(500, seed=1, **demo_data.UPPER_BAND)
    yaw, pitch = (a.numpy() for a in cameras.camera_to_angles(cam.cam2world)[:2])
    assert np.degrees(pitch.min()) >= 40 - 1e-6 and np.degrees(pitch.max()) <= 100 + 1e-6
    assert np.degrees(pitch.max() - pitch.min()) > 55 and np.degrees(yaw.max() - yaw.min()) > 340
    preset = load_dataset_preset('demo')['camera_prior_kwargs']
    assert np.isclose(preset['pitch_mean'], demo_data.UPPER_BAND['pitch_mean'])
    assert np.isclose(preset['pitch_range'], demo_data.UPPER_BAND['pitch_range'])


def test_blender_cameras_match_ours():
    sys.path.insert(0, os.path.join(ROOT, 'scripts'))
    import blender_render as br

    cam2world, intrinsics = br.sphere_cameras(50, seed=3)
    yaw, pitch, radius = cameras.camera_to_angles(torch.from_numpy(cam2world))
    ours = cameras.angles_to_camera(yaw, pitch, radius, 45.0, dtype=torch.float64)
    assert np.allclose(cam2world, ours.cam2world.numpy(), atol=1e-9)
    assert np.allclose(intrinsics, ours.intrinsics.numpy(), atol=1e-12)
    assert (cam2world[:, 1, 3] < 0).any() and (cam2world[:, 1, 3] > 0).any()  # below included
    front = cameras.angles_to_camera(0.0, np.pi / 2, 3.5, 45.0, dtype=torch.float64).cam2world[0].numpy()
    M = br.blender_matrix_world(front)
    assert np.allclose(M[:3, 3], [0, -3.5, 0])  # our +z front is Blender's -y front view
    assert np.allclose(-M[:3, 2], [0, 1, 0])  # a Blender camera looks down its -z: towards the origin
    assert np.allclose(M[:3, 1], [0, 0, 1])  # and its +y is Blender's up (+z)
    assert np.allclose(M[:3, 0], [1, 0, 0]) and np.isclose(np.linalg.det(M[:3, :3]), 1)
