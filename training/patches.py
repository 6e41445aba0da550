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
