"""Posed image datasets: a folder or zip of images plus `dataset.json` labels, and dataset presets.

`dataset.json` holds the camera label of every image ("labels") and optionally its class ("classes",
"class_names"); both formats are described and parsed in training/dataset_labels.py.
Every bad input raises `DatasetError` with one line: what is wrong, in which file, how to fix it.
"""

import io
import math
import os
import zipfile

import numpy as np
import PIL.Image
import torch

from training import cameras
from training.dataset_labels import (  # noqa: F401 (re-exported: the dataset's public API)
    LABEL_LENGTHS,
    DatasetError,
    angles_to_label,
    check_labels,
    load_json,
    parse_classes,
    parse_labels,
)
from training.options import config

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')
BACKGROUNDS = dict(white=(255, 255, 255), black=(0, 0, 0), gray=(128, 128, 128))
PRESET_DIR = config.DATASET_PRESET_DIR


# ----------------------------------------------------------------------------
# Images.


def parse_background(background) -> tuple[int, int, int]:
    """'white' | 'black' | 'gray' | '#rrggbb' | (r, g, b) in 0..255 -> an RGB triple."""
    if isinstance(background, str) and background.lower() in BACKGROUNDS:
        return BACKGROUNDS[background.lower()]
    if isinstance(background, str) and len(background) == 7 and background.startswith('#'):
        try:
            return tuple(int(background[i : i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            pass
    if (
        isinstance(background, (list, tuple))
        and len(background) == 3
        and all(0 <= c <= 255 for c in background)
    ):
        return tuple(int(c) for c in background)
    raise DatasetError(
        f'background {background!r}: use white, black, gray, #rrggbb or three numbers in 0..255'
    )


def decode_image(data: bytes, name: str, background=(255, 255, 255)) -> np.ndarray:
    """Image bytes -> uint8 RGB [H, W, 3]; alpha composited onto `background`, grayscale expanded."""
    try:
        img = PIL.Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # PIL raises many types for broken files
        raise DatasetError(
            f'{name}: cannot read the image ({type(e).__name__}: {e}); replace or delete it'
        ) from None
    has_alpha = img.mode in ('RGBA', 'LA', 'PA', 'La', 'RGBa') or 'transparency' in img.info
    if img.mode in ('I;16', 'I;16B', 'I', 'F'):
        arr = np.asarray(img, dtype=np.float64)
        img = PIL.Image.fromarray(np.clip(arr * (255 / max(arr.max(), 1)), 0, 255).astype(np.uint8))
    if has_alpha:
        rgba = img.convert('RGBA')
        base = PIL.Image.new('RGBA', rgba.size, tuple(background) + (255,))
        return np.asarray(PIL.Image.alpha_composite(base, rgba).convert('RGB'))  # straight alpha, in C
    return np.asarray(img.convert('RGB'))


class _Source:
    """A folder or a zip archive: names of image files, raw bytes by name. Zip handles reopen per process."""

    def __init__(self, path: str):
        self.path = path
        self._zip, self._zip_pid = None, None
        if os.path.isdir(path):
            self.kind = 'folder'
            names = []
            for root, _dirs, files in os.walk(path):
                names += [os.path.relpath(os.path.join(root, f), path).replace(os.sep, '/') for f in files]
        elif os.path.isfile(path):
            if not zipfile.is_zipfile(path):
                raise DatasetError(
                    f'{path}: not a zip archive; pass a folder of images or a .zip made by dataset_tool.py'
                )
            self.kind = 'zip'
            names = self._open_zip().namelist()
        else:
            raise DatasetError(f'{path}: no such file or folder; check the --data path')
        self.all_names = set(names)
        self.image_names = sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS))

    def _open_zip(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            try:
                self._zip, self._zip_pid = zipfile.ZipFile(self.path), os.getpid()
            except (zipfile.BadZipFile, OSError) as e:
                raise DatasetError(
                    f'{self.path}: cannot open the zip ({e}); recreate it with dataset_tool.py'
                ) from None
        return self._zip

    def read(self, name: str) -> bytes:
        if self.kind == 'zip':
            return self._open_zip().read(name)
        with open(os.path.join(self.path, name), 'rb') as f:
            return f.read()

    def image_size(self, name: str) -> tuple[int, int]:
        try:
            if self.kind == 'zip':
                with self._open_zip().open(name) as f, PIL.Image.open(f) as img:
                    return img.size
            with PIL.Image.open(os.path.join(self.path, name)) as img:
                return img.size
        except Exception as e:
            raise DatasetError(
                f'{self.where(name)}: cannot read the image ({type(e).__name__}); replace or delete it'
            ) from None

    def where(self, name: str) -> str:
        return f'{self.path}:{name}' if self.kind == 'zip' else os.path.join(self.path, name)

    def __getstate__(self):
        return dict(self.__dict__, _zip=None, _zip_pid=None)


# ----------------------------------------------------------------------------
# The dataset.


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images [3, R, R] uint8 and 25-float camera labels from a folder or zip with `dataset.json`, and the
    class of every item (`get_class`, `num_classes`, `class_names`) when dataset.json has "classes".

    With `mirror`, items len/2.. are the x-flipped images with `cameras.mirror_camera` labels.
    """

    def __init__(
        self,
        path,  # Folder or zip of images with dataset.json at its root.
        resolution=None,  # Expected resolution; None = whatever the images have (all equal, square).
        mirror=False,  # Double the dataset with x-flipped images and mirrored cameras.
        background='white',  # Colour RGBA images are composited onto.
        max_size=None,  # Keep a random subset of this many images (before mirroring); None = all.
        random_seed=0,  # Seed of that subset.
        check_all_sizes=True,  # Read every image header at construction to catch mixed resolutions early.
        only_class=None,  # Keep only the images of this class (index or name); None = all.
    ):
        self.path = str(path)
        self.name = os.path.splitext(os.path.basename(os.path.normpath(self.path)))[0]
        self.background = parse_background(background)
        self._source = _Source(self.path)
        names = self._source.image_names
        if not names:
            inner = os.path.join(self.path, 'dataset.zip')
            hint = f'pass {inner}' if os.path.isfile(inner) else 'check the path'
            raise DatasetError(f'{self.path}: no images found ({", ".join(IMAGE_EXTENSIONS)}); {hint}')
        if max_size is not None and max_size < len(names):
            idx = np.sort(np.random.RandomState(random_seed).permutation(len(names))[:max_size])
            names = [names[i] for i in idx]
        self._names = names
        self.resolution = self._check_sizes(resolution, check_all_sizes)
        self.num_channels = 3
        self.mirror = bool(mirror)
        labels, self.label_format, classes, self.class_names = self._load_labels()
        self.num_classes = len(self.class_names)  # 0: no "classes" in dataset.json
        if only_class is not None:
            labels, classes = self._keep_class(only_class, labels, classes)
        classes = np.full(len(self._names), -1, np.int64) if classes is None else classes
        self._classes = np.concatenate([classes, classes]) if self.mirror else classes  # [len]; -1 = none
        if self.mirror:
            mirrored = cameras.mirror_camera(cameras.Camera.from_label(torch.from_numpy(labels))).to_label()
            labels = np.concatenate([labels, mirrored.numpy()])
        self._labels = np.ascontiguousarray(labels, dtype=np.float32)  # [len, 25], parsed once

    def _keep_class(self, only_class, labels, classes):
        """Drop every image not of class `only_class` (index or name); returns the kept labels and classes."""
        keep = classes == self.class_index(only_class)
        if not keep.any():
            raise DatasetError(f'{self.path}: no images of class {only_class!r}; pick another class')
        self._names = [n for n, k in zip(self._names, keep) if k]
        return labels[keep], classes[keep]

    def _check_sizes(self, resolution, check_all: bool) -> int:
        first = self._names[0]
        w, h = self._source.image_size(first)
        for name in self._names if check_all else [first]:
            size = self._source.image_size(name) if name != first else (w, h)
            if size[0] != size[1]:
                raise DatasetError(
                    f'{self._source.where(name)}: image is {size[0]}x{size[1]}, not square; run '
                    f'`dataset_tool.py convert --crop center` (or --crop pad)'
                )
            if size != (w, h):
                raise DatasetError(
                    f'{self._source.where(name)}: image is {size[0]}x{size[1]} but {first} is {w}x{h}; run '
                    f'`dataset_tool.py convert --resolution R` to make them equal'
                )
        if resolution is not None and resolution != w:
            raise DatasetError(
                f'{self.path}: images are {w}x{w} but resolution {resolution} was requested; run '
                f'`dataset_tool.py convert --resolution {resolution}` or change the resolution option'
            )
        return w

    def _load_labels(self) -> tuple[np.ndarray, str, np.ndarray | None, list[str]]:
        """dataset.json, parsed once: camera labels, their format, class indices (or None), class names."""
        source = self._source.where('dataset.json')
        if 'dataset.json' not in self._source.all_names:
            raise DatasetError(
                f'{source}: missing; camera labels are required (write it, or use dataset_tool.py '
                f'from-nerfstudio / render to produce one; format in docs/conventions.md)'
            )
        data = load_json(self._source.read('dataset.json'), source)
        labels, fmt = parse_labels(data, source, self._names)
        classes, class_names = parse_classes(data, source, self._names)
        return labels, fmt, classes, class_names

    def __len__(self) -> int:
        return len(self._names) * (2 if self.mirror else 1)

    @property
    def num_raw_images(self) -> int:
        return len(self._names)

    def image_name(self, idx: int) -> str:
        return self._names[idx % len(self._names)]

    def load_image(self, idx: int) -> np.ndarray:
        """The un-mirrored image of raw index `idx` as uint8 [3, R, R]."""
        name = self._names[idx]
        image = decode_image(self._source.read(name), self._source.where(name), self.background)
        if image.shape[:2] != (self.resolution, self.resolution):
            raise DatasetError(
                f'{self._source.where(name)}: image is {image.shape[1]}x{image.shape[0]}, the dataset is '
                f'{self.resolution}x{self.resolution}; run `dataset_tool.py convert --resolution {self.resolution}`'
            )
        return image.transpose(2, 0, 1)  # [H, W, 3] -> [3, H, W]

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self._names)
        image = self.load_image(idx % n)
        if idx >= n:
            image = image[:, :, ::-1]  # x-flip, consistent with mirror_camera
        return np.ascontiguousarray(image), self._labels[idx].copy()

    def get_label(self, idx: int) -> np.ndarray:
        return self._labels[idx].copy()

    def get_class(self, idx: int) -> int:
        """Class index of item `idx` (a mirrored item keeps its image's class); -1 without classes."""
        return int(self._classes[idx])

    @property
    def classes(self) -> np.ndarray:
        """Every item's class index int64 [len] (-1 without classes; a view: do not modify)."""
        return self._classes

    def class_index(self, name_or_index) -> int:
        """A class given by index or by name (its "class_names" entry) -> its index; DatasetError if unknown."""
        text = str(name_or_index)
        if self.num_classes == 0:
            raise DatasetError(f'{self.path}: class {text!r} asked for, but dataset.json has no "classes"')
        if text in self.class_names:
            return self.class_names.index(text)
        if text.lstrip('-').isdigit() and 0 <= int(text) < self.num_classes:
            return int(text)
        raise DatasetError(
            f'{self.path}: no class {text!r}; it has {self.num_classes} classes: {self.class_names}'
        )

    @property
    def labels(self) -> np.ndarray:
        """Every item's 25-float label [len, 25] (a view: do not modify)."""
        return self._labels

    def cameras(self) -> cameras.Camera:
        """Camera of every item (mirrored items included), float32."""
        return cameras.Camera.from_label(torch.from_numpy(self._labels.copy()))


# ----------------------------------------------------------------------------
# Dataset presets: configs/datasets/<name>.yaml, one place for each dataset's numbers.

PRESET_KEYS = dict(
    description=str,  # One line: what the dataset is and where its numbers come from.
    path=(str, type(None)),  # Default dataset location (relative to the repository root), or null.
    resolution=int,  # Image resolution R.
    mirror=bool,  # Mirror (x-flip + mirrored camera) by default.
    background=(str, list),  # Colour RGBA images are composited onto.
    camera_prior=str,  # 'normal' | 'uniform_sphere' | 'dataset' (training/cameras.py).
    camera_prior_kwargs=dict,  # The prior's angle numbers (radians); radius and fov come from below.
    radius=(int, float),  # Camera distance from the origin (world units).
    fov=(int, float),  # Full field of view in degrees.
    ray_start=(int, float),  # Near bound along each ray (world units).
    ray_end=(int, float),  # Far bound along each ray.
    cube_scale=(int, float),  # Half-size of the world box [-s, s]^3 the tri-planes cover.
)
# Keys a preset may leave out.
OPTIONAL_PRESET_KEYS = dict(
    camera_fit=dict,  # A fitted prior kept as an option (--camera-prior fit): {kind: ..., the prior's angles}.
)


def load_dataset_preset(name: str) -> dict:
    """The preset `configs/datasets/<name>.yaml` (or a path to a YAML file) as a validated dict."""
    allowed = {**PRESET_KEYS, **OPTIONAL_PRESET_KEYS}
    try:
        path, preset = config.read_preset(
            name, allowed, 'dataset', folder=PRESET_DIR
        )  # the one preset reader
    except config.ConfigError as err:
        raise DatasetError(str(err)) from None
    missing = sorted(set(PRESET_KEYS) - set(preset))
    if missing:
        raise DatasetError(f'{path}: missing keys {", ".join(missing)} (every dataset preset sets them)')
    for key, types in allowed.items():
        if key not in preset:
            continue
        if not isinstance(preset[key], types) or (types is not bool and isinstance(preset[key], bool)):
            raise DatasetError(f'{path}: {key} = {preset[key]!r} has the wrong type')
    parse_background(preset['background'])
    if (
        not 0 < preset['ray_start'] < preset['ray_end']
        or preset['cube_scale'] <= 0
        or preset['resolution'] <= 0
    ):
        raise DatasetError(f'{path}: need 0 < ray_start < ray_end, cube_scale > 0 and resolution > 0')
    try:
        make_preset_camera_prior(preset, dataset=None if preset['camera_prior'] != 'dataset' else _NO_DATASET)
        if 'camera_fit' in preset:
            make_preset_camera_prior(preset, dataset=_NO_DATASET, choice='fit')
    except (ValueError, TypeError) as e:
        raise DatasetError(f'{path}: {e}') from None
    return preset


def preset_camera_prior(preset: dict, choice: str | None = None) -> tuple[str, dict]:
    """(kind, angle kwargs) of the prior `choice` names: None = the preset's camera_prior, 'dataset' = the
    dataset's own poses, 'fit' = the preset's camera_fit (a fitted distribution kept as an option)."""
    if choice is None:
        return preset['camera_prior'], dict(preset['camera_prior_kwargs'])
    if choice == 'dataset':
        return 'dataset', {}
    if choice == 'fit':
        if 'camera_fit' not in preset:
            raise ValueError(
                'camera prior "fit": this dataset preset has no camera_fit; use --camera-prior dataset'
            )
        fit = dict(preset['camera_fit'])
        return fit.pop('kind', 'normal'), fit
    raise ValueError(f'camera prior choice {choice!r} must be dataset or fit')


_NO_DATASET = cameras.angles_to_camera(0.0, math.pi / 2, 1.0, 30.0)  # stands in to validate 'dataset' presets


def make_preset_camera_prior(preset: dict, dataset=None, choice: str | None = None) -> cameras.CameraPrior:
    """The camera prior a preset names (or `choice`, see preset_camera_prior), with its radius and fov."""
    kind, kwargs = preset_camera_prior(preset, choice)
    return cameras.make_camera_prior(
        kind, dataset=dataset, radius=preset['radius'], fov=preset['fov'], **kwargs
    )
