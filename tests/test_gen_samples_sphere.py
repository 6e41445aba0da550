"""gen_samples.py end to end on an analytic generator whose answers are known: a ball of radius 0.5 with a
colour set by w. It implements the Generator interface (mapping, synthesis, render, query_points), is
saved and loaded as a real snapshot, and pins geometry, colours, depth and camera handling."""

import json
import math

import numpy as np
import pytest
import torch
import trimesh
from click.testing import CliRunner
from PIL import Image

import gen_samples
from dnnlib import registry
from torch_utils import checkpoint, misc
from training import cameras

RADIUS = 0.5
CAM_RADIUS = 3.5


class SphereGenerator(torch.nn.Module):
    """A solid ball at the origin; its colour is tanh of the first three entries of w."""

    @misc.record_init_kwargs
    def __init__(self, z_dim=4, w_dim=4, num_ws=3, img_resolution=16, scene_bounds=1.0, num_steps=96):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        self.img_resolution, self.scene_bounds, self.num_steps = img_resolution, scene_bounds, num_steps
        self.affine = torch.nn.Linear(z_dim, w_dim)
        self.register_buffer('w_avg', torch.zeros(w_dim))

    def mapping(self, z, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        ws = self.affine(z)[:, None].repeat(1, self.num_ws, 1)  # [N, num_ws, w_dim]
        cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
        ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws

    def synthesis(self, ws, noise_mode='random'):
        return ws.mean(1)[:, None, :, None, None].expand(-1, 3, -1, 2, 2)  # [N, 3, C, 2, 2]

    def query_points(self, planes, points, chunk_size=None):
        r = points.norm(dim=-1, keepdim=True)
        sigma = 60 * torch.sigmoid((RADIUS - r) / 0.005)
        rgb = torch.tanh(planes[:, 0, :3, 0, 0])[:, None].expand(-1, points.shape[1], -1)  # [N, P, 3]
        return rgb, sigma

    def render(self, planes, camera, patch_params=None, resolution=None, ws=None, foreground_only=False):
        N, R, S = planes.shape[0], resolution or self.img_resolution, self.num_steps
        px = (torch.arange(R) + 0.5) / R
        v, u = torch.meshgrid(px, px, indexing='ij')
        uv = torch.stack([u, v], -1).reshape(1, R * R, 2).expand(N, -1, -1)
        origins, dirs = cameras.pixels_to_rays(uv, camera)
        t = torch.linspace(CAM_RADIUS - 1.5, CAM_RADIUS + 1.5, S + 1)
        t = (t[1:] + t[:-1]) / 2  # [S]
        pts = origins[:, :, None] + dirs[:, :, None] * t[:, None]  # [N, R*R, S, 3]
        rgb, sigma = self.query_points(planes, pts.reshape(N, -1, 3))
        alpha = 1 - torch.exp(-sigma.reshape(N, R * R, S) * (3.0 / S))
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1]], -1), -1)
        weights = alpha * trans  # [N, R*R, S]
        acc = weights.sum(-1, keepdim=True)
        color = (weights[..., None] * rgb.reshape(N, R * R, S, 3)).sum(2) + (
            0 if foreground_only else 1 - acc
        )
        depth = (weights * t).sum(-1, keepdim=True) / acc.clamp_min(1e-6)
        to_img = lambda x: x.reshape(N, R, R, -1).permute(0, 3, 1, 2)  # noqa: E731  [N, C, R, R]
        return _Out(to_img(color), to_img(depth), to_img(acc))


class _Out(tuple):
    def __new__(cls, image, depth, opacity):
        return super().__new__(cls, (image, depth, opacity))

    image = property(lambda self: self[0])
    depth = property(lambda self: self[1])
    opacity = property(lambda self: self[2])


registry.register('test.SphereGenerator', SphereGenerator)  # snapshots store registered classes only


