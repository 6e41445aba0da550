"""Geometry extraction against analytic density fields: grid sampling, threshold, marching cubes, files."""

import numpy as np
import pytest
import torch
import trimesh

from export import geometry

RADIUS = 0.5


def sphere_density(points, centre=(0.0, 0.0, 0.0), radius=RADIUS, scale=40.0, width=0.005):
    """A solid ball: density `scale` inside, ~0 outside, a smooth step of `width` at the surface."""
    r = (points - points.new_tensor(centre)).norm(dim=-1, keepdim=True)
    return scale * torch.sigmoid((radius - r) / width)


def ellipsoid_density(points, radii=(0.3, 0.5, 0.7)):
    r = (points / points.new_tensor(radii)).norm(dim=-1, keepdim=True)
    return 30.0 * torch.sigmoid((1 - r) / 0.01)


def naive_grid(fn, bounds, R):
    xs, ys, zs = (torch.linspace(lo, hi, R, dtype=torch.float64) for lo, hi in bounds)
    pts = torch.stack(torch.meshgrid(xs, ys, zs, indexing='ij'), dim=-1).float()  # [R, R, R, 3]
    return fn(pts.reshape(1, -1, 3)).reshape(R, R, R).numpy()


def test_chunked_grid_matches_naive_and_bounds_memory():
    bounds = ((-1.0, 1.0), (-0.5, 0.7), (0.0, 1.0))
    calls = []

    def fn(points):
        calls.append(points.shape[1])
        return (points * points.new_tensor([1.0, 10.0, 100.0])).sum(-1, keepdim=True)  # encodes the axes

    vol = geometry.sample_density_grid(fn, bounds, resolution=9, chunk_size=100)
    assert max(calls) <= 100 and sum(calls) == 9**3
    np.testing.assert_allclose(vol, naive_grid(fn, bounds, 9), rtol=1e-6, atol=1e-5)
    assert vol[8, 0, 0] == pytest.approx(1.0 - 5.0 + 0.0, abs=1e-5)  # volume[i, j, k] is (x_i, y_j, z_k)


@pytest.mark.parametrize('method', geometry.MC_METHODS)
def test_sphere_is_watertight_at_radius_within_one_voxel(method):
    R = 48
    bounds = geometry.cube_bounds(1.0)
    mesh, info = geometry.extract_mesh(sphere_density, bounds, resolution=R, method=method)
    voxel = geometry.voxel_size(bounds, R)[0]
    tm = geometry.to_trimesh(mesh)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume > 0  # outward normals
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(radii.mean() - RADIUS) < voxel
    assert 0.1 * 40 < info['threshold'] < 0.9 * 40  # the automatic level lies between the two modes


def test_axes_and_world_coordinates_are_not_mixed_up():
    bounds = geometry.cube_bounds(1.0)
    for method in geometry.MC_METHODS:
        mesh, _ = geometry.extract_mesh(ellipsoid_density, bounds, resolution=40, method=method)
        extent = mesh.vertices.max(0)
        np.testing.assert_allclose(extent, [0.3, 0.5, 0.7], atol=2 / 39)
    off = (0.2, -0.1, 0.15)
    mesh, _ = geometry.extract_mesh(lambda p: sphere_density(p, off, 0.3), bounds, resolution=40)
    np.testing.assert_allclose(mesh.vertices.mean(0), off, atol=0.01)


def test_both_methods_give_the_same_surface():
    vol = naive_grid(sphere_density, geometry.cube_bounds(1.0), 24)
    a = geometry.marching_cubes(vol, 20.0, geometry.cube_bounds(1.0), 'skimage')
    b = geometry.marching_cubes(vol, 20.0, geometry.cube_bounds(1.0), 'flying_edges')
    assert len(a.vertices) == len(b.vertices) and len(a.faces) == len(b.faces)
    key = lambda v: v[np.lexsort(np.round(v, 4).T)]  # noqa: E731
    np.testing.assert_allclose(key(a.vertices), key(b.vertices), atol=1e-4)
    assert geometry.to_trimesh(a).volume == pytest.approx(geometry.to_trimesh(b).volume, rel=1e-5)


