"""The dataset tool's building blocks (pure functions, tested in tests/scripts/test_dataset_tool.py):
image crop/pad/resize with the matching intrinsics update, nerfstudio pose conversion, pose statistics
and the pose-distribution plot."""

import glob
import io
import json
import os
import sys

import numpy as np
import PIL.Image
import PIL.ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training.dataset import (  # noqa: E402
    IMAGE_EXTENSIONS,
    DatasetError,
    decode_image,
    load_json,
    parse_classes,
    parse_labels,
)

OPENGL_TO_OPENCV = np.diag(
    [1.0, -1.0, -1.0, 1.0]
)  # camera axes: (x right, y up, z back) -> (x, y down, z fwd)

# ----------------------------------------------------------------------------
# Reading a source: folder, zip or glob -> (names, bytes reader, dataset.json bytes or None).


def open_source(source: str):
    """(image names, read(name) -> bytes, raw dataset.json or None, description) of a folder, zip or glob."""
    if any(c in source for c in '*?['):
        files = sorted(f for f in glob.glob(source, recursive=True) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            raise DatasetError(f'{source}: the pattern matches no images; quote it and check the path')
        root = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
        names = [os.path.relpath(os.path.abspath(f), root).replace(os.sep, '/') for f in files]
    elif os.path.isdir(source):
        root = source
        names = sorted(
            os.path.relpath(os.path.join(d, f), root).replace(os.sep, '/')
            for d, _, fs in os.walk(root)
            for f in fs
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
    else:
        from training.dataset import _Source

        src = _Source(source)
        json_raw = src.read('dataset.json') if 'dataset.json' in src.all_names else None
        return src.image_names, src.read, json_raw, source
    json_path = os.path.join(root, 'dataset.json')
    json_raw = open(json_path, 'rb').read() if os.path.isfile(json_path) else None

    def read(name):
        with open(os.path.join(root, name), 'rb') as f:
            return f.read()

    return names, read, json_raw, json_path


# ----------------------------------------------------------------------------
# Images and intrinsics.


def square_box(width: int, height: int, crop: str | None, where: str) -> tuple[int, int, int]:
    """(x0, y0, size) of the square taken from a width x height image: 'center' crops, 'pad' pads
    (negative offsets), None requires a square image."""
    if width == height:
        return 0, 0, width
    if crop == 'center':
        size = min(width, height)
        return (width - size) // 2, (height - size) // 2, size
    if crop == 'pad':
        size = max(width, height)
        return (width - size) // 2, (height - size) // 2, size
    raise DatasetError(f'{where}: image is {width}x{height}, not square; pass --crop center or --crop pad')


def crop_intrinsics(K: np.ndarray, width: int, height: int, box: tuple[int, int, int]) -> np.ndarray:
    """Normalized intrinsics [N, 3, 3] of a width x height image -> those of the square `box` (x0, y0, size).
    Resizing the square afterwards leaves normalized intrinsics unchanged."""
    x0, y0, size = box
    K = np.array(K, dtype=np.float64)
    out = K.copy()
    out[:, 0, 0] = K[:, 0, 0] * width / size
    out[:, 1, 1] = K[:, 1, 1] * height / size
    out[:, 0, 2] = (K[:, 0, 2] * width - x0) / size
    out[:, 1, 2] = (K[:, 1, 2] * height - y0) / size
    return out


def square_image(img: PIL.Image.Image, box, resolution: int | None, background) -> PIL.Image.Image:
    """Crop/pad `img` (RGB or RGBA) to `box` and resize with an antialiasing Lanczos filter (premultiplied)."""
    x0, y0, size = box
    fill = (0, 0, 0, 0) if img.mode == 'RGBA' else tuple(background)
    out = PIL.Image.new(img.mode, (size, size), fill)
    out.paste(img, (-x0, -y0))
    if resolution is not None and resolution != size:
        if out.mode == 'RGBA':
            out = out.convert('RGBa').resize((resolution, resolution), PIL.Image.LANCZOS).convert('RGBA')
        else:
            out = out.resize((resolution, resolution), PIL.Image.LANCZOS)
    return out


def load_for_convert(data: bytes, where: str, channels: str, background) -> PIL.Image.Image:
    """Decode to RGB (alpha composited on `background`) or RGBA (grey/RGB get opaque alpha)."""
    if channels == 'rgb':
        return PIL.Image.fromarray(decode_image(data, where, background))
    decode_image(data, where, background)  # same checks and error messages
    return PIL.Image.open(io.BytesIO(data)).convert('RGBA')


# ----------------------------------------------------------------------------
# nerfstudio transforms.json -> our labels.


def nerfstudio_frames(transforms: dict, where: str):
    """[(file_path, cam2world OpenGL [4, 4], normalized K [3, 3], (w, h))] of a nerfstudio transforms.json."""
    frames = transforms.get('frames') if isinstance(transforms, dict) else None
    if not frames:
        raise DatasetError(f'{where}: no "frames" list; is this a nerfstudio transforms.json?')
    out = []
    for i, fr in enumerate(frames):
        get = lambda k, fr=fr: fr.get(k, transforms.get(k))  # noqa: E731 (per-frame values override global ones)
        try:
            w, h = float(get('w')), float(get('h'))
            fx, fy = float(get('fl_x')), float(get('fl_y') if get('fl_y') is not None else get('fl_x'))
            cx = float(get('cx')) if get('cx') is not None else w / 2
            cy = float(get('cy')) if get('cy') is not None else h / 2
            M = np.asarray(fr['transform_matrix'], dtype=np.float64).reshape(4, 4)
            path = str(fr['file_path'])
        except (TypeError, KeyError, ValueError):
            raise DatasetError(
                f'{where}: frame {i} lacks file_path, transform_matrix (4x4), fl_x, w or h; fix the file'
            ) from None
        K = np.array([[fx / w, 0, cx / w], [0, fy / h, cy / h], [0, 0, 1]])
        out.append((path, M, K, (int(w), int(h))))
    return out


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The rotation [3, 3] taking unit vector a onto unit vector b (Rodrigues)."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-9:  # opposite: turn by pi about any axis orthogonal to a
        axis = np.cross(a, [1.0, 0, 0]) if abs(a[0]) < 0.9 else np.cross(a, [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def look_at_centre(cam2world: np.ndarray) -> np.ndarray:
    """The point nearest (least squares) to every camera's optical axis [3]; the mean position if degenerate."""
    A, b = np.zeros((3, 3)), np.zeros(3)
    for M in cam2world:
        d = M[:3, 2] / np.linalg.norm(M[:3, 2])
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ M[:3, 3]
    if np.linalg.cond(A) > 1e6:
        return cam2world[:, :3, 3].mean(0)
    return np.linalg.solve(A, b)


def normalize_poses(cam2world_gl: np.ndarray, radius: float, up: str = 'auto') -> tuple[np.ndarray, dict]:
    """OpenGL cam2worlds [N, 4, 4] -> OpenCV cam2worlds in our world: +y up (the cameras' mean up for
    'auto', or the source's +z / +y), centred on the cameras' common look-at point, scaled so the mean
    camera distance is `radius`. Returns the poses and the applied transform (for the record)."""
    cv = cam2world_gl @ OPENGL_TO_OPENCV  # [N, 4, 4]
    if up == 'auto':
        up_vec = -cv[:, :3, 1].mean(0)
        if np.linalg.norm(up_vec) < 1e-6:
            raise DatasetError('the cameras have no common up direction; pass --up y or --up z')
    else:
        up_vec = dict(y=np.array([0.0, 1, 0]), z=np.array([0.0, 0, 1]))[up]
    R = rotation_between(up_vec, np.array([0.0, 1.0, 0.0]))
    rotated = cv.copy()
    rotated[:, :3, :] = np.einsum('ij,njk->nik', R, cv[:, :3, :])  # rotate axes and positions
    centre = look_at_centre(rotated)
    rotated[:, :3, 3] -= centre
    mean_distance = np.linalg.norm(rotated[:, :3, 3], axis=1).mean()
    if not mean_distance > 1e-9:  # the scene's extent comes from the cameras alone: nothing to scale by
        raise DatasetError(
            f'all {len(cv)} cameras sit at their common look-at point (e.g. a single frame), so the scene '
            f'centre and scale cannot be inferred; give frames from at least two places around the object'
        )
    scale = radius / mean_distance
    rotated[:, :3, 3] *= scale
    return rotated, dict(rotation=R.tolist(), centre=centre.tolist(), scale=float(scale))


# ----------------------------------------------------------------------------
# Statistics and the pose plot.


def pose_statistics(labels: np.ndarray) -> dict:
    """Summary numbers of 25-float labels [N, 25]."""
    M, K = (
        labels[:, :16].reshape(-1, 4, 4).astype(np.float64),
        labels[:, 16:].reshape(-1, 3, 3).astype(np.float64),
    )
    pos, fwd = M[:, :3, 3], M[:, :3, 2]
    radius = np.linalg.norm(pos, axis=1)
    along = -(pos * fwd).sum(1)  # distance along the axis to the point nearest the origin
    miss = np.linalg.norm(
        pos + along[:, None] * fwd, axis=1
    )  # how far the optical axis passes from the origin
    yaw = np.degrees(np.arctan2(pos[:, 0], pos[:, 2]))
    pitch = np.degrees(np.arccos(np.clip(pos[:, 1] / np.maximum(radius, 1e-12), -1, 1)))
    fov = np.degrees(2 * np.arctan(0.5 / K[:, 1, 1]))

    def stats(x):
        return dict(min=float(x.min()), mean=float(x.mean()), max=float(x.max()), std=float(x.std()))

    return dict(
        radius=stats(radius),
        look_at_miss=stats(miss),
        facing_away=int((along <= 0).sum()),
        fov_deg=stats(fov),
        cx=stats(K[:, 0, 2]),
        cy=stats(K[:, 1, 2]),
        yaw_deg=stats(yaw),
        pitch_deg=stats(pitch),
        yaw=yaw,
        pitch=pitch,
    )


def pose_plot(yaw_deg: np.ndarray, pitch_deg: np.ndarray, path: str, title: str) -> None:
    """Scatter of (yaw, pitch) in degrees: yaw -180..180 left to right, pitch 0 (above) at the top."""
    W, H, m = 720, 360, 40
    img = PIL.Image.new('RGB', (W + 2 * m, H + 2 * m), 'white')
    draw = PIL.ImageDraw.Draw(img)
    draw.rectangle([m, m, m + W, m + H], outline='black')
    for deg in range(-180, 181, 45):
        x = m + (deg + 180) / 360 * W
        draw.line([x, m, x, m + H], fill=(220, 220, 220))
        draw.text((x - 10, m + H + 5), f'{deg}', fill='black')
    for deg in range(0, 181, 45):
        y = m + deg / 180 * H
        draw.line([m, y, m + W, y], fill=(220, 220, 220))
        draw.text((5, y - 5), f'{deg}', fill='black')
    xs = m + (np.clip(yaw_deg, -180, 180) + 180) / 360 * W
    ys = m + np.clip(pitch_deg, 0, 180) / 180 * H
    for x, y in zip(xs, ys):
        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(30, 80, 200))
    draw.text((m, 10), f'{title}: yaw (x, degrees) vs pitch (y, degrees; 90 = equator)', fill='black')
    tmp = path + '.tmp.png'
    img.save(tmp)
    os.replace(tmp, path)


def labels_for(names: list[str], json_raw: bytes | None, where: str) -> tuple[np.ndarray | None, str | None]:
    """25-float labels of `names` from raw dataset.json (None if there is none)."""
    if json_raw is None:
        return None, None
    return parse_labels(json_raw, where, names)


def classes_for(names: list[str], json_raw: bytes | None, where: str) -> tuple[np.ndarray | None, list[str]]:
    """Class index of each of `names` and the class names from raw dataset.json ((None, []) without classes)."""
    if json_raw is None:
        return None, []
    return parse_classes(load_json(json_raw, where), where, names)


def write_labels_json(entries, classes=None, class_names=None) -> bytes:
    """dataset.json of (name, 25-float label) entries, with each entry's class when `classes` is given."""
    data = {'labels': [[n, [float(x) for x in lab]] for n, lab in entries]}
    if classes is not None:
        data.update(
            classes=[[n, int(k)] for (n, _), k in zip(entries, classes)], class_names=list(class_names)
        )
    return json.dumps(data).encode()
