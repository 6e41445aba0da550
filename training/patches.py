"""Patch parameters (s, dx, dy) and the one mapping from them to pixel centres.

A patch of scale s in (0, 1] and offset (dx, dy) in [0, 1 - s]^2 covers the square
[dx, dx + s] x [dy, dy + s] of the normalized image plane ([0, 1]^2; u along the width, v along the
height). Rendered at r x r pixels, its pixel (i, j) (row i, column j) sits at
    u = dx + s * (j + 0.5) / r,   v = dy + s * (i + 0.5) / r.
The generator casts its rays through these points and the real-image crop samples exactly these
points, so the two can never disagree. The full image at resolution R is the patch (1, 0, 0) with r = R.
"""

import torch

from torch_utils import misc


def full_image_patch_params(batch_size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Patch parameters (1, 0, 0) for every sample: the whole image. [N, 3]"""
    params = torch.zeros(batch_size, 3, device=device, dtype=dtype)
    params[:, 0] = 1
    return params


def patch_pixel_centres(patch_params: torch.Tensor, patch_res: int) -> torch.Tensor:
    """Normalized (u, v) image coordinates of the r x r pixel centres of each patch. [N, r, r, 2]"""
    misc.assert_shape(patch_params, [None, 3])
    scale, dx, dy = patch_params.unbind(dim=1)
    steps = (torch.arange(patch_res, device=patch_params.device, dtype=patch_params.dtype) + 0.5) / patch_res
    u = dx[:, None, None] + scale[:, None, None] * steps[None, None, :]  # varies along columns
    v = dy[:, None, None] + scale[:, None, None] * steps[None, :, None]  # varies along rows
    u, v = torch.broadcast_tensors(u, v)
    return torch.stack([u, v], dim=-1)


def crop_patches(images: torch.Tensor, patch_params: torch.Tensor, patch_res: int) -> torch.Tensor:
    """Bilinearly sample images [N, C, H, W] at the pixel centres of each patch. [N, C, r, r]

    Reals and fakes must be sampled alike: G point-samples one ray per pixel, so there is deliberately
    no extra low-pass filter here; filtering the real side only would let D tell reals from fakes by
    their frequency content.
    """
    N, C, H, W = images.shape
    misc.assert_shape(patch_params, [N, 3])
    uv = patch_pixel_centres(patch_params.to(images.dtype), patch_res)
    grid = uv * 2 - 1  # grid_sample with align_corners=False: -1 and 1 are the outer pixel edges
    return torch.nn.functional.grid_sample(
        images, grid, mode='bilinear', padding_mode='border', align_corners=False
    )


# ----------------------------------------------------------------------------
# Patch-parameter distributions (Eq. 3-5, Appendix B.3).
#
# Every schedule is a pure function of cur_nimg (images shown to D so far): a sampler holds only its
# constructor numbers, so a resumed run draws from exactly the distribution it would have drawn from.


def _anneal_fraction(cur_nimg: float, anneal_kimg: float) -> float:
    """min(t / T, 1) with t = cur_nimg and T = anneal_kimg * 1000 (T = 0 means fully annealed)."""
    if anneal_kimg <= 0:
        return 1.0
    return min(max(float(cur_nimg), 0.0) / (anneal_kimg * 1000), 1.0)


def _uniform(batch_size: int, generator, device) -> torch.Tensor:
    """U[0, 1) in float64 on the generator's device (a torch.Generator only draws on its own device)."""
    draw_device = generator.device if generator is not None else device
    return torch.rand(batch_size, generator=generator, device=draw_device, dtype=torch.float64)


class PatchSampler:
    """Base class: draws (s, dx, dy) with offsets dx, dy ~ U[0, 1 - s] given s (Eq. 3)."""

    kind = None

    def __init__(
        self, img_resolution: int, patch_resolution: int, pixel_aligned: bool = False, group_size: int = 1
    ):
        if group_size < 1:
            raise ValueError(f'patch sampler: group_size={group_size} must be >= 1')
        if not (0 < patch_resolution <= img_resolution):
            raise ValueError(
                f'patch sampler: patch_resolution={patch_resolution} must be in (0, img_resolution={img_resolution}]'
            )
        self.img_resolution = int(img_resolution)  # R: full image resolution.
        self.patch_resolution = int(patch_resolution)  # r: patch resolution that D sees.
        self.min_scale = (
            patch_resolution / img_resolution
        )  # r / R: the smallest scale (1 patch pixel = 1 image pixel).
        self.pixel_aligned = bool(pixel_aligned)  # Snap offsets to multiples of 1/R (image pixel edges).
        self.group_size = int(group_size)  # Share one (s, dx, dy) per minibatch-stddev group of D.

    def sample_scales(self, batch_size: int, cur_nimg: float, generator=None, device='cpu') -> torch.Tensor:
        """Scales s in [r/R, 1], float64. [N]"""
        raise NotImplementedError(f'{type(self).__name__} must implement sample_scales')

    def describe(self, cur_nimg: float) -> dict:
        """Scalars that describe the current distribution, for logging."""
        raise NotImplementedError(f'{type(self).__name__} must implement describe')

    def sample(self, batch_size: int, cur_nimg: float, device='cpu', generator=None) -> torch.Tensor:
        """Patch parameters (s, dx, dy) for the current cur_nimg. [N, 3] float32 on `device`.

        With group_size G > 1, samples i and j share parameters when i = j mod N/G: exactly the groups of
        D's minibatch-stddev layer (as in the public code), so each group's statistic compares like with like.
        """
        G = min(self.group_size, batch_size)
        if batch_size % G != 0:
            raise ValueError(f'patch sampler: batch size {batch_size} must be divisible by group_size {G}')
        n = batch_size // G
        scale = self.sample_scales(n, cur_nimg, generator=generator, device=device)
        offsets = [self._sample_offset(scale, generator, device) for _ in range(2)]  # Eq. 3: p(dx|s) p(dy|s)
        params = torch.stack([scale, *offsets], dim=1).repeat(G, 1)  # [n, 3] -> [N, 3]
        return params.to(device=device, dtype=torch.float32)

    def _sample_offset(self, scale: torch.Tensor, generator, device) -> torch.Tensor:
        room = (1 - scale).clamp(min=0)  # the patch [d, d + s] stays inside [0, 1]
        u = _uniform(scale.shape[0], generator, device)
        if not self.pixel_aligned:
            return u * room
        R = self.img_resolution
        num_positions = torch.floor(room * R + 1e-6) + 1  # integer offsets k in {0, ..., floor((1 - s) R)}
        return torch.floor(u * num_positions).clamp(max=num_positions - 1) / R


class BetaPatchSampler(PatchSampler):
    """Eq. 5: s = Beta(1, beta(t)) * (1 - r/R) + r/R, beta(t) linear in cur_nimg over T kimg, then constant."""

    kind = 'beta'

    def __init__(
        self,
        img_resolution: int,  # R: full image resolution.
        patch_resolution: int,  # r: patch resolution.
        *,
        beta_end: float,  # beta(T): the --beta-end option (default in training/options/config.py).
        anneal_kimg: float,  # T in kimg, the --anneal-kimg option.
        beta_start: float = 0.001,  # beta(0): ~0 puts almost all mass at s = 1 (whole image).
        pixel_aligned: bool = False,  # Snap offsets to image pixel edges.
        group_size: int = 1,  # Share parameters within D's minibatch-stddev groups (1 = independent, Eq. 3).
    ):
        super().__init__(img_resolution, patch_resolution, pixel_aligned, group_size)
        if beta_start <= 0 or beta_end <= 0:
            raise ValueError(
                f'beta patch sampler: beta_start={beta_start} and beta_end={beta_end} must be > 0'
            )
        self.beta_start, self.beta_end, self.anneal_kimg = (
            float(beta_start),
            float(beta_end),
            float(anneal_kimg),
        )

    def beta(self, cur_nimg: float) -> float:
        """beta(t) = lerp(beta_start, beta_end, min(t / T, 1))."""
        frac = _anneal_fraction(cur_nimg, self.anneal_kimg)
        return self.beta_start + (self.beta_end - self.beta_start) * frac

    def sample_scales(self, batch_size, cur_nimg, generator=None, device='cpu'):
        b = self.beta(cur_nimg)
        # Beta(1, b) has CDF F(x) = 1 - (1 - x)^b, so x = 1 - u^(1/b) with u ~ U(0, 1] (exact inverse CDF;
        # unlike torch.distributions.Beta it honours a torch.Generator).
        u = 1 - _uniform(batch_size, generator, device)  # (0, 1]
        unit = -torch.expm1(torch.log(u) / b)  # 1 - u^(1/b), accurate for tiny b
        return unit * (1 - self.min_scale) + self.min_scale  # Eq. 5

    def describe(self, cur_nimg):
        b = self.beta(cur_nimg)
        mean = self.min_scale + (1 - self.min_scale) / (1 + b)  # E[Beta(1, b)] = 1 / (1 + b)
        return dict(beta=b, mean_scale=mean)


class UniformPatchSampler(PatchSampler):
    """Eq. 4 (Appendix B.3 start): s ~ U[s_min(t), 1], s_min(t) = lerp(s_min_start, r/R, min(t / T, 1))."""

    kind = 'uniform'

    def __init__(
        self,
        img_resolution: int,  # R: full image resolution.
        patch_resolution: int,  # r: patch resolution.
        *,
        anneal_kimg: float,  # T in kimg, the --anneal-kimg option.
        s_min_start: float = 0.9,  # s_min(0) as in GRAF (Appendix B.3).
        pixel_aligned: bool = False,  # Snap offsets to image pixel edges.
        group_size: int = 1,  # Share parameters within D's minibatch-stddev groups (1 = independent, Eq. 3).
    ):
        super().__init__(img_resolution, patch_resolution, pixel_aligned, group_size)
        if not (0 < s_min_start <= 1):
            raise ValueError(f'uniform patch sampler: s_min_start={s_min_start} must be in (0, 1]')
        self.s_min_start, self.anneal_kimg = float(s_min_start), float(anneal_kimg)

    def s_min(self, cur_nimg: float) -> float:
        frac = _anneal_fraction(cur_nimg, self.anneal_kimg)
        s_min = self.s_min_start + (self.min_scale - self.s_min_start) * frac  # Eq. 4: lerp
        return max(s_min, self.min_scale)  # a patch never has fewer image pixels than patch pixels

    def sample_scales(self, batch_size, cur_nimg, generator=None, device='cpu'):
        lo = self.s_min(cur_nimg)
        return lo + (1 - lo) * _uniform(batch_size, generator, device)

    def describe(self, cur_nimg):
        lo = self.s_min(cur_nimg)
        return dict(s_min=lo, mean_scale=(lo + 1) / 2)


class DiscretePatchSampler(PatchSampler):
    """s uniform over a fixed set of scales (default r/R * 2^k up to 1); no annealing."""

    kind = 'discrete'

    def __init__(
        self,
        img_resolution: int,  # R: full image resolution.
        patch_resolution: int,  # r: patch resolution.
        scales: list | None = None,  # Scales to draw from, each in [r/R, 1]; None = r/R * 2^k and 1.
        pixel_aligned: bool = False,  # Snap offsets to image pixel edges.
        group_size: int = 1,  # Share parameters within D's minibatch-stddev groups (1 = independent, Eq. 3).
    ):
        super().__init__(img_resolution, patch_resolution, pixel_aligned, group_size)
        if scales is None:
            scales, s = [], self.min_scale
            while s < 1 - 1e-9:
                scales.append(s)
                s *= 2
            scales.append(1.0)
        scales = [float(s) for s in scales]
        bad = [s for s in scales if not (self.min_scale - 1e-9 <= s <= 1 + 1e-9)]
        if len(scales) == 0 or bad:
            raise ValueError(
                f'discrete patch sampler: scales {scales} must be non-empty and in [r/R={self.min_scale}, 1]'
            )
        self.scales = scales

    def sample_scales(self, batch_size, cur_nimg, generator=None, device='cpu'):
        table = torch.tensor(
            self.scales, dtype=torch.float64, device=generator.device if generator is not None else device
        )
        u = _uniform(batch_size, generator, device)
        idx = torch.floor(u * len(self.scales)).long().clamp(max=len(self.scales) - 1)
        return table[idx]

    def describe(self, cur_nimg):
        return dict(num_scales=len(self.scales), mean_scale=sum(self.scales) / len(self.scales))


PATCH_SAMPLERS = {cls.kind: cls for cls in (BetaPatchSampler, UniformPatchSampler, DiscretePatchSampler)}


def make_patch_sampler(kind: str, img_resolution: int, patch_resolution: int, **kwargs):
    """Build a patch sampler by name: 'beta' (Eq. 5), 'uniform' (Eq. 4) or 'discrete'."""
    if kind not in PATCH_SAMPLERS:
        raise ValueError(f'unknown patch sampler kind {kind!r}: choose one of {sorted(PATCH_SAMPLERS)}')
    return PATCH_SAMPLERS[kind](img_resolution, patch_resolution, **kwargs)