@pytest.fixture(scope='module')
def snapshot(tmp_path_factory):
    torch.manual_seed(0)
    G = SphereGenerator()
    path = tmp_path_factory.mktemp('snap') / 'sphere.pt'
    preset = dict(radius=CAM_RADIUS, fov=30.0, camera_prior='normal', camera_prior_kwargs=dict(yaw_std=0.3))
    options = dict(dataset=preset)
    checkpoint.save(
        path,
        dict(
            format_version=checkpoint.FORMAT_VERSION,
            modules={'G_ema': checkpoint.module_state(G)},
            training_options=options,
        ),
    )
    return path, G


def cli(*args):
    result = CliRunner().invoke(gen_samples.main, [str(a) for a in args])
    return result


def expected_color(G, seed):
    from export.utils import z_from_seed

    w = G.mapping(z_from_seed(seed, G.z_dim))[0, 0]
    return np.round((torch.tanh(w[:3]).detach().numpy() + 1) * 127.5)


def test_geometry_is_the_ball_with_colours_from_g(snapshot, tmp_path):
    path, G = snapshot
    res = cli(
        'geometry', '--network', path, '--seeds', '2', '--outdir', tmp_path, '--resolution', 40, '--no-render'
    )
    assert res.exit_code == 0, res.output
    mesh = trimesh.load(tmp_path / 'geometry-seed0002.ply', force='mesh', process=False)
    assert mesh.is_watertight and mesh.volume > 0
    voxel = 2.0 / 39
    assert abs(np.linalg.norm(mesh.vertices, axis=1).mean() - RADIUS) < voxel
    colors = np.asarray(mesh.visual.vertex_colors)[:, :3]
    np.testing.assert_allclose(colors, np.broadcast_to(expected_color(G, 2), colors.shape), atol=1)
    info = json.loads((tmp_path / 'geometry-seed0002.json').read_text())
    assert info['num_faces'] == len(mesh.faces) and 0 < info['threshold'] < 60


def test_depth_knows_the_distance_to_the_ball(snapshot, tmp_path):
    path, _ = snapshot
    res = cli('depth', '--network', path, '--seeds', '0', '--outdir', tmp_path, '--resolution', 16)
    assert res.exit_code == 0, res.output
    depth = np.load(tmp_path / 'depth-seed0000.npy')
    opacity = np.load(tmp_path / 'opacity-seed0000.npy')
    assert depth.shape == opacity.shape == (16, 16) and depth.dtype == np.float32
    assert opacity[7:9, 7:9].min() > 0.99 and opacity[0, 0] < 0.01  # ball in the middle, empty corner
    # the pixel next to the centre looks along a ray at angle a: it meets the ball at d cos a - sqrt(...)
    a = math.atan(math.tan(math.radians(15)) * (0.5 / 8) / 0.5)
    d = CAM_RADIUS * math.cos(a) - math.sqrt(RADIUS**2 - (CAM_RADIUS * math.sin(a)) ** 2)
    assert abs(depth[7, 7] - d) < 3.0 / 96
    assert Image.open(tmp_path / 'depth-seed0000.png').size == (16, 16)


def test_images_views_and_grid(snapshot, tmp_path):
    path, G = snapshot
    res = cli(
        'images',
        '--network',
        path,
        '--seeds',
        '0-1',
        '--camera',
        '0:90,90:90',
        '--outdir',
        tmp_path,
        '--resolution',
        12,
    )
    assert res.exit_code == 0, res.output
    for seed in (0, 1):
        for view in (0, 1):
            img = np.asarray(Image.open(tmp_path / f'images-seed{seed:04d}-view{view:02d}.png'))
            assert img.shape == (12, 12, 3)
            np.testing.assert_allclose(img[6, 6], expected_color(G, seed), atol=3)  # the ball's colour ...
            assert (img[0, 0] >= 254).all()  # ... on white
    assert Image.open(tmp_path / 'images-grid-seeds0_1.png').size == (24, 24)
    res = cli(
        'images',
        '--network',
        path,
        '--seeds',
        '3',
        '--outdir',
        tmp_path,
        '--foreground-only',
        '--camera',
        'random:2',
    )
    assert res.exit_code == 0, res.output
    rgba = np.asarray(Image.open(tmp_path / 'images-seed0003-view01.png'))
    assert rgba.shape == (16, 16, 4) and rgba[8, 8, 3] == 255 and rgba[0, 0, 3] == 0


