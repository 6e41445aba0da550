"""The labels of `dataset.json`: camera labels ("labels") and optional class labels ("classes").

Camera labels (`{"labels": [[name, label], ...]}` or `{"labels": {name: label}}`), both read natively and
stored internally as the 25-float form (docs/conventions.md):
- 'eg3d': 25 floats, the row-major OpenCV cam2world 4x4 then the row-major normalized intrinsics 3x3;
- 'angles': 5 floats (yaw, pitch, roll, radius, fov), angles and fov in degrees, yaw/pitch as in
  training/cameras.py (yaw 0 = front, +z; pitch = polar angle from +y, 90 = equator), a look-at camera
  at the origin; roll turns the camera about its viewing axis (positive: the image content turns
  counter-clockwise on screen).
Class labels, for class-conditional training (`--cond`): `"classes": [[name, k], ...]` or `{name: k}`, an
integer k in 0..K-1 for every image, and optionally `"class_names": [str, ...]` (then K = its length, else
K = max k + 1).
Every bad input raises `DatasetError` with one line: what is wrong, in which file, how to fix it.
"""

import json

import numpy as np
import torch

from training import cameras

LABEL_LENGTHS = {25: 'eg3d', 5: 'angles'}
RIGID_TOL = 5e-3  # max |R^T R - I| and |det R - 1| accepted for a cam2world rotation


class DatasetError(Exception):
    """A problem with the user's data or dataset options; the message is one line with the fix."""


# ----------------------------------------------------------------------------
# Labels.


def angles_to_label(angles: np.ndarray) -> np.ndarray:
    """Angles-form labels [N, 5] (yaw, pitch, roll in degrees, radius, fov in degrees) -> 25-float labels [N, 25]."""
    angles = torch.as_tensor(np.asarray(angles, dtype=np.float64))
    yaw, pitch, roll, radius, fov = (angles[:, i] for i in range(5))
    cam = cameras.angles_to_camera(torch.deg2rad(yaw), torch.deg2rad(pitch), radius, fov, dtype=torch.float64)
    c, s = torch.cos(torch.deg2rad(roll)), torch.sin(torch.deg2rad(roll))
    roll_mat = torch.eye(4, dtype=torch.float64).repeat(len(angles), 1, 1)  # rotation about camera z
    roll_mat[:, 0, 0], roll_mat[:, 0, 1], roll_mat[:, 1, 0], roll_mat[:, 1, 1] = c, -s, s, c
    cam2world = cam.cam2world @ roll_mat
    intrinsics = cameras.fov_to_intrinsics(fov, len(angles), dtype=torch.float64)
    return cameras.Camera(cam2world, intrinsics).to_label().numpy()


