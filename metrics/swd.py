"""Sliced Wasserstein distance on Laplacian-pyramid patches (the ProGAN SWD; needs no pretrained network).

Protocol (Karras et al. 2018, Appendix D): build a Laplacian pyramid of each image from full resolution
down to 16x16; from every level take 128 random 7x7 neighbourhoods per image as descriptors; normalize
each set's descriptors per colour channel (zero mean, unit std); then average over 512 random unit
directions (4 repeats x 128) the 1-D Wasserstein-1 distance of the projected, sorted descriptors.
Reported per level (x 1e3, as ProGAN prints it) and as the mean over levels.
"""

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import misc

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Separable 5-tap binomial blur with mirror padding. [N, C, H, W] -> same"""
    C = x.shape[1]
    k = (_BINOMIAL.to(x) * np.sqrt(gain))[None, None]
    x = F.pad(x, (2, 2, 2, 2), mode='reflect')
    x = F.conv2d(x, k[..., None, :].expand(C, 1, 1, 5), groups=C)
    return F.conv2d(x, k[..., :, None].expand(C, 1, 5, 1), groups=C)


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def _pyr_up(x: torch.Tensor) -> torch.Tensor:
    N, C, H, W = x.shape
    up = x.new_zeros(N, C, H * 2, W * 2)
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=4.0)  # zero insertion keeps 1/4 of the energy


def laplacian_pyramid(images: torch.Tensor, min_res: int = 16) -> list[torch.Tensor]:
    """Band-pass levels from full resolution down to `min_res`; the last level is the low-pass residual."""
    misc.assert_shape(images, [None, None, None, None])
    levels, current = [], images
    while current.shape[-1] > min_res:
        smaller = _pyr_down(current)
        levels.append(current - _pyr_up(smaller))
        current = smaller
    levels.append(current)
    return levels


def random_positions(N: int, H: int, W: int, count: int, size: int, generator=None, seeds=None):
    """Top-left corners (y, x), each [N, count, 1, 1]; with `seeds` ([N] ints), image i's corners depend
    only on seeds[i] (so they do not depend on batching or on the number of ranks)."""
    if seeds is None:
        y = torch.randint(0, H - size + 1, (N, count, 1, 1), generator=generator)
        x = torch.randint(0, W - size + 1, (N, count, 1, 1), generator=generator)
        return y, x
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    y = torch.stack([torch.randint(0, H - size + 1, (count, 1, 1), generator=g) for g in gens])
    x = torch.stack([torch.randint(0, W - size + 1, (count, 1, 1), generator=g) for g in gens])
    return y, x


def random_neighbourhoods(
    level: torch.Tensor, count: int = 128, size: int = 7, generator: torch.Generator | None = None, seeds=None
) -> torch.Tensor:
    """`count` random size x size patches per image, flattened. [N, C, H, W] -> [N * count, C, size, size]"""
    N, C, H, W = level.shape
    y, x = random_positions(N, H, W, count, size, generator, seeds)
    offsets = torch.arange(size)
    index = (y + offsets[:, None]) * W + (x + offsets[None, :])  # [N, count, size, size]
    flat = level.reshape(N, 1, C, H * W).expand(N, count, C, H * W)
    index = index.reshape(N, count, 1, size * size).expand(N, count, C, size * size).to(level.device)
    patches = flat.gather(3, index)  # [N, count, C, size*size]
    return patches.reshape(N * count, C, size, size)


def normalize_descriptors(desc: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit std per channel over all descriptors and pixels. [M, C, s, s] -> [M, C*s*s]"""
    mean = desc.mean(dim=(0, 2, 3), keepdim=True)
    std = desc.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return ((desc - mean) / std).flatten(1)


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row sorted; on the CPU through numpy, whose sort is about 10x faster than torch's here."""
    if x.device.type == 'cpu':
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return x.sort(dim=1).values


