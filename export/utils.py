"""Generator-free helpers for gen_samples.py: option parsing, latents from seeds, image grids, colour maps,
PNG and mp4 writing. Images arrive as float [N, C, H, W] in [-1, 1] and leave as uint8 [.., H, W, C].
"""

import math
import os
import re

import numpy as np
import torch
from PIL import Image

# ----------------------------------------------------------------------------
# Option parsing (each raises ValueError with a message fit for a one-line CLI error).


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]; ranges are inclusive, order is kept, seeds are non-negative ints."""
    seeds = []
    for part in str(text).split(','):
        part = part.strip()
        m = re.fullmatch(r'(\d+)(?:-(\d+))?', part)
        if m is None:
            raise ValueError(f'seed list "{text}": "{part}" is not a seed (N) or a range (A-B); e.g. "0-3,7"')
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise ValueError(f'seed list "{text}": range {part} runs backwards; write it as {b}-{a}')
        seeds.extend(range(a, b + 1))
    return seeds


def parse_angles(text: str) -> list[tuple[float, float]]:
    """'0:90,30:80' (yaw:pitch in degrees, pitch 90 = equator) -> [(yaw, pitch)] in radians."""
    views = []
    for part in str(text).split(','):
        m = re.fullmatch(r'\s*(-?[\d.]+)\s*:\s*(-?[\d.]+)\s*', part)
        if m is None:
            raise ValueError(f'camera "{text}": "{part}" is not YAW:PITCH in degrees, e.g. "0:90,30:80"')
        yaw, pitch = float(m.group(1)), float(m.group(2))
        if not 0 <= pitch <= 180:
            raise ValueError(f'camera "{text}": pitch {pitch} is outside [0, 180] (0 = top, 90 = equator)')
        views.append((math.radians(yaw), math.radians(pitch)))
    return views


def out_name(mode: str, seed=None, view=None, ext: str = 'png', **extra) -> str:
    """A file name that says the mode, the seed and the view: e.g. 'images-seed0007-view01.png'."""
    parts = [mode]
    if seed is not None:
        parts.append(f'seed{seed:04d}')
    if view is not None:
        parts.append(f'view{view:02d}')
    parts += [f'{k}{v}' for k, v in extra.items()]
    return '-'.join(parts) + f'.{ext}'


# ----------------------------------------------------------------------------
# Latents.


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """The StyleGAN convention: z = RandomState(seed).randn(z_dim), so a seed means the same face anywhere. [1, z_dim]"""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float()


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    return a + (b - a) * t


# ----------------------------------------------------------------------------
# Pixels.


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C]."""
    x = ((images.detach().float().cpu() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def image_grid(images: np.ndarray, cols: int | None = None, fill: int = 255) -> np.ndarray:
    """Tile uint8 [N, H, W, C] into one [rows * H, cols * W, C] image (cols = ceil(sqrt(N)) by default)."""
    N, H, W, C = images.shape
    cols = cols or math.ceil(math.sqrt(N))
    rows = math.ceil(N / cols)
    grid = np.full((rows * H, cols * W, C), fill, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * H : (r + 1) * H, c * W : (c + 1) * W] = img
    return grid


# Viridis at 9 evenly spaced stops (perceptually uniform, readable in greyscale print).
_VIRIDIS = np.array(
    [
        [68, 1, 84],
        [71, 45, 123],
        [59, 82, 139],
        [44, 114, 142],
        [33, 145, 140],
        [40, 174, 128],
        [94, 201, 98],
        [170, 220, 50],
        [253, 231, 37],
    ],
    dtype=np.float64,
)


def colorize(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [H, W] values linearly from [lo, hi] onto the viridis ramp. uint8 [H, W, 3]"""
    t = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1) * (len(_VIRIDIS) - 1)
    i = np.minimum(np.floor(t).astype(int), len(_VIRIDIS) - 2)
    f = (t - i)[..., None]
    return np.round(_VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f).astype(np.uint8)


def colorize_depth(depth: np.ndarray, opacity: np.ndarray, min_opacity: float = 0.5) -> np.ndarray:
    """Depth [H, W] as viridis (near = yellow, far = purple) over the opaque pixels; the rest white. [H, W, 3]

    The colour range spans the 1st-99th percentile of the opaque pixels' depth, so a few stray far
    samples cannot flatten the picture.
    """
    mask = opacity >= min_opacity
    out = np.full(depth.shape + (3,), 255, dtype=np.uint8)
    if mask.any():
        lo, hi = np.percentile(depth[mask], [1, 99])
        hi = hi if hi > lo else lo + 1e-6
        out[mask] = colorize(hi - depth[mask] + lo, lo, hi)  # reversed: near is bright
    return out


def colorize_opacity(opacity: np.ndarray) -> np.ndarray:
    """Opacity [H, W] in [0, 1] as greyscale, opaque = black on white. uint8 [H, W, 3]"""
    g = np.round((1 - np.clip(opacity, 0, 1)) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


def save_png(path: str, image: np.ndarray) -> None:
    """uint8 [H, W, 3] (RGB) or [H, W, 4] (RGBA) -> PNG."""
    Image.fromarray(image, 'RGBA' if image.shape[-1] == 4 else 'RGB').save(path)


def pad_even(frame: np.ndarray, fill: int = 255) -> np.ndarray:
    """Pad a frame to even height and width (yuv420p video needs both even)."""
    H, W = frame.shape[:2]
    return np.pad(frame, ((0, H % 2), (0, W % 2), (0, 0)), constant_values=fill)


class VideoWriter:
    """mp4 (H.264, yuv420p) through imageio-ffmpeg; frames are uint8 [H, W, 3] of one size."""

    def __init__(self, path: str, fps: int = 30, crf: int = 18):
        import imageio.v2 as imageio

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._writer = imageio.get_writer(
            path,
            fps=fps,
            codec='libx264',
            macro_block_size=1,
            pixelformat='yuv420p',
            ffmpeg_log_level='error',
            output_params=['-crf', str(crf), '-threads', '1', '-map_metadata', '-1', '-fflags', '+bitexact'],
        )
        self.num_frames = 0

    def append(self, frame: np.ndarray) -> None:
        self._writer.append_data(pad_even(frame[..., :3]))
        self.num_frames += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_video(path: str) -> np.ndarray:
    """All frames of a video as uint8 [T, H, W, 3] (for tests and checks)."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(path)
    try:
        return np.stack([np.asarray(f) for f in reader])
    finally:
        reader.close()
