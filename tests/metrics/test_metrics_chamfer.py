"""The chamfer metric end to end: closest sample -> marching cubes (export/geometry.py) -> Chamfer to the source."""

import json
import math
import os

import pytest
import torch
import trimesh
from PIL import Image
from test_metrics_pipeline import SphereGenerator

from metrics import geometry_eval, metric_main
from metrics import metric_utils as mu
from training.cameras import angles_to_camera, camera_to_angles, intrinsics_to_fov_deg

PRIOR = dict(kind='uniform_sphere', radius=2.5, fov=30.0)  # the run's framing: that of _mesh_dataset's labels


class SphereDensityGenerator(SphereGenerator):
    """The analytic sphere generator with a density field: a ball of radius 0.6 (ws are the latents)."""

    def mapping(self, z, truncation_psi=1, truncation_cutoff=None):
        return z[:, None]

    def density(self, ws, points):
        return 50 * torch.sigmoid(40 * (0.6 - points.norm(dim=-1, keepdim=True)))

    def density_field(self, ws):
        return lambda points: self.density(ws, points)


def _mesh_dataset(root, source_mesh, views=3, res=32):
    """<root>/meta.json + meshes/ + data/<object>/<view>.png with labels, as the demo dataset lays them out."""
    os.makedirs(os.path.join(root, 'meshes'))
    source_mesh.export(os.path.join(root, 'meshes', 'shape.ply'))
    cams = angles_to_camera(torch.linspace(-0.4, 0.4, views), math.pi / 2, 2.5, 30)
    G = SphereGenerator()
    images = mu.to_uint8(G(torch.zeros(views, 3), cams, resolution=res, noise_mode='const').image)
    labels = []
    os.makedirs(os.path.join(root, 'data', 'shape_c0'))
    for i in range(views):
        name = f'shape_c0/{i:03d}.png'
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(os.path.join(root, 'data', name))
        labels.append([name, cams.select(i).to_label()[0].tolist()])
    with open(os.path.join(root, 'data', 'dataset.json'), 'w') as f:
        json.dump({'labels': labels}, f)
    with open(os.path.join(root, 'meta.json'), 'w') as f:
        json.dump({'objects': [{'name': 'shape_c0', 'mesh': 'meshes/shape.ply'}]}, f)
    return dict(class_name='training.dataset.ImageFolderDataset', path=os.path.join(root, 'data'))


def _opts(data, G=None):
    G = G or SphereDensityGenerator()
    return mu.MetricOptions(G=G, dataset_kwargs=data, camera_prior_kwargs=PRIOR, device='cpu', data_workers=0)


def _chamfer(tmp_path, source_mesh):
    data = _mesh_dataset(str(tmp_path), source_mesh)
    opts = _opts(data)
    return geometry_eval.chamfer_to_source_meshes(
        opts, num_candidates=4, views=2, grid_resolution=32, num_points=3000
    )


def test_chamfer_small_for_the_right_shape_and_large_for_another(tmp_path):
    sphere = _chamfer(
        tmp_path / 'a', trimesh.creation.icosphere(subdivisions=3, radius=1.7)
    )  # scale is normalized
    box = _chamfer(tmp_path / 'b', trimesh.creation.box(extents=(1.0, 1.0, 1.0)))
    # Two independent 3000-point samples of one unit-box-normalized sphere are 0.032 apart (sampling floor).
    assert sphere['chamfer'] < 0.04 and box['chamfer'] > 2 * sphere['chamfer']
    assert metric_main.is_valid_metric('chamfer')


def test_chamfer_needs_source_meshes(tmp_path):
    data = _mesh_dataset(str(tmp_path), trimesh.creation.icosphere())
    os.remove(tmp_path / 'meta.json')
    opts = _opts(data)
    with pytest.raises(ValueError, match='rendered from known meshes'):
        geometry_eval.chamfer_to_source_meshes(opts)


class ConstantDensityGenerator(SphereDensityGenerator):
    def density(self, ws, points):
        return torch.ones_like(points[..., :1])


def test_chamfer_counts_samples_without_a_surface(tmp_path):
    data = _mesh_dataset(str(tmp_path), trimesh.creation.icosphere())
    opts = _opts(data, ConstantDensityGenerator())
    result = geometry_eval.chamfer_to_source_meshes(opts, num_candidates=2, views=1, grid_resolution=8)
    assert result['chamfer_failed'] == 1 and math.isnan(result['chamfer'])


def test_closest_sample_renders_at_the_run_radius_and_fov(tmp_path):
    """The labels say radius 2.5, fov 30; a run framed at radius 1.7, fov 20 must be compared as it renders."""
    data = _mesh_dataset(str(tmp_path), trimesh.creation.icosphere())
    seen = []

    class Recording(SphereDensityGenerator):
        def forward(self, z, camera, **kwargs):
            seen.append(camera)
            return super().forward(z, camera, **kwargs)

    prior = dict(kind='uniform_sphere', radius=1.7, fov=20.0)
    opts = mu.MetricOptions(G=Recording(), dataset_kwargs=data, camera_prior_kwargs=prior, device='cpu')
    dataset = mu.get_dataset(opts)
    geometry_eval.closest_sample(opts, dataset, [0, 1, 2], mu.fake_latents(opts, [0, 1], 3), views=3)
    assert len(seen) == 2
    yaw, pitch, radius = camera_to_angles(seen[0].cam2world)
    label_yaw, label_pitch, _ = camera_to_angles(dataset.cameras().cam2world[:3])
    assert torch.allclose(radius, torch.full([3], 1.7)) and torch.allclose(yaw, label_yaw, atol=1e-5)
    assert torch.allclose(pitch, label_pitch, atol=1e-5)
    assert torch.allclose(intrinsics_to_fov_deg(seen[0].intrinsics), torch.full([3], 20.0))