def test_random_cameras_follow_the_seed(snapshot, tmp_path):
    path, _ = snapshot
    for k in range(2):
        assert (
            cli(
                'images',
                '--network',
                path,
                '--seeds',
                '4',
                '--outdir',
                tmp_path / str(k),
                '--camera',
                'random:3',
            ).exit_code
            == 0
        )
    for v in range(3):
        name = f'images-seed0004-view{v:02d}.png'
        assert (tmp_path / '0' / name).read_bytes() == (tmp_path / '1' / name).read_bytes()


def test_video_and_interp_frame_counts(snapshot, tmp_path):
    from export.utils import read_video

    path, G = snapshot
    res = cli(
        'video',
        '--network',
        path,
        '--seeds',
        '0-2',
        '--outdir',
        tmp_path,
        '--frames',
        5,
        '--resolution',
        8,
        '--trajectory',
        'wiggle',
    )
    assert res.exit_code == 0, res.output
    frames = read_video(str(tmp_path / 'video-wiggle-seeds0_1_2.mp4'))
    assert frames.shape == (5, 16, 16, 3)  # 2 x 2 grid of 8^2 tiles, one cell empty (white)
    assert frames[:, 12, 12].min() > 240
    res = cli(
        'interp',
        '--network',
        path,
        '--seeds',
        '0,1',
        '--outdir',
        tmp_path,
        '--frames-per-seed',
        4,
        '--resolution',
        16,
    )
    assert res.exit_code == 0, res.output
    frames = read_video(str(tmp_path / 'interp-seeds0_1.mp4')).astype(float)
    assert frames.shape == (5, 16, 16, 3)
    for k, f in ((0, 0), (4, 1)):  # the ends are the two seeds' colours
        np.testing.assert_allclose(
            frames[k, 6:10, 6:10].mean((0, 1)), expected_color(G, f), atol=12
        )  # yuv420p
    res = cli(
        'interp',
        '--network',
        path,
        '--seeds',
        '0,1,2',
        '--outdir',
        tmp_path,
        '--frames-per-seed',
        2,
        '--trajectory',
        'orbit',
        '--loop',
    )
    assert res.exit_code == 0, res.output
    assert read_video(str(tmp_path / 'interp-seeds0_1_2-orbit.mp4')).shape[0] == 6


def test_identical_seeds_give_identical_files(snapshot, tmp_path):
    path, _ = snapshot
    for k in range(2):
        for args in (
            ('images', '--seeds', '5,6'),
            ('video', '--seeds', '5', '--frames', 3),
            ('geometry', '--seeds', '5', '--resolution', 16, '--format', 'glb', '--no-render'),
        ):
            res = cli(*args, '--network', path, '--outdir', tmp_path / str(k))
            assert res.exit_code == 0, res.output
    names = sorted(p.name for p in (tmp_path / '0').iterdir())
    assert names == sorted(p.name for p in (tmp_path / '1').iterdir()) and len(names) == 6
    for name in names:
        assert (tmp_path / '0' / name).read_bytes() == (tmp_path / '1' / name).read_bytes(), name


@pytest.mark.parametrize(
    'args, message',
    [
        (('images', '--seeds', '3-1'), 'runs backwards'),
        (('images', '--camera', 'side'), 'YAW:PITCH'),
        (('images', '--resolution', 1), 'outside'),
        (('geometry', '--crop', '0,1,0,1'), 'crop box'),
        (('geometry', '--threshold', 1000, '--resolution', 16), 'isosurface at threshold 1000 is empty'),
        (('geometry', '--format', 'stl'), "'stl' is not one of"),
        (('interp', '--seeds', '3'), 'at least two seeds'),
        (('video', '--trajectory', 'spiral'), "'spiral' is not one of"),
        (
            ('images', '--device', 'cuda:7'),
            'CUDA is not available' if not torch.cuda.is_available() else 'device',
        ),
        (('images', '--device', 'toaster'), '--device toaster'),
    ],
)
def test_bad_options_give_one_line_errors(snapshot, tmp_path, args, message):
    path, _ = snapshot
    res = cli(*args, '--network', path, '--outdir', tmp_path)
    assert res.exit_code != 0 and message in res.output, res.output
    assert 'Traceback' not in res.output


