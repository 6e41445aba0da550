"""Multi-view mesh rendering with pyvista/VTK offscreen: RGBA images and exact 25-float camera labels.

The Megascans protocol of the paper (App. D.1): each mesh is scaled into [-1, 1]^3, cameras lie
uniformly on a sphere of radius 3.5 (below the object included) and look at the origin, fov 45 deg.
The VTK camera is set from our OpenCV cam2world so that it is exactly our pinhole model:
position = camera centre, focal point = centre + forward (column 2), view-up = -down (minus
column 1), view angle = the vertical fov. tests/scripts/test_render.py checks the projection of a box.

Offscreen rendering uses EGL (`VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow`, set here unless the
user set another window class); on machines without EGL, OSMesa builds of VTK
(`vtkOSOpenGLRenderWindow`) or `xvfb-run` with the default window work too.
"""

import json
import os
import sys

os.environ.setdefault('VTK_DEFAULT_OPENGL_WINDOW', 'vtkEGLRenderWindow')

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import cameras  # noqa: E402

MEGASCANS_RADIUS = 3.5  # paper App. D.1
MEGASCANS_FOV = 45.0  # paper App. D.1: pi / 4
# Fixed world-space lights (so shading does not follow the camera: G has no view dependence).
LIGHTS = [((4.0, 6.0, 5.0), 0.75), ((-5.0, 2.0, -4.0), 0.45), ((0.0, -6.0, 1.0), 0.3)]


class RenderError(Exception):
    """A mesh that cannot be read or rendered; one line naming the file and the fix."""


def load_mesh(path: str):
    """Any mesh file pyvista or trimesh can read -> a triangulated pyvista PolyData surface."""
    import pyvista as pv

    try:
        mesh = pv.read(path)
    except Exception:
        try:
            import trimesh

            tm = trimesh.load(path, force='mesh')
            mesh = pv.wrap(tm)
        except Exception as e:
            raise RenderError(
                f'{path}: cannot read the mesh ({type(e).__name__}); use .ply/.obj/.stl/.glb/.vtk'
            ) from None
    mesh = mesh.extract_surface(algorithm='dataset_surface').triangulate()
    if mesh.n_points == 0 or mesh.n_cells == 0:
        raise RenderError(f'{path}: the mesh has no surface triangles; check the file')
    return mesh


def normalize_mesh(mesh):
    """A triangulated PolyData `mesh` -> its geometry with the bounding box centred at the origin and scaled
    uniformly to fit [-1, 1]^3 (largest side = 2)."""
    points = np.asarray(mesh.points, dtype=np.float64)
    lo, hi = points.min(0), points.max(0)
    half = (hi - lo).max() / 2
    if not half > 0:
        raise RenderError('the mesh is a single point; nothing to render')
    import pyvista as pv

    # Geometry only (point arrays such as float64 texture coordinates break the PLY writer).
    return pv.PolyData(((points - (lo + hi) / 2) / half).astype(np.float32), mesh.faces)


def sphere_cameras(
    num_views: int, radius=MEGASCANS_RADIUS, fov=MEGASCANS_FOV, seed=0, **band
) -> cameras.Camera:
    """Cameras uniform on the whole sphere (or the band `band`: the uniform_sphere prior's yaw/pitch
    kwargs), looking at the origin (float64)."""
    prior = cameras.make_camera_prior('uniform_sphere', radius=radius, fov=fov, **band)
    yaw, pitch = prior.sample_angles(num_views, torch.Generator().manual_seed(seed))
    return cameras.angles_to_camera(yaw, pitch, radius, fov, dtype=torch.float64)


def vtk_camera_params(cam2world: np.ndarray, intrinsics: np.ndarray) -> dict:
    """VTK camera settings equal to one OpenCV pinhole camera (centred principal point, square pixels)."""
    K = np.asarray(intrinsics, dtype=np.float64)
    if abs(K[0, 2] - 0.5) > 1e-6 or abs(K[1, 2] - 0.5) > 1e-6 or abs(K[0, 0] - K[1, 1]) > 1e-6 * K[1, 1]:
        raise RenderError('the renderer needs a centred principal point and fx = fy (square pixels)')
    M = np.asarray(cam2world, dtype=np.float64)
    return dict(
        position=tuple(M[:3, 3]),
        focal_point=tuple(M[:3, 3] + M[:3, 2]),  # one unit along the viewing direction
        view_up=tuple(-M[:3, 1]),  # OpenCV y points down the image
        view_angle=float(np.degrees(2 * np.arctan(0.5 / K[1, 1]))),  # vertical fov
    )


