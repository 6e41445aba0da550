"""Benchmarks of the data path (scripts/bench.py discovers CASES; each fn(args) -> dict).

- dataset_items: items/s of ImageFolderDataset on a synthetic 256^2 RGBA zip (PNG decode + alpha
  compositing + mirroring), directly and through a DataLoader with 0 and 2 workers (pinned memory
  on CUDA), plus the construction time (labels parsed once, every image header checked).
"""

import json
import os
import tempfile
import time
import zipfile

import numpy as np
import PIL.Image
import torch

from training import cameras
from training.dataset import ImageFolderDataset


def _synthetic_zip(path: str, count: int, resolution: int) -> None:
    rng = np.random.default_rng(0)
    cam = cameras.angles_to_camera(torch.linspace(-1, 1, count), 1.4, 3.5, 45.0)
    labels = cam.to_label().tolist()
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as zf:
        entries = []
        for i in range(count):
            img = np.zeros((resolution, resolution, 4), np.uint8)
            img[..., :3] = rng.integers(0, 256, 3)
            y, x = np.ogrid[:resolution, :resolution]
            img[..., 3] = (
                ((x - resolution / 2) ** 2 + (y - resolution / 2) ** 2) < (resolution / 3) ** 2
            ) * 255
            buf = _png(img)
            zf.writestr(f'{i:05d}.png', buf)
            entries.append([f'{i:05d}.png', labels[i]])
        zf.writestr('dataset.json', json.dumps({'labels': entries}))


def _png(img: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    PIL.Image.fromarray(img, 'RGBA').save(out, format='PNG', compress_level=1)
    return out.getvalue()


def dataset_items(args) -> dict:
    count, resolution, batch = 256, 256, 32
    device = torch.device(getattr(args, 'device', None) or 'cpu')
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'bench.zip')
        _synthetic_zip(path, count, resolution)
        t0 = time.perf_counter()
        ds = ImageFolderDataset(path, mirror=True)
        construct_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        direct = len(ds) / (time.perf_counter() - t0)
        result = dict(
            items=len(ds),
            resolution=resolution,
            construct_s=round(construct_s, 3),
            direct_items_s=round(direct, 1),
        )
        for workers in (0, 2):
            loader = torch.utils.data.DataLoader(
                ds, batch_size=batch, shuffle=True, num_workers=workers, pin_memory=device.type == 'cuda'
            )
            t0 = time.perf_counter()
            for images, _labels in loader:
                images.to(device, non_blocking=True)
            result[f'loader_w{workers}_items_s'] = round(len(ds) / (time.perf_counter() - t0), 1)
    return result


CASES = dict(dataset_items=dataset_items)