def sliced_wasserstein(
    a: torch.Tensor, b: torch.Tensor, dir_repeats: int = 4, dirs_per_repeat: int = 128, generator=None
) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of projected sets [M, D]."""
    if a.shape != b.shape:
        raise ValueError(
            f'SWD needs equally many descriptors of one width, got {list(a.shape)}, {list(b.shape)}'
        )
    total = 0.0
    for _ in range(dir_repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=generator, dtype=torch.float64)
        dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(a.device, a.dtype)
        proj_a, proj_b = _sorted_rows(dirs.T @ a.T), _sorted_rows(dirs.T @ b.T)  # [dirs, M]
        total += (proj_a - proj_b).abs().mean().item()
    return total / dir_repeats


class SWDAccumulator:
    """Collects pyramid descriptors of up to `max_items` images (values in [0, 255], [N, 3, H, W]) of one set."""

    def __init__(self, nhoods_per_image=128, nhood_size=7, min_res=16, seed=0, max_items=None):
        self.nhoods_per_image, self.nhood_size, self.min_res = nhoods_per_image, nhood_size, min_res
        self.seed, self.generator = seed, torch.Generator().manual_seed(seed)
        self.max_items, self.num_items = max_items, 0
        self.levels: list[list[torch.Tensor]] = []

    def describe(self, images: torch.Tensor, items: list[int] | None = None) -> list[torch.Tensor]:
        """Raw descriptors of a batch, per level: [N, nhoods, C, size, size]. With `items` (the images' global
        indices) the neighbourhoods of each image are drawn from (seed, item, level) alone."""
        misc.assert_shape(images, [None, None, None, None])
        N = images.shape[0]
        out = []
        for i, level in enumerate(laplacian_pyramid(images.to(torch.float32), self.min_res)):
            seeds = None if items is None else [(self.seed * 1_000_003 + item) * 31 + i for item in items]
            desc = random_neighbourhoods(level, self.nhoods_per_image, self.nhood_size, self.generator, seeds)
            out.append(desc.reshape(N, self.nhoods_per_image, *desc.shape[1:]))  # [N, nhoods, C, s, s]
        return out

    def append_descriptors(self, levels: list[torch.Tensor]) -> None:
        if not self.levels:
            self.levels = [[] for _ in levels]
        if len(levels) != len(self.levels):
            raise ValueError('all images of an SWD set must have one resolution')
        keep = levels[0].shape[0] if self.max_items is None else max(self.max_items - self.num_items, 0)
        for store, desc in zip(self.levels, levels):
            # float16 halves the host memory (16384 images at 256^2: ~6 GB per set instead of ~12 GB); its
            # ~3 significant digits are far finer than the SWD's own sampling noise.
            store.append(desc[:keep].flatten(0, 1).to(torch.float16).cpu())  # [keep * nhoods, C, s, s]
        self.num_items += min(keep, levels[0].shape[0])

    def append(self, images: torch.Tensor) -> None:
        self.append_descriptors(self.describe(images))

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    def level_descriptors(self, level: int) -> torch.Tensor:
        """Normalized float32 descriptors of one level: [num_images * nhoods, C * size * size]."""
        return normalize_descriptors(torch.cat(self.levels[level]).to(torch.float32))


def swd_between(real: SWDAccumulator, fake: SWDAccumulator, seed: int = 0) -> dict:
    """Per-level SWD x 1e3 (from the finest band to the low-pass residual) and their mean.

    Levels are normalized and compared one at a time, so only one level is held in float32 at once.
    """
    generator = torch.Generator().manual_seed(seed)
    if real.num_levels != fake.num_levels:
        raise ValueError('real and fake images must have the same resolution for SWD')
    per_level = []
    for level in range(real.num_levels):
        a, b = real.level_descriptors(level), fake.level_descriptors(level)
        n = min(a.shape[0], b.shape[0])
        per_level.append(1e3 * sliced_wasserstein(a[:n], b[:n], generator=generator))
    return dict(swd_levels=per_level, swd_mean=float(np.mean(per_level)))
