"""The VTK renderer is our pinhole camera: a box rendered with our labels covers exactly the pixels its
projected corners say. Rendering runs in a subprocess so a VTK/EGL crash cannot take the suite down."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import torch

from training import cameras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def test_rendered_box_matches_projected_corners(tmp_path):
    yaw = torch.tensor([0.0, 0.9, -2.3, 2.8])
    pitch = torch.tensor([1.5707963, 0.5, 2.6, 1.9])  # front, above, below, behind
    cam = cameras.angles_to_camera(yaw, pitch, 3.5, 45.0, dtype=torch.float64)
    np.save(tmp_path / 'labels.npy', cam.to_label().numpy())
    run_python(f"""
        import numpy as np, pyvista as pv, sys
        sys.path.insert(0, 'scripts')
        import render_multiview as rm
        labels = np.load({str(tmp_path / 'labels.npy')!r})
        r = rm.MeshRenderer(64, supersample=1)
        box = np.array({BOX.tolist()})
        r.set_mesh(pv.Box(bounds=(box[0, 0], box[1, 0], box[0, 1], box[1, 1], box[0, 2], box[1, 2])).triangulate())
        np.save({str(tmp_path / 'alpha.npy')!r}, np.stack([r.render(l[:16].reshape(4, 4), l[16:].reshape(3, 3))[..., 3] for l in labels]))
    """)
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