def test_missing_or_corrupt_snapshot(snapshot, tmp_path):
    (tmp_path / 'bad.pt').write_bytes(b'PK\x03\x04 not really a zip')
    (tmp_path / 'empty.pt').write_bytes(b'')
    for name, message in (('nope.pt', 'does not exist'), ('bad.pt', 'corrupt'), ('empty.pt', 'empty')):
        res = cli('images', '--network', tmp_path / name, '--outdir', tmp_path / 'out')
        assert res.exit_code == 1 and message in res.output, res.output
        error_lines = [line for line in res.output.splitlines() if line.startswith('Error')]
        assert len(error_lines) == 1 and 'Traceback' not in res.output


def test_cameras_come_from_options_or_preset(snapshot, tmp_path):
    path, G = snapshot
    bare = tmp_path / 'bare.pt'
    checkpoint.save(
        bare, dict(format_version=checkpoint.FORMAT_VERSION, modules={'G_ema': checkpoint.module_state(G)})
    )
    res = cli('images', '--network', bare, '--outdir', tmp_path)
    assert res.exit_code == 1 and '--dataset-preset' in res.output
    res = cli(
        'images', '--network', bare, '--outdir', tmp_path, '--radius', 3.5, '--fov', 30, '--camera', 'random'
    )
    assert res.exit_code == 1 and 'records no camera prior' in res.output
    res = cli('images', '--network', bare, '--outdir', tmp_path, '--radius', 3.5, '--fov', 30)
    assert res.exit_code == 0, res.output
    res = cli('geometry', '--network', bare, '--outdir', tmp_path, '--resolution', 16, '--no-render')
    assert res.exit_code == 0, res.output  # meshes need no camera
    res = cli('images', '--network', bare, '--outdir', tmp_path, '--dataset-preset', 'demo')
    assert res.exit_code == 0, res.output
    res = cli('images', '--network', bare, '--outdir', tmp_path, '--dataset-preset', 'nosuch')
    assert res.exit_code == 1 and 'nosuch' in res.output and 'Traceback' not in res.output


def test_failed_mesh_render_keeps_the_mesh(snapshot, tmp_path, monkeypatch):
    from export import mesh_render

    monkeypatch.setattr(
        mesh_render, 'render_mesh_in_subprocess', lambda *a, **k: 'the mesh render exited with code -11'
    )
    path, _ = snapshot
    res = cli('geometry', '--network', path, '--outdir', tmp_path, '--resolution', 16)
    assert res.exit_code == 0 and 'no PNG render: the mesh render exited with code -11' in res.output, (
        res.output
    )
    assert (tmp_path / 'geometry-seed0000.ply').is_file() and not (
        tmp_path / 'geometry-seed0000.png'
    ).exists()


def test_snapshot_without_g_ema(snapshot, tmp_path):
    _, G = snapshot
    path = tmp_path / 'only-g.pt'
    checkpoint.save(
        path, dict(format_version=checkpoint.FORMAT_VERSION, modules={'G': checkpoint.module_state(G)})
    )
    res = cli('geometry', '--network', path, '--outdir', tmp_path)
    assert res.exit_code == 1 and 'has no network "G_ema"; it holds: G' in res.output, res.output


def test_no_cap_leaves_cut_surfaces_open(snapshot, tmp_path):
    path, _ = snapshot
    crop = '-1,1,-1,0,-1,1'  # the lower half of the ball: open at y = 0 unless capped
    for flag, watertight in (('--cap', True), ('--no-cap', False)):
        out = tmp_path / flag
        res = cli(
            'geometry',
            '--network',
            path,
            '--outdir',
            out,
            '--resolution',
            24,
            '--crop',
            crop,
            flag,
            '--no-render',
        )
        assert res.exit_code == 0, res.output
        mesh = trimesh.load(out / 'geometry-seed0000.ply', force='mesh', process=False)
        assert mesh.is_watertight == watertight and mesh.vertices[:, 1].max() <= 1e-6
