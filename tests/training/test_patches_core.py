import torch

from training import patches


def test_full_patch_hits_every_pixel_centre():
    R = 8
    uv = patches.patch_pixel_centres(patches.full_image_patch_params(1), R)
    expected = (torch.arange(R) + 0.5) / R
    assert torch.allclose(uv[0, 0, :, 0], expected) and torch.allclose(uv[0, :, 0, 1], expected)


def test_full_patch_crop_is_identity():
    images = torch.randn(2, 3, 16, 16)
    crop = patches.crop_patches(images, patches.full_image_patch_params(2), 16)
    assert torch.allclose(crop, images, atol=1e-5)


def test_aligned_patch_equals_plain_crop():
    R, r = 32, 8
    images = torch.randn(2, 3, R, R)
    params = torch.tensor([[r / R, 5 / R, 12 / R], [r / R, 0.0, 24 / R]])
    crop = patches.crop_patches(images, params, r)
    assert torch.allclose(crop[0], images[0, :, 12:20, 5:13], atol=1e-5)
    assert torch.allclose(crop[1], images[1, :, 24:32, 0:8], atol=1e-5)


def test_crop_is_differentiable_wrt_images():
    images = torch.randn(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    params = torch.tensor([[0.55, 0.2, 0.3]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: patches.crop_patches(x, params, 4), (images,))
