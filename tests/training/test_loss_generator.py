"""PatchLoss with the real Generator (tiny config): every phase runs and trains only its own network."""

import torch

from training import cameras, patches
from training.augment import AdaController, AugmentPipe
from training.loss import PatchLoss
from training.networks.discriminator import PatchDiscriminator
from training.networks.generator import Generator

TINY_G = dict(
    z_dim=8, w_dim=8, img_resolution=16, patch_resolution=8, plane_resolution=16, plane_channels=4,
    channel_base=64, channel_max=8, decoder_hidden=8, num_coarse=4, num_fine=4, scene_bounds=0.5,
    ray_start=0.5, ray_end=1.5, checkpoint_res=None,
)  # fmt: skip
TINY_D = dict(
    img_resolution=16, patch_resolution=8, channel_base=32, channel_max=4, hyper_dim=8, hyper_table_dim=4
)


def test_all_phases_with_the_generator_and_ada():
    torch.manual_seed(0)
    G, D = Generator(**TINY_G), PatchDiscriminator(**TINY_D, camera_cond=True)
    pipe, ada = AugmentPipe(init_p=0.5), AdaController(target=0.6, interval=1, speed_kimg=1, batch_size=4)
    loss = PatchLoss('cpu', G, D, augment_pipe=pipe, r1_gamma=1.0, blur_init_sigma=1.0, blur_fade_kimg=1)
    sampler = patches.make_patch_sampler('beta', 16, 8, group_size=4, beta_end=0.8, anneal_kimg=10000)
    images = torch.rand(4, 3, 16, 16) * 2 - 1
    real_params, gen_params = sampler.sample(4, 0), sampler.sample(4, 0)
    camera = cameras.angles_to_camera(torch.tensor([0.1, -0.2, 0.3, 0.0]), torch.full([4], 1.5), 1.0, 50.0)
    batch = dict(
        real_patches=patches.crop_patches(images, real_params, 8), real_patch_params=real_params,
        real_angles=torch.tensor([[0.1, 1.5]]).repeat(4, 1), gen_z=torch.randn(4, 8), gen_camera=camera,
        gen_patch_params=gen_params, cur_nimg=0, gen_kwargs=dict(density_noise_std=0.1),
    )  # fmt: skip
    for phase, trained, frozen in [('Gmain', G, D), ('Dmain', D, G), ('Dreg', D, G)]:
        for m in (G, D):
            m.zero_grad(set_to_none=True)
        value = loss.accumulate_gradients(phase, **batch, gain=1)
        assert torch.isfinite(value)
        grads = [p.grad for p in trained.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), phase
        assert sum(float(g.abs().sum()) for g in grads) > 0, phase
        assert all(p.grad is None for p in frozen.parameters()), phase
    p_before = float(pipe.p)
    assert ada.step(pipe) != p_before  # Dmain fed the pipe with sign(D(real))
