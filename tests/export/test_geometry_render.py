"""pyvista offscreen renders, always in a child process so that a VTK crash cannot end the test run."""

import numpy as np
from PIL import Image
from test_geometry import sphere_density

from export import geometry, mesh_render


def red_green(points):
    """Colour in [-1, 1]: pure red everywhere (so a coloured render is far from grey)."""
    rgb = -points.new_ones(points.shape)
    rgb[..., 0] = 1.0
    return rgb


def render(path, png, **kwargs):
    error = mesh_render.render_mesh_in_subprocess(path, png, resolution=96, **kwargs)
    assert error is None, error
    return np.asarray(Image.open(png).convert('RGB')).astype(int)


def test_render_writes_a_png_of_the_mesh(tmp_path):
    bounds = geometry.cube_bounds(1.0)
    mesh, _ = geometry.extract_mesh(sphere_density, bounds, resolution=24, color_fn=red_green)
    geometry.write_mesh(tmp_path / 'm.ply', mesh)
    grey = render(tmp_path / 'm.ply', tmp_path / 'grey.png')
    assert grey.shape == (96, 96, 3)
    assert (grey[:3, :3] == 255).all()  # white background in the corner
    centre = grey[40:56, 40:56]
    assert (centre.sum(-1) < 3 * 250).all()  # the sphere covers the centre ...
    assert np.abs(centre - centre.mean(-1, keepdims=True)).max() < 12  # ... shaded grey
    red = render(tmp_path / 'm.ply', tmp_path / 'red.png', use_colors=True)[40:56, 40:56]
    assert (red[..., 0] > red[..., 1] + 40).all()  # vertex colours drive the coloured render


def test_render_failure_is_reported_not_raised(tmp_path):
    error = mesh_render.render_mesh_in_subprocess(tmp_path / 'missing.ply', tmp_path / 'x.png', resolution=32)
    assert error is not None and 'exited with code' in error


def test_mesh_camera_uses_the_training_angle_convention():
    import math

    import torch

    from training.cameras import angles_to_camera

    np.testing.assert_allclose(
        mesh_render._camera_direction(0.0, math.pi / 2), [0, 0, 1], atol=1e-12
    )  # front: +z
    for yaw, pitch in ((0.5, math.pi / 2 - 0.25), (-2.0, 0.3), (3.0, 2.8)):
        camera = angles_to_camera(yaw, pitch, 1.0, 30.0, dtype=torch.float64)
        np.testing.assert_allclose(
            mesh_render._camera_direction(yaw, pitch), camera.cam2world[0, :3, 3], atol=1e-12
        )
