"""Offscreen PNG renders of meshes with pyvista (the paper's Figure 5 style: shaded grey geometry).

VTK draws through EGL (headless GPU or Mesa) unless VTK_DEFAULT_OPENGL_WINDOW says otherwise. A broken
OpenGL stack can crash VTK in native code, so `render_mesh_in_subprocess` runs the render in a child
process (`python -m export.mesh_render MESH PNG ...`): a crash there costs the picture, never the mesh.
"""

import argparse
import math
import os
import subprocess
import sys

import numpy as np

os.environ.setdefault('VTK_DEFAULT_OPENGL_WINDOW', 'vtkEGLRenderWindow')

GREY = (0.78, 0.78, 0.80)


def _camera_direction(yaw: float, pitch: float) -> np.ndarray:
    """Unit vector from the origin to a camera at (yaw, pitch): training/cameras.py's angles_to_position."""
    import torch

    from training.cameras import angles_to_position

    yaw, pitch, radius = (torch.tensor(float(x), dtype=torch.float64) for x in (yaw, pitch, 1.0))
    return angles_to_position(yaw, pitch, radius).numpy()


def render_mesh(
    mesh_path: str,
    png_path: str,
    resolution: int = 512,
    yaw: float = 0.5,
    pitch: float = math.pi / 2 - 0.25,
    use_colors: bool = False,
) -> None:
    """Render a mesh file to a square PNG; the camera looks at the mesh centre from (yaw, pitch), +y up."""
    import trimesh

    tm = trimesh.load(mesh_path, force='mesh', process=False)
    if len(tm.faces) == 0:
        raise ValueError(f'mesh "{mesh_path}" has no faces to render')
    import pyvista as pv  # after the cheap checks: importing VTK takes seconds

    faces = np.concatenate([np.full((len(tm.faces), 1), 3), tm.faces], axis=1).astype(np.int64)  # [F, 4]
    poly = pv.PolyData(np.asarray(tm.vertices, dtype=np.float32), faces.reshape(-1))
    plotter = pv.Plotter(off_screen=True, window_size=(resolution, resolution))
    try:
        plotter.set_background('white')
        colors = getattr(tm.visual, 'vertex_colors', None)
        if use_colors and colors is not None and len(colors) == len(tm.vertices):
            poly.point_data['rgb'] = np.asarray(colors)[:, :3].astype(np.uint8)
            plotter.add_mesh(poly, scalars='rgb', rgb=True, smooth_shading=True)
        else:
            plotter.add_mesh(poly, color=GREY, smooth_shading=True, specular=0.2)
        centre = np.asarray(poly.center)
        extent = float(np.linalg.norm(np.asarray(poly.bounds[1::2]) - np.asarray(poly.bounds[::2])))
        position = centre + _camera_direction(yaw, pitch) * max(extent, 1e-6) * 1.6
        plotter.camera_position = [tuple(position), tuple(centre), (0.0, 1.0, 0.0)]
        plotter.camera.view_angle = 30.0
        plotter.reset_camera_clipping_range()
        plotter.screenshot(png_path)
    finally:
        plotter.close()


def render_mesh_in_subprocess(mesh_path: str, png_path: str, timeout: float = 300, **kwargs) -> str | None:
    """`render_mesh` in a child process; returns None on success, else a one-line reason it failed."""
    cmd = [sys.executable, '-m', 'export.mesh_render', str(mesh_path), str(png_path)]
    for key, value in kwargs.items():
        if isinstance(value, bool):
            cmd += [f'--{key.replace("_", "-")}'] if value else []
        else:
            cmd += [f'--{key.replace("_", "-")}', str(value)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    )
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return f'the mesh render timed out after {timeout:.0f} s'
    if proc.returncode != 0 or not os.path.isfile(png_path):
        lines = [line for line in (proc.stderr or '').strip().splitlines() if line.strip()]
        return f'the mesh render exited with code {proc.returncode}: {lines[-1] if lines else "no message"}'
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description='Render a mesh file to a PNG offscreen.')
    parser.add_argument('mesh')
    parser.add_argument('png')
    parser.add_argument('--resolution', type=int, default=512)
    parser.add_argument('--yaw', type=float, default=0.5)
    parser.add_argument('--pitch', type=float, default=math.pi / 2 - 0.25)
    parser.add_argument('--use-colors', action='store_true')
    args = parser.parse_args(argv)
    render_mesh(args.mesh, args.png, args.resolution, args.yaw, args.pitch, args.use_colors)
    return 0


if __name__ == '__main__':
    sys.exit(main())
