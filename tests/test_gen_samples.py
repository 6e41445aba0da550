"""gen_samples.py on a tiny randomly initialised Generator snapshot (CPU): every subcommand writes files of
the right format and size, meshes load and carry G's colours, identical seeds give identical files."""

import numpy as np
import pytest
import torch
import trimesh
from click.testing import CliRunner
from PIL import Image
from shared_doubles import TINY_G

import gen_samples
from export import generate, geometry, utils
from torch_utils import checkpoint
from training.networks.generator import Generator

PRESET = dict(
    radius=1.0, fov=50.0, camera_prior='normal', camera_prior_kwargs=dict(yaw_std=0.3, pitch_std=0.2)
)


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    G = Generator(**TINY_G).eval()
    with torch.no_grad():  # random decoder weights of unit scale: the field gets visible structure
        for p in G.decoder.parameters():
            p.normal_()
    path = tmp_path_factory.mktemp('tiny') / 'network-snapshot-000000.pt'
    data = dict(modules={'G_ema': checkpoint.module_state(G)}, training_options=dict(dataset_preset=PRESET))
    checkpoint.save(path, dict(format_version=checkpoint.FORMAT_VERSION, **data))
    return path, G


def cli(*args):
    return CliRunner().invoke(gen_samples.main, [str(a) for a in args])


def ok(*args):
    res = cli(*args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res


def test_images_sizes_above_and_below_training_resolution(tiny, tmp_path):
    path, _ = tiny
    ok('images', '--network', path, '--seeds', '0-2', '--outdir', tmp_path, '--trunc', 0.7)
    for seed in range(3):
        assert Image.open(tmp_path / f'images-seed{seed:04d}.png').size == (16, 16)
    assert Image.open(tmp_path / 'images-grid-seeds0_1_2.png').size == (32, 32)  # 2 x 2, one cell empty
    ok(
        'images',
        '--network',
        path,
        '--seeds',
        '1',
        '--outdir',
        tmp_path / 'hi',
        '--resolution',
        24,
        '--camera',
        'random:2',
    )
    for v in range(2):
        assert Image.open(tmp_path / 'hi' / f'images-seed0001-view{v:02d}.png').size == (24, 24)
    ok(
        'images',
        '--network',
        path,
        '--seeds',
        '1',
        '--outdir',
        tmp_path / 'lo',
        '--resolution',
        8,
        '--foreground-only',
        '--samples-mult',
        2,
    )
    img = Image.open(tmp_path / 'lo' / 'images-seed0001.png')
    assert img.size == (8, 8) and img.mode == 'RGBA'


def test_images_match_a_direct_generator_call(tiny, tmp_path):
    path, G = tiny
    ok('images', '--network', path, '--seeds', '3', '--outdir', tmp_path, '--trunc', 0.5, '--trunc-cutoff', 2)
    z = utils.z_from_seed(3, G.z_dim)
    camera = generate.cameras_from_angles(generate.CameraSettings(1.0, 50.0), 0.0, np.pi / 2)
    with torch.no_grad():
        out = G(z, camera, truncation_psi=0.5, truncation_cutoff=2, noise_mode='const')
    expected = utils.to_uint8(out.image)[0]
    got = np.asarray(Image.open(tmp_path / 'images-seed0003.png'))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_video_frame_count_and_grid(tiny, tmp_path):
    path, _ = tiny
    ok('video', '--network', path, '--seeds', '0', '--outdir', tmp_path, '--frames', 4, '--fps', 8)
    assert utils.read_video(str(tmp_path / 'video-orbit-seed0000.mp4')).shape == (4, 16, 16, 3)
    ok(
        'video',
        '--network',
        path,
        '--seeds',
        '0-3',
        '--outdir',
        tmp_path,
        '--frames',
        3,
        '--resolution',
        8,
        '--trajectory',
        'line',
    )
    assert utils.read_video(str(tmp_path / 'video-line-seeds0_1_2_3.mp4')).shape == (3, 16, 16, 3)


def test_interp_frame_count(tiny, tmp_path):
    path, _ = tiny
    ok(
        'interp',
        '--network',
        path,
        '--seeds',
        '0,1,2',
        '--outdir',
        tmp_path,
        '--frames-per-seed',
        3,
        '--trajectory',
        'orbit',
    )
    assert utils.read_video(str(tmp_path / 'interp-seeds0_1_2-orbit.mp4')).shape == (7, 16, 16, 3)


def test_depth_files(tiny, tmp_path):
    path, _ = tiny
    ok('depth', '--network', path, '--seeds', '0', '--outdir', tmp_path, '--camera', '0:90,45:70')
    for v in range(2):
        for mode in ('depth', 'opacity'):
            raw = np.load(tmp_path / f'{mode}-seed0000-view{v:02d}.npy')
            assert raw.shape == (16, 16) and raw.dtype == np.float32 and np.isfinite(raw).all()
            assert Image.open(tmp_path / f'{mode}-seed0000-view{v:02d}.png').size == (16, 16)
        opacity = np.load(tmp_path / f'opacity-seed0000-view{v:02d}.npy')
        assert opacity.min() >= 0 and opacity.max() <= 1 + 1e-5


def test_geometry_mesh_loads_and_is_coloured_by_g(tiny, tmp_path):
    path, G = tiny
    for fmt in geometry.MESH_FORMATS:
        ok(
            'geometry',
            '--network',
            path,
            '--seeds',
            '0',
            '--outdir',
            tmp_path,
            '--resolution',
            24,
            '--format',
            fmt,
            '--no-render',
        )
        mesh = trimesh.load(tmp_path / f'geometry-seed0000.{fmt}', force='mesh', process=False)
        assert len(mesh.faces) > 0
        assert np.abs(mesh.vertices).max() <= G.scene_bounds + 1e-6
    # The colours are G's RGB at the vertices.
    ws = generate.seeds_to_ws(G, [0])
    planes = generate.synthesize(G, ws)
    verts = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32))[None]
    with torch.no_grad():
        rgb = G.query_points(planes, verts)[0][0]
    expected = ((rgb + 1) * 127.5).round().clamp(0, 255).numpy()
    np.testing.assert_allclose(np.asarray(mesh.visual.vertex_colors)[:, :3], expected, atol=1)