class MeshRenderer:
    """One offscreen window reused for every view; `render` returns RGBA uint8 [R, R, 4] (straight alpha)."""

    def __init__(self, resolution: int, supersample: int = 2):
        import pyvista as pv

        self.resolution, self.supersample = resolution, supersample
        size = resolution * supersample
        self.plotter = pv.Plotter(off_screen=True, window_size=(size, size), lighting='none')
        for position, intensity in LIGHTS:
            light = pv.Light(
                position=position, focal_point=(0, 0, 0), intensity=intensity, light_type='scene light'
            )
            self.plotter.add_light(light)
        self.plotter.camera_set = True  # never let pyvista reset our camera
        self._actor = None

    def set_mesh(self, mesh, rgb=None, color=(0.8, 0.8, 0.8)):
        """Show `mesh` with per-point colours `rgb` [P, 3] uint8 (or one `color`), Lambertian, no specular."""
        if self._actor is not None:
            self.plotter.remove_actor(self._actor)
        kwargs = dict(ambient=0.3, diffuse=0.8, specular=0.0, smooth_shading=True)
        if rgb is not None:
            mesh = mesh.copy()
            mesh.point_data['rgb'] = np.asarray(rgb, dtype=np.uint8)
            self._actor = self.plotter.add_mesh(mesh, scalars='rgb', rgb=True, **kwargs)
        else:
            self._actor = self.plotter.add_mesh(mesh, color=color, **kwargs)

    def render(self, cam2world: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
        params = vtk_camera_params(cam2world, intrinsics)
        camera = self.plotter.camera
        camera.position, camera.focal_point, camera.up = (
            params['position'],
            params['focal_point'],
            params['view_up'],
        )
        camera.view_angle = params['view_angle']
        self.plotter.renderer.ResetCameraClippingRange()
        self.plotter.render()  # required after moving the camera, before the screenshot
        rgba = np.asarray(
            self.plotter.screenshot(transparent_background=True, return_img=True), dtype=np.float32
        )
        return downsample_rgba(rgba, self.supersample)

    def close(self):
        self.plotter.close()


def downsample_rgba(rgba: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter [H, W, 4] by `factor` on premultiplied colour (antialiased edges), back to straight uint8."""
    if factor > 1:
        H, W, _ = rgba.shape
        premul = np.concatenate([rgba[..., :3] * rgba[..., 3:] / 255, rgba[..., 3:]], axis=-1)
        premul = premul.reshape(H // factor, factor, W // factor, factor, 4).mean(
            axis=(1, 3)
        )  # [h, f, w, f, 4]
        alpha = premul[..., 3:]
        colour = np.where(alpha > 0, premul[..., :3] * 255 / np.maximum(alpha, 1e-8), 0)
        rgba = np.concatenate([colour, alpha], axis=-1)
    return np.clip(np.rint(rgba), 0, 255).astype(np.uint8)


def encode_png(rgba: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    PIL.Image.fromarray(rgba, 'RGBA').save(buf, format='PNG', compress_level=1)
    return buf.getvalue()


def dataset_json(entries: list[tuple[str, list[float]]], classes=None, class_names=None) -> bytes:
    """dataset.json: 25-float camera labels, and optionally class indices [(name, int)] and their names."""
    data = {'labels': [[name, [float(x) for x in label]] for name, label in entries]}
    if classes is not None:
        data['classes'] = [[name, int(k)] for name, k in classes]
    if class_names is not None:
        data['class_names'] = list(class_names)
    return json.dumps(data).encode()


def render_views(
    renderer: MeshRenderer, cam: cameras.Camera, prefix: str
) -> list[tuple[str, bytes, list[float]]]:
    """Render every camera of `cam`: [(name, png bytes, 25-float label)]."""
    labels = cam.to_label().double().numpy()
    out = []
    for i in range(cam.batch_size):
        rgba = renderer.render(labels[i, :16].reshape(4, 4), labels[i, 16:].reshape(3, 3))
        out.append((f'{prefix}{i:04d}.png', encode_png(rgba), labels[i].tolist()))
    return out
