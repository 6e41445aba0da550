"""Generator-free export helpers: option parsing, grids, colour maps, PNG and mp4 round trips."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from export import utils as eu


def test_parse_seeds():
    assert eu.parse_seeds('0-3,7') == [0, 1, 2, 3, 7]
    assert eu.parse_seeds(' 5 ') == [5]
    for bad, match in (
        ('3-1', 'backwards'),
        ('a', 'not a seed'),
        ('-2', 'not a seed'),
        ('1,,2', 'not a seed'),
    ):
        with pytest.raises(ValueError, match=match):
            eu.parse_seeds(bad)


def test_parse_angles():
    assert eu.parse_angles('0:90, -30:45') == [(0.0, math.pi / 2), (-math.pi / 6, math.pi / 4)]
    with pytest.raises(ValueError, match='YAW:PITCH'):
        eu.parse_angles('front')
    with pytest.raises(ValueError, match='outside'):
        eu.parse_angles('0:200')


def test_z_from_seed_is_the_numpy_convention():
    z = eu.z_from_seed(3, 8)
    assert z.shape == (1, 8) and z.dtype == torch.float32
    np.testing.assert_array_equal(z[0].numpy(), np.random.RandomState(3).randn(8).astype(np.float32))
    assert not torch.equal(z, eu.z_from_seed(4, 8))


def test_to_uint8_and_grid():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).reshape(1, 1, 1, 4).expand(3, 3, 1, 4)  # [N, C, H, W]
    u = eu.to_uint8(x)
    assert u.shape == (3, 1, 4, 3) and u.dtype == np.uint8
    np.testing.assert_array_equal(u[0, 0, :, 0], [0, 128, 255, 255])
    tiles = np.stack([np.full((2, 3, 3), i, np.uint8) for i in range(5)])
    grid = eu.image_grid(tiles)  # 3 columns, 2 rows, one empty cell
    assert grid.shape == (4, 9, 3)
    assert grid[0, 3, 0] == 1 and grid[2, 3, 0] == 4 and grid[2, 6, 0] == 255
    assert eu.image_grid(tiles, cols=5).shape == (2, 15, 3)


def test_colorize_depth_orders_near_to_bright():
    depth = np.linspace(1.0, 2.0, 16).reshape(4, 4)
    opacity = np.ones((4, 4))
    opacity[0, 0] = 0.0
    img = eu.colorize_depth(depth, opacity)
    assert img.shape == (4, 4, 3) and (img[0, 0] == 255).all()  # transparent pixel is white
    brightness = img.astype(int).sum(-1).reshape(-1)[1:]
    assert (np.diff(brightness) <= 1).all() and brightness[0] > brightness[-1] + 200  # nearer is brighter
    np.testing.assert_array_equal(eu.colorize(np.array([0.0, 1.0]), 0, 1), [[68, 1, 84], [253, 231, 37]])
    grey = eu.colorize_opacity(np.array([[0.0, 1.0]]))
    np.testing.assert_array_equal(grey[0, :, 0], [255, 0])


def test_png_round_trip_rgb_and_rgba(tmp_path):
    for C in (3, 4):
        img = np.random.RandomState(0).randint(0, 256, (5, 7, C)).astype(np.uint8)
        eu.save_png(tmp_path / f'x{C}.png', img)
        back = Image.open(tmp_path / f'x{C}.png')
        assert back.mode == ('RGBA' if C == 4 else 'RGB')
        np.testing.assert_array_equal(np.asarray(back), img)


def test_video_round_trip_and_determinism(tmp_path):
    frames = [np.full((9, 12, 3), 20 * t, np.uint8) for t in range(6)]  # odd height: padded to even
    blobs = []
    for k in range(2):
        path = tmp_path / f'v{k}.mp4'
        with eu.VideoWriter(str(path), fps=12) as w:
            for f in frames:
                w.append(f)
        blobs.append(path.read_bytes())
        back = eu.read_video(str(path))
        assert back.shape == (6, 10, 12, 3)
        np.testing.assert_allclose(back[:, :9, :, 0].mean((1, 2)), [20 * t for t in range(6)], atol=3)
    assert blobs[0] == blobs[1]


def test_out_name():
    assert eu.out_name('images', 7) == 'images-seed0007.png'
    assert eu.out_name('depth', 12, 3, 'npy') == 'depth-seed0012-view03.npy'