def test_geometry_render_and_identical_files_for_identical_seeds(tiny, tmp_path):
    path, _ = tiny
    for k in range(2):
        ok(
            'geometry',
            '--network',
            path,
            '--seeds',
            '1',
            '--outdir',
            tmp_path / str(k),
            '--resolution',
            16,
            '--render-resolution',
            64,
        )
        ok('depth', '--network', path, '--seeds', '1', '--outdir', tmp_path / str(k))
    assert Image.open(tmp_path / '0' / 'geometry-seed0001.png').size == (64, 64)
    names = sorted(p.name for p in (tmp_path / '0').iterdir())
    assert len(names) == 3 + 4
    for name in names:
        if name.endswith('.png') and name.startswith('geometry'):
            continue  # an OpenGL render: pixel-identical is up to the driver
        assert (tmp_path / '0' / name).read_bytes() == (tmp_path / '1' / name).read_bytes(), name


def test_foreground_rgba_is_straight_colour():
    from export import commands
    from training.rendering import RenderOutput

    colour = torch.tensor([0.5, -0.5, 0.0])[None, :, None, None].expand(1, 3, 2, 2)  # [1, 3, 2, 2]
    alpha = torch.tensor([[1.0, 0.5], [0.25, 0.0]])[None, None]  # [1, 1, 2, 2]
    image = alpha * colour + (1 - alpha) * 1.0  # composited over white, as the renderer does
    out = RenderOutput(image, torch.zeros_like(alpha), alpha)
    rgba = commands._frame(out, 0, True, background=1.0)
    assert rgba.shape == (2, 2, 4)
    np.testing.assert_array_equal(rgba[..., 3], [[255, 128], [64, 0]])
    for y, x in ((0, 0), (0, 1), (1, 0)):
        np.testing.assert_allclose(rgba[y, x, :3], [191, 64, 128], atol=1)
    assert generate.background_value(Generator(**TINY_G)) == 1.0  # the default white background