def test_crop_box_caps_the_cut_surface():
    bounds = geometry.parse_crop('-1,1,-1,0,-1,1')  # lower half: a hemisphere, closed by a cap at y = 0
    mesh, _ = geometry.extract_mesh(sphere_density, bounds, resolution=33)
    tm = geometry.to_trimesh(mesh)
    assert tm.is_watertight and mesh.vertices[:, 1].max() <= 0.0
    assert tm.volume == pytest.approx(2 / 3 * np.pi * RADIUS**3, rel=0.03)


@pytest.mark.parametrize('text', ['1,2,3', 'a,b,c,d,e,f', '0,1,0,1,1,0'])
def test_bad_crop_box_is_rejected(text):
    with pytest.raises(ValueError, match='crop box'):
        geometry.parse_crop(text)


def test_auto_threshold_on_known_fields():
    vol = np.zeros((10, 10, 10), np.float32)
    vol[3:7, 3:7, 3:7] = 8.0
    assert 0 < geometry.auto_threshold(vol) < 8.0
    with pytest.raises(geometry.EmptyIsosurfaceError, match='constant'):
        geometry.auto_threshold(np.full((4, 4, 4), 2.0, np.float32))


@pytest.mark.parametrize('threshold', [100.0, -1.0])
def test_empty_isosurface_suggests_a_threshold(threshold):
    vol = naive_grid(sphere_density, geometry.cube_bounds(1.0), 16)
    with pytest.raises(geometry.EmptyIsosurfaceError, match=r'empty.*try --threshold \d'):
        geometry.marching_cubes(vol, threshold, geometry.cube_bounds(1.0))


def test_vertex_colors_come_from_the_color_function(tmp_path):
    def color(points):  # a position-coded colour in [-1, 1]
        return points.clamp(-1, 1)

    mesh, _ = geometry.extract_mesh(sphere_density, geometry.cube_bounds(1.0), resolution=24, color_fn=color)
    expected = np.round((np.clip(mesh.vertices, -1, 1) + 1) * 127.5).astype(np.uint8)
    np.testing.assert_array_equal(mesh.colors, expected)
    for fmt in geometry.MESH_FORMATS:
        path = tmp_path / f'mesh.{fmt}'
        geometry.write_mesh(path, mesh)
        tm = trimesh.load(path, force='mesh', process=False)
        assert len(tm.faces) == len(mesh.faces) and tm.is_watertight
        np.testing.assert_array_equal(np.asarray(tm.visual.vertex_colors)[:, :3], mesh.colors)
    with pytest.raises(ValueError, match='must end in'):
        geometry.write_mesh(tmp_path / 'mesh.stl', mesh)


def test_closing_reuses_the_grid_buffer_and_copies_other_arrays():
    bounds = geometry.cube_bounds(1.0)
    vol = geometry.sample_density_grid(sphere_density, bounds, 12)
    padded = geometry._pad_closed(vol, 20.0)
    assert padded is vol.base and padded.shape == (14, 14, 14)  # no second N^3 array
    assert np.isfinite(padded).all() and padded[0].max() < min(vol.min(), 20.0)
    np.testing.assert_array_equal(padded[1:-1, 1:-1, 1:-1], vol)
    plain = np.ascontiguousarray(vol)
    copy = geometry._pad_closed(plain, 20.0)
    assert copy is not plain.base and np.array_equal(copy, padded)
    sub = vol[1:, 1:, 1:]  # a view of the buffer, but not its interior: must not be mistaken for one
    assert geometry._pad_closed(sub, 20.0).shape == (13, 13, 13) and geometry._bordered_base(sub) is None


def test_vertex_colors_quantise_like_saved_images_in_any_chunking():
    from export.utils import to_uint8

    vertices = np.random.RandomState(0).uniform(-1.2, 1.2, (50, 3)).astype(np.float32)
    vertices[:3] = [[-1, 0, 1], [1, 1, 1], [-1, -1, -1]]  # the ends and the middle of the range

    def color(points):
        return points.clamp(-1, 1)

    colors = geometry.vertex_colors(color, vertices, chunk_size=7)
    as_image = torch.from_numpy(np.clip(vertices, -1, 1)).T[None, :, :, None]  # [1, 3, V, 1]
    np.testing.assert_array_equal(colors, to_uint8(as_image).reshape(-1, 3))
    np.testing.assert_array_equal(colors[0], [0, 128, 255])
