"""Megascans-quality renders with Blender (paper App. D.1): the same protocol and labels as
`dataset_tool.py render`, with Blender's path tracer and the meshes' own materials.

    blender -b -P scripts/blender_render.py -- --mesh plant.glb --dest out/plant --views 128 --resolution 1024

Writes `out/plant/<mesh stem>/<view>.png` (RGBA, transparent film) and `out/plant/dataset.json`
(25-float labels, docs/conventions.md); then `dataset_tool.py convert --source out/plant --dest
plants.zip --resolution 256` makes the training zip. Needs Blender >= 3.6 (bundled Python + numpy);
it cannot run in this repository's tests, which check its pure-numpy camera code instead
(tests/scripts/test_render.py::test_blender_cameras_match_ours).

Frames: our world is +y up, Blender's is +z up; BLENDER_FROM_OURS rotates ours into Blender's
(our front camera on +z lands on Blender's -y, its "front" view). Blender cameras look down their
local -z with +y up (OpenGL axes), so matrix_world = BLENDER_FROM_OURS @ cam2world @ diag(1, -1, -1, 1).
"""

import argparse
import json
import math
import os
import sys

import numpy as np

RADIUS, FOV_DEG = 3.5, 45.0  # paper App. D.1
BLENDER_FROM_OURS = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def sphere_cameras(num_views: int, radius=RADIUS, fov_deg=FOV_DEG, seed=0):
    """Uniform-on-sphere look-at cameras in our conventions: (cam2world [N, 4, 4], intrinsics [N, 3, 3])."""
    rng = np.random.default_rng(seed)
    yaw = rng.uniform(-math.pi, math.pi, num_views)
    pitch = np.arccos(rng.uniform(-1, 1, num_views))
    pos = radius * np.stack([np.sin(pitch) * np.sin(yaw), np.cos(pitch), np.sin(pitch) * np.cos(yaw)], 1)
    forward = -pos / np.linalg.norm(pos, axis=1, keepdims=True)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.maximum(np.linalg.norm(right, axis=1, keepdims=True), 1e-12)
    down = np.cross(forward, right)
    cam2world = np.tile(np.eye(4), (num_views, 1, 1))
    cam2world[:, :3, 0], cam2world[:, :3, 1], cam2world[:, :3, 2], cam2world[:, :3, 3] = (
        right,
        down,
        forward,
        pos,
    )
    f = 0.5 / math.tan(math.radians(fov_deg) / 2)
    intrinsics = np.tile(np.array([[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]]), (num_views, 1, 1))
    return cam2world, intrinsics


def blender_matrix_world(cam2world: np.ndarray) -> np.ndarray:
    """Our OpenCV cam2world [4, 4] -> the Blender camera object's matrix_world."""
    return BLENDER_FROM_OURS @ cam2world @ OPENCV_TO_OPENGL


def import_mesh(bpy, path: str) -> list:
    ext = os.path.splitext(path)[1].lower()
    before = set(bpy.data.objects)
    if ext in ('.glb', '.gltf'):
        bpy.ops.import_scene.gltf(filepath=path)
    elif ext == '.fbx':
        bpy.ops.import_scene.fbx(filepath=path)
    elif ext == '.obj':
        bpy.ops.wm.obj_import(filepath=path)
    elif ext == '.ply':
        bpy.ops.wm.ply_import(filepath=path)
    else:
        raise SystemExit(f'{path}: unsupported mesh format {ext}; use .glb/.gltf/.fbx/.obj/.ply')
    return [o for o in bpy.data.objects if o not in before and o.type == 'MESH']


def normalize_objects(objects) -> None:
    """Scale and move the imported objects together so their bounding box fits [-1, 1]^3, centred."""
    from mathutils import Matrix, Vector

    corners = [o.matrix_world @ Vector(c) for o in objects for c in o.bound_box]
    lo = Vector([min(c[i] for c in corners) for i in range(3)])
    hi = Vector([max(c[i] for c in corners) for i in range(3)])
    scale = 2.0 / max(hi - lo)
    T = Matrix.Scale(scale, 4) @ Matrix.Translation(-(lo + hi) / 2)
    for o in objects:
        if o.parent is None or o.parent not in objects:
            o.matrix_world = T @ o.matrix_world


def setup_scene(bpy, resolution: int, samples: int):
    scene = bpy.context.scene
    scene.render.engine = 'CYCLES'
    scene.cycles.samples = samples
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.film_transparent = True  # RGBA: the dataset composites onto white
    scene.render.image_settings.file_format = 'PNG'
    scene.render.image_settings.color_mode = 'RGBA'
    world = bpy.data.worlds.new('pgrf_world')  # uniform white environment light, hidden by the film
    world.use_nodes = True
    world.node_tree.nodes['Background'].inputs['Color'].default_value = (1.0, 1.0, 1.0, 1.0)
    world.node_tree.nodes['Background'].inputs['Strength'].default_value = 1.0
    scene.world = world
    cam_data = bpy.data.cameras.new('pgrf_camera')
    cam_data.sensor_fit = 'VERTICAL'
    cam_data.angle = math.radians(FOV_DEG)
    cam = bpy.data.objects.new('pgrf_camera', cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    return scene, cam


def main(argv):
    import bpy  # only inside Blender
    from mathutils import Matrix

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--mesh', required=True, nargs='+')
    parser.add_argument('--dest', required=True)
    parser.add_argument('--views', type=int, default=128)
    parser.add_argument('--resolution', type=int, default=1024)
    parser.add_argument('--samples', type=int, default=128, help='Cycles samples per pixel')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene, cam = setup_scene(bpy, args.resolution, args.samples)
    labels = []
    for m, path in enumerate(args.mesh):
        objects = import_mesh(bpy, path)
        normalize_objects(objects)
        stem = os.path.splitext(os.path.basename(path))[0]
        cam2world, intrinsics = sphere_cameras(args.views, seed=args.seed * 100003 + m)
        for i in range(args.views):
            cam.matrix_world = Matrix(blender_matrix_world(cam2world[i]).tolist())
            name = f'{stem}/{i:04d}.png'
            scene.render.filepath = os.path.join(os.path.abspath(args.dest), name)
            bpy.ops.render.render(write_still=True)
            labels.append([name, cam2world[i].reshape(-1).tolist() + intrinsics[i].reshape(-1).tolist()])
        for o in objects:
            bpy.data.objects.remove(o, do_unlink=True)
    with open(os.path.join(args.dest, 'dataset.json'), 'w') as f:
        json.dump({'labels': labels}, f)


if __name__ == '__main__':
    main(sys.argv[sys.argv.index('--') + 1 :] if '--' in sys.argv else [])