def check_labels(labels: np.ndarray, names: list[str], source: str) -> None:
    """Raise DatasetError unless every 25-float label is finite, rigid and has sane normalized intrinsics."""
    bad = ~np.isfinite(labels).all(axis=1)
    if bad.any():
        raise DatasetError(
            f'{source}: label of {names[np.argmax(bad)]!r} contains NaN/inf; fix or drop that entry'
        )
    M = labels[:, :16].reshape(-1, 4, 4).astype(np.float64)
    R = M[:, :3, :3]
    ortho = np.abs(np.einsum('nji,njk->nik', R, R) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bottom = np.abs(M[:, 3] - np.array([0, 0, 0, 1])).max(axis=1)
    bad = (ortho > RIGID_TOL) | (np.abs(det - 1) > RIGID_TOL) | (bottom > 1e-6)
    if bad.any():
        i = int(np.argmax(bad))
        raise DatasetError(
            f'{source}: cam2world of {names[i]!r} is not rigid (|R^T R - I| = {ortho[i]:.3g}, det = {det[i]:.3g}, '
            f'last row {M[i, 3].tolist()}); labels need a rotation + translation (no scale or reflection)'
        )
    K = labels[:, 16:].reshape(-1, 3, 3)
    bad = (K[:, 0, 0] <= 0) | (K[:, 1, 1] <= 0) | (np.abs(K[:, 2] - np.array([0, 0, 1])).max(axis=1) > 1e-6)
    pixels = np.abs(K[:, :2, 2]).max(axis=1) > 2
    if bad.any() or pixels.any():
        i = int(np.argmax(bad | pixels))
        hint = (
            'divide fx, fy, cx, cy by the image width/height'
            if pixels[i]
            else 'need fx, fy > 0 and last row 0 0 1'
        )
        raise DatasetError(
            f'{source}: intrinsics of {names[i]!r} are not normalized ({K[i].tolist()}); {hint}'
        )


def parse_labels(raw, source: str, names: list[str]) -> tuple[np.ndarray, str]:
    """dataset.json (bytes, or its parsed JSON) -> 25-float labels float32 [len(names), 25] in `names` order and the format name."""
    data = load_json(raw, source) if isinstance(raw, (bytes, str)) else raw
    entries = data.get('labels') if isinstance(data, dict) else None
    if isinstance(entries, list):
        try:
            entries = {str(name): label for name, label in entries}
        except (TypeError, ValueError):
            raise DatasetError(f'{source}: "labels" must be a list of [image name, label] pairs') from None
    if not isinstance(entries, dict):
        raise DatasetError(
            f'{source}: expected {{"labels": [[name, [floats]], ...]}}; see docs/conventions.md'
        )
    entries = {name.replace('\\', '/'): label for name, label in entries.items()}
    missing = [n for n in names if n not in entries]
    if missing:
        raise DatasetError(
            f'{source}: no label for {len(missing)} image(s), e.g. {missing[0]!r}; add them or remove those images'
        )
    try:
        rows = [np.asarray(entries[n], dtype=np.float64).reshape(-1) for n in names]
    except (TypeError, ValueError):
        raise DatasetError(f'{source}: every label must be a list of numbers') from None
    lengths = {len(r) for r in rows}
    if len(lengths) != 1 or next(iter(lengths)) not in LABEL_LENGTHS:
        i = next(i for i, r in enumerate(rows) if len(r) not in LABEL_LENGTHS or len(r) != len(rows[0]))
        raise DatasetError(
            f'{source}: label of {names[i]!r} has {len(rows[i])} numbers; all labels need 25 (cam2world 4x4 + '
            f'intrinsics 3x3) or all 5 (yaw, pitch, roll, radius, fov)'
        )
    labels = np.stack(rows) if rows else np.zeros([0, len(rows[0]) if rows else 25])
    fmt = LABEL_LENGTHS[labels.shape[1]]
    if fmt == 'angles':
        bad = (
            ~np.isfinite(labels).all(axis=1)
            | (labels[:, 3] <= 0)
            | (labels[:, 4] <= 0)
            | (labels[:, 4] >= 180)
        )
        if bad.any():
            raise DatasetError(
                f'{source}: angles label of {names[np.argmax(bad)]!r} is invalid (NaN/inf, radius <= 0 or fov '
                f'outside (0, 180) degrees)'
            )
        labels = angles_to_label(labels)
    check_labels(labels, names, source)
    return labels.astype(np.float32), fmt


def load_json(raw, source: str):
    """The parsed content of dataset.json (bytes or text)."""
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(
            f'{source}: not valid JSON ({e}); fix the file or regenerate it with dataset_tool.py'
        ) from None


def _class_entries(entries, source: str) -> dict:
    """The "classes" entry as a list of [name, k] pairs or a {name: k} mapping -> {name: k} with '/' separators."""
    if isinstance(entries, list):
        try:
            entries = {str(name): k for name, k in entries}
        except (TypeError, ValueError):
            raise DatasetError(
                f'{source}: "classes" must be a list of [image name, class index] pairs'
            ) from None
    if not isinstance(entries, dict):
        raise DatasetError(f'{source}: "classes" must be [[name, index], ...] or {{name: index}}')
    return {str(name).replace('\\', '/'): k for name, k in entries.items()}


def _class_names(names, source: str) -> list[str] | None:
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise DatasetError(f'{source}: "class_names" must be a non-empty list of strings')
    if len(set(names)) != len(names):
        raise DatasetError(f'{source}: "class_names" has duplicates; give each class a distinct name')
    return names


def parse_classes(data, source: str, names: list[str]) -> tuple[np.ndarray | None, list[str]]:
    """The parsed dataset.json -> (class index int64 [len(names)] in `names` order, class names), or
    (None, []) when it has no "classes". Without "class_names" the classes are named '0', '1', ..."""
    if not isinstance(data, dict) or 'classes' not in data:
        if isinstance(data, dict) and 'class_names' in data:
            raise DatasetError(f'{source}: "class_names" without "classes"; add the class of every image')
        return None, []
    entries = _class_entries(data['classes'], source)
    class_names = _class_names(data.get('class_names'), source)
    missing = [n for n in names if n not in entries]
    if missing:
        raise DatasetError(
            f'{source}: no class for {len(missing)} image(s), e.g. {missing[0]!r}; add them to "classes"'
        )
    for name in names:
        k = entries[name]
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise DatasetError(f'{source}: class of {name!r} is {k!r}; class indices must be integers >= 0')
        if class_names is not None and k >= len(class_names):
            raise DatasetError(
                f'{source}: class of {name!r} is {k} but "class_names" names only {len(class_names)} '
                f'classes (0..{len(class_names) - 1}); fix the index or add the name'
            )
    classes = np.array([entries[n] for n in names], dtype=np.int64)
    num_classes = len(class_names) if class_names is not None else int(classes.max(initial=-1)) + 1
    return classes, class_names or [str(k) for k in range(num_classes)]
