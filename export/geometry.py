"""Shape extraction: density on an N^3 grid in bounded memory, a threshold, marching cubes, coloured meshes.

Everything here works against two callables, so it serves a trained generator and an analytic field alike:
- `density_fn(points [1, P, 3]) -> sigma [1, P, 1]` (world coordinates, non-negative volume density);
- `color_fn(points [1, P, 3]) -> rgb [1, P, 3]` in [-1, 1] (optional; colours the mesh vertices).

Grid convention: `volume[i, j, k]` holds the density at world point (xs[i], ys[j], zs[k]), where each axis
is `linspace(lo, hi, resolution)` over the box `bounds = ((x0, x1), (y0, y1), (z0, z1))`; one voxel is
`(hi - lo) / (resolution - 1)`. Mesh vertices come back in world coordinates, faces wound so that their
normals point out of the dense region (towards lower density).
"""

import math
import time
from typing import NamedTuple

import numpy as np
import torch
import tqdm

from export.utils import to_uint8
from torch_utils import misc

MC_METHODS = ('flying_edges', 'skimage')
DEFAULT_MC_METHOD = (
    'flying_edges'  # measured faster than scikit-image at 256^3 (see scripts/bench_cases/export.py)
)
MESH_FORMATS = ('ply', 'obj', 'glb')


class EmptyIsosurfaceError(ValueError):
    """The chosen threshold does not cross the sampled density anywhere."""


class Mesh(NamedTuple):
    vertices: np.ndarray  # [V, 3] float32 world coordinates
    faces: np.ndarray  # [F, 3] int64 vertex indices, outward winding
    colors: np.ndarray | None = None  # [V, 3] uint8 RGB, or None


# ----------------------------------------------------------------------------
# Sampling the density grid.


def cube_bounds(half_size: float) -> tuple:
    """The box [-h, h]^3 as ((x0, x1), (y0, y1), (z0, z1))."""
    h = float(half_size)
    return ((-h, h), (-h, h), (-h, h))


def parse_crop(text: str) -> tuple:
    """'x0,x1,y0,y1,z0,z1' -> ((x0, x1), (y0, y1), (z0, z1)); raises ValueError with the reason."""
    try:
        values = [float(v) for v in text.split(',')]
    except ValueError:
        raise ValueError(f'crop box "{text}" must be six numbers x0,x1,y0,y1,z0,z1') from None
    if len(values) != 6:
        raise ValueError(f'crop box "{text}" has {len(values)} numbers; expected six: x0,x1,y0,y1,z0,z1')
    bounds = tuple((values[2 * a], values[2 * a + 1]) for a in range(3))
    for axis, (lo, hi) in zip('xyz', bounds):
        if not lo < hi:
            raise ValueError(f'crop box "{text}": {axis}0 = {lo} must be below {axis}1 = {hi}')
    return bounds


def voxel_size(bounds: tuple, resolution: int) -> np.ndarray:
    """Spacing between neighbouring samples along each axis. [3]"""
    return np.array([(hi - lo) / (resolution - 1) for lo, hi in bounds], dtype=np.float64)


def sample_density_grid(
    density_fn,
    bounds: tuple,
    resolution: int = 256,
    chunk_size: int = 1 << 18,
    device='cpu',
    progress: bool = False,
) -> np.ndarray:
    """Density at every point of a resolution^3 grid over `bounds`. [R, R, R] float32 (x, y, z order)

    Peak memory beyond the float32 result is one chunk of `chunk_size` points (coordinates and outputs):
    grid coordinates are computed per chunk from flat indices, never for the whole grid at once. The
    result is the interior view of an [R + 2]^3 buffer whose one-voxel border `marching_cubes` fills to
    cap cut surfaces, so closing the mesh needs no second N^3 copy.
    """
    if resolution < 2:
        raise ValueError(f'grid resolution must be at least 2, got {resolution}')
    R, Rp = resolution, resolution + 2
    lo = torch.tensor([b[0] for b in bounds], dtype=torch.float64, device=device)
    step = torch.tensor(voxel_size(bounds, R), dtype=torch.float64, device=device)
    buffer = np.full((Rp, Rp, Rp), np.nan, dtype=np.float32)
    flat = buffer.reshape(-1)  # a view: writes land in the buffer
    starts = range(0, R**3, chunk_size)
    for start in tqdm.tqdm(starts, desc=f'density {R}^3', unit='chunk', disable=not progress, leave=False):
        idx = torch.arange(start, min(start + chunk_size, R**3), device=device)
        ijk = torch.stack([idx // (R * R), (idx // R) % R, idx % R], dim=-1)  # [P, 3] C order: k fastest
        points = (lo + ijk.to(torch.float64) * step).to(torch.float32)[None]  # [1, P, 3]
        with torch.no_grad():
            sigma = density_fn(points)
        misc.assert_shape(sigma, [1, points.shape[1], 1])
        dest = ((ijk[:, 0] + 1) * Rp + ijk[:, 1] + 1) * Rp + ijk[:, 2] + 1  # [P] flat index in the buffer
        flat[dest.cpu().numpy()] = sigma.reshape(-1).float().cpu().numpy()
    return buffer[1:-1, 1:-1, 1:-1]  # [x, y, z]


def _subsample(volume: np.ndarray, max_samples: int) -> np.ndarray:
    """A strided subsample of at most ~max_samples voxels, without copying the volume. [M]"""
    stride = max(1, math.ceil((volume.size / max_samples) ** (1 / 3)))
    return volume[::stride, ::stride, ::stride].reshape(-1)


# ----------------------------------------------------------------------------
# Threshold.


def density_stats(volume: np.ndarray, max_samples: int = 1 << 21) -> dict:
    """Summary of a density volume for logs and error messages (percentiles on a strided subsample)."""
    p = np.percentile(_subsample(volume, max_samples), [1, 50, 99])
    return dict(
        min=float(volume.min()),
        max=float(volume.max()),
        mean=float(volume.mean(dtype=np.float64)),
        p1=float(p[0]),
        median=float(p[1]),
        p99=float(p[2]),
    )


def auto_threshold(
    volume: np.ndarray, max_samples: int = 1 << 21, bins: int = 512, clip_pct: float = 99.9
) -> float:
    """The default iso-level: Otsu's split of the density histogram.

    A radiance field's density is bimodal: near zero in empty space, large inside matter. Otsu's method
    picks the level that maximises the between-class variance of the histogram, i.e. the split that best
    separates "empty" from "occupied" voxels; on a field that jumps from 0 to S it lands at S / 2, where
    the surface is. Values above the `clip_pct` percentile are clipped first, so a few density spikes
    cannot stretch the histogram. It adapts to each model's density scale, which a fixed constant cannot.
    Raises EmptyIsosurfaceError on a constant volume, which has no surface at any level.
    """
    sub = _subsample(volume, max_samples).astype(np.float64)
    if not np.isfinite(sub).all():
        raise ValueError('the density volume holds NaN or infinite values; the generator output is broken')
    lo, hi = float(volume.min()), float(volume.max())
    if not hi > lo:
        raise EmptyIsosurfaceError(
            f'the density is constant ({lo:.4g}) over the whole box: there is no surface'
        )
    top = np.percentile(sub, clip_pct)
    top = top if top > lo else hi  # a small occupied fraction lies above the percentile: keep it
    hist, edges = np.histogram(np.clip(sub, lo, top), bins=bins, range=(lo, top))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)  # weight of the class at or below each split
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2  # Otsu: between-class variance per split
    split = int(np.argmax(between[:-1]))
    return float(edges[split + 1])


def check_isosurface(volume: np.ndarray, threshold: float) -> None:
    """Raise EmptyIsosurfaceError, with a suggested threshold, when `threshold` crosses no voxel pair."""
    lo, hi = float(volume.min()), float(volume.max())
    if lo < threshold < hi:
        return
    s = density_stats(volume)
    side = 'above' if threshold >= hi else 'below'  # below: every voxel is occupied, only the box remains
    try:
        suggestion = f'; try --threshold {auto_threshold(volume):.4g} (the automatic choice)'
    except EmptyIsosurfaceError:
        suggestion = '; the density is constant, so no threshold gives a surface'
    raise EmptyIsosurfaceError(
        f'the isosurface at threshold {threshold:.4g} is empty: the threshold is {side} every sampled density '
        f'(min {lo:.4g}, median {s["median"]:.4g}, max {hi:.4g}){suggestion}'
    )


# ----------------------------------------------------------------------------
# Marching cubes.


def _bordered_base(volume: np.ndarray) -> np.ndarray | None:
    """The [R + 2]^3 buffer that `volume` is the interior view of (sample_density_grid's result), or None."""
    base = volume.base
    if not isinstance(base, np.ndarray) or base.shape != tuple(n + 2 for n in volume.shape):
        return None
    if not base.flags.c_contiguous or base.dtype != np.float32:
        return None
    interior = base[1:-1, 1:-1, 1:-1]
    same = interior.ctypes.data == volume.ctypes.data and interior.strides == volume.strides
    return base if same else None


def _pad_closed(volume: np.ndarray, threshold: float) -> np.ndarray:
    """The volume surrounded by one layer below the threshold, so surfaces cut by the box are capped.

    Fills the border of sample_density_grid's buffer in place when it has one; copies otherwise.
    """
    fill = min(float(volume.min()), threshold) - 1.0
    out = _bordered_base(volume)
    if out is None:
        out = np.empty([n + 2 for n in volume.shape], dtype=np.float32)
        out[1:-1, 1:-1, 1:-1] = volume
    for axis in range(3):  # the six faces of the border
        index = [slice(None)] * 3
        for side in (0, -1):
            index[axis] = side
            out[tuple(index)] = fill
    return out


def _mc_skimage(volume: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    import skimage.measure

    verts, faces, _normals, _values = skimage.measure.marching_cubes(
        volume, level=threshold, gradient_direction='descent', allow_degenerate=False
    )
    return verts, faces[:, ::-1]  # 'descent' winds normals inwards in trimesh's sense; flip them outwards


def _mc_flying_edges(volume: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D

    image = vtkImageData()
    # VTK runs x fastest; our C-ordered volume[x, y, z] runs z fastest. Hand VTK the memory as it is, as a
    # volume of dims (z, y, x), and swap the coordinates back below: no transposing copy of N^3 floats.
    image.SetDimensions(*volume.shape[::-1])
    flat = np.ascontiguousarray(volume, dtype=np.float32).reshape(-1)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(flat, deep=False))
    fe = vtkFlyingEdges3D()
    fe.SetInputData(image)
    fe.SetValue(0, threshold)
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOff()
    fe.Update()
    out = fe.GetOutput()
    if out.GetNumberOfPoints() == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    verts = numpy_support.vtk_to_numpy(out.GetPoints().GetData())[:, ::-1].astype(
        np.float64
    )  # (z,y,x) -> (x,y,z)
    faces = numpy_support.vtk_to_numpy(out.GetPolys().GetConnectivityArray()).reshape(-1, 3)
    return verts, faces[
        :, ::-1
    ]  # the axis swap mirrors the mesh: reverse the winding to keep normals outward


def marching_cubes(
    volume: np.ndarray,
    threshold: float,
    bounds: tuple,
    method: str = DEFAULT_MC_METHOD,
    close: bool = True,
) -> Mesh:
    """Triangle mesh of the surface {density = threshold} in world coordinates (uncoloured).

    close: cap surfaces cut by the box faces (the caps lie on the box), so the mesh is watertight.
    """
    if method not in MC_METHODS:
        raise ValueError(f'unknown marching-cubes method "{method}"; choose one of {", ".join(MC_METHODS)}')
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise ValueError(f'expected a [R, R, R] density volume, got shape {list(volume.shape)}')
    check_isosurface(volume, threshold)
    padded = _pad_closed(volume, threshold) if close else volume
    verts, faces = (_mc_flying_edges if method == 'flying_edges' else _mc_skimage)(padded, threshold)
    R = volume.shape[0]
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    verts = lo + (verts - (1 if close else 0)) * voxel_size(bounds, R)  # index space -> world
    verts = np.clip(verts, lo, hi)  # caps sit half a voxel outside the box before clipping
    return Mesh(verts.astype(np.float32), np.ascontiguousarray(faces, dtype=np.int64))


# ----------------------------------------------------------------------------
# Colours, files.


def vertex_colors(color_fn, vertices: np.ndarray, chunk_size: int = 1 << 16, device='cpu') -> np.ndarray:
    """uint8 RGB per vertex from `color_fn` (values in [-1, 1]), queried in chunks. [V, 3]"""
    colors = np.zeros((len(vertices), 3), dtype=np.uint8)
    for start in range(0, len(vertices), chunk_size):
        points = torch.from_numpy(vertices[start : start + chunk_size]).to(device, torch.float32)[None]
        with torch.no_grad():
            rgb = color_fn(points)  # [1, P, 3]
        misc.assert_shape(rgb, [1, points.shape[1], 3])
        as_image = rgb.permute(0, 2, 1)[..., None]  # [1, P, 3] -> [1, 3, P, 1]: one column of pixels
        colors[start : start + points.shape[1]] = to_uint8(as_image).reshape(-1, 3)  # [1, P, 1, 3] -> [P, 3]
    return colors


def to_trimesh(mesh: Mesh):
    import trimesh

    colors = None
    if mesh.colors is not None:
        colors = np.concatenate([mesh.colors, np.full((len(mesh.colors), 1), 255, np.uint8)], axis=1)
    return trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colors, process=False)


def write_mesh(path: str, mesh: Mesh) -> None:
    """Write .ply, .obj or .glb (chosen by the extension), keeping vertex colours."""
    ext = str(path).rsplit('.', 1)[-1].lower()
    if ext not in MESH_FORMATS:
        raise ValueError(f'mesh file "{path}" must end in one of .{", .".join(MESH_FORMATS)}')
    to_trimesh(mesh).export(str(path), file_type=ext)


def extract_mesh(
    density_fn,
    bounds: tuple,
    resolution: int = 256,
    threshold: float | None = None,
    color_fn=None,
    method: str = DEFAULT_MC_METHOD,
    chunk_size: int = 1 << 18,
    device='cpu',
    progress: bool = False,
    close: bool = True,
) -> tuple[Mesh, dict]:
    """Grid -> threshold (automatic when None) -> marching cubes -> vertex colours; also timings and stats.

    close: cap surfaces cut by the box so the mesh is watertight (see `marching_cubes`).
    """
    t0 = time.perf_counter()
    volume = sample_density_grid(density_fn, bounds, resolution, chunk_size, device, progress)
    t1 = time.perf_counter()
    level = auto_threshold(volume) if threshold is None else float(threshold)
    mesh = marching_cubes(volume, level, bounds, method, close)
    t2 = time.perf_counter()
    if color_fn is not None and len(mesh.vertices):
        mesh = mesh._replace(colors=vertex_colors(color_fn, mesh.vertices, device=device))
    t3 = time.perf_counter()
    info = dict(
        density_stats(volume), threshold=level, num_vertices=len(mesh.vertices), num_faces=len(mesh.faces)
    )
    info.update(density_s=t1 - t0, marching_cubes_s=t2 - t1, colors_s=t3 - t2)
    return mesh, info
