"""Losses of PGRF: non-saturating logistic GAN loss on patches (Eq. 6) and lazy R1 on real patches.

The training loop calls `PatchLoss.accumulate_gradients` once per phase: Gmain (G's adversarial loss),
Dmain (D's adversarial loss), Dreg (R1, every `reg_interval` D steps with gain = reg_interval) or Dboth
(both at once). Reals and fakes reach D through the same path: the same optional blur (faded out early in
training) and the same augmentation pipeline.
"""

import numpy as np
import torch

from torch_utils import misc, training_stats
from torch_utils.ops import conv2d_gradfix, upfirdn2d
from training.augment import AugmentPipe
from training.cameras import camera_to_angles

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable blur with the public code's kernel exp2(-(x / sigma)^2) (a Gaussian of std sigma / sqrt(2 ln 2)
    ~= 0.85 sigma), taps |x| <= floor(3 sigma), normalised to sum 1, zero padded to keep the size."""
    radius = int(np.floor(3 * sigma)) if sigma > 0 else 0
    if radius < 1:
        return images
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    f = torch.exp2(-(x / sigma).square())
    return upfirdn2d.filter2d(images, f / f.sum())


def class_kwargs(c) -> dict:
    """{'c': c} for class-conditional G and D, {} otherwise (unconditional modules need not take c)."""
    return {} if c is None else dict(c=c)


def r1_penalty(D, real_patches, real_patch_params, real_angles=None, preprocess=None, real_c=None):
    """R1: ||grad_x D(x)||^2 per sample, w.r.t. the real patch pixels (before blur/augmentation), with D
    conditioned on the reals' own classes `real_c` (one-hot, or None when unconditional). [N]

    Returns (penalty [N], logits [N, 1]); the penalty stays differentiable w.r.t. D's weights.
    """
    real = real_patches.detach().requires_grad_(True)
    x = preprocess(real) if preprocess is not None else real
    logits = D(x, real_patch_params, real_angles, **class_kwargs(real_c))
    with conv2d_gradfix.no_weight_gradients():  # the first backward needs input gradients only
        (grad,) = torch.autograd.grad(
            outputs=[logits.sum()], inputs=[real], create_graph=True, only_inputs=True
        )
    return grad.square().sum(dim=[1, 2, 3]), logits


class PatchLoss:
    """Non-saturating logistic loss for G and D on patches, with lazy R1 (gamma 0.05 as in Sec. 3.4)."""

    def __init__(
        self,
        device,  # Device of the computation.
        G,  # Generator: G(z, camera, patch_params=..., **gen_kwargs).image -> [N, 3, r, r].
        D,  # PatchDiscriminator: D(img, patch_params, camera_angles) -> [N, 1].
        augment_pipe=None,  # AugmentPipe applied to real and fake patches alike; None = off.
        *,
        r1_gamma,  # R1 weight, a number >= 0: the --gamma option (derive resolves its 'auto').
        blur_init_sigma,  # Blur sigma (patch pixels, exp2 kernel) of D's inputs at cur_nimg = 0; 0 = off (--blur-sigma).
        blur_fade_kimg=200,  # The blur fades linearly to 0 over this many kimg (public code: 10 over 200).
    ):
        self.device, self.G, self.D = device, G, D
        self.augment_pipe = augment_pipe
        if isinstance(r1_gamma, (str, bool)) or not r1_gamma >= 0:
            raise ValueError(f'PatchLoss: r1_gamma={r1_gamma!r} must be a number >= 0')
        self.r1_gamma = float(r1_gamma)
        self.blur_init_sigma, self.blur_fade_kimg = float(blur_init_sigma), float(blur_fade_kimg)

    def blur_sigma(self, cur_nimg: float) -> float:
        """Blur std at cur_nimg: linear fade from blur_init_sigma to 0 over blur_fade_kimg."""
        if self.blur_fade_kimg <= 0:
            return 0.0
        return self.blur_init_sigma * max(1 - cur_nimg / (self.blur_fade_kimg * 1e3), 0.0)

    def preprocess(self, images: torch.Tensor, blur_sigma: float) -> torch.Tensor:
        """What D sees, identical for reals and fakes: blur, then augmentation."""
        images = gaussian_blur(images, blur_sigma)
        if self.augment_pipe is not None:
            images = self.augment_pipe(images)
        return images

    def run_G(self, z, camera, patch_params, gen_kwargs, c=None):
        return self.G(z, camera, patch_params=patch_params, **(gen_kwargs or {}), **class_kwargs(c)).image

    def run_D(self, images, patch_params, angles, blur_sigma, c=None):
        return self.D(self.preprocess(images, blur_sigma), patch_params, angles, **class_kwargs(c))

    def accumulate_gradients(
        self, phase, real_patches, real_patch_params, real_angles, gen_z, gen_camera, gen_patch_params,
        gain, cur_nimg, gen_kwargs=None, real_c=None, gen_c=None, gen_images=None, keep_fakes=None,
    ):  # fmt: skip
        """Add this phase's gradients (times `gain`) to the .grad of G's or D's parameters.

        real_c / gen_c: one-hot classes [N, c_dim] of the reals and of the fakes (class-conditional G and D
        both see gen_c), or None when unconditional.
        gen_images: Dmain's fake patches already rendered from these inputs (Gmain's, kept by `keep_fakes`,
        a list the detached fakes are appended to): D trains on them instead of rendering G again.

        Returns the phase's loss (a detached scalar, before `gain`) so the caller can detect divergence.
        """
        if phase not in PHASES:
            raise ValueError(f'PatchLoss: unknown phase {phase!r}; expected one of {PHASES}')
        N = gen_z.shape[0]
        misc.assert_shape(gen_patch_params, [N, 3])
        blur_sigma = self.blur_sigma(cur_nimg)
        gen_angles = self.camera_angles(gen_camera)
        gen = (gen_z, gen_camera, gen_patch_params, gen_angles, gain, blur_sigma, gen_kwargs, gen_c)
        total = torch.zeros([], device=gen_z.device)
        if phase in ('Gmain', 'Gboth'):
            total = total + self.accumulate_G(*gen, keep_fakes=keep_fakes).mean()
        loss_fake = self.accumulate_D_fake(*gen, images=gen_images) if phase in ('Dmain', 'Dboth') else None
        do_r1 = phase in ('Dreg', 'Dboth') and self.r1_gamma > 0
        if loss_fake is not None or do_r1:
            misc.assert_shape(real_patch_params, [real_patches.shape[0], 3])
            real = (real_patches, real_patch_params, real_angles, gain, blur_sigma, real_c)
            total = total + self.accumulate_D_real(*real, loss_fake, do_r1)
        # Greg: PGRF has no generator regularizer (no path-length penalty), so it adds nothing.
        return total.detach()

    @staticmethod
    def camera_angles(camera):
        """(yaw, pitch) [N, 2] of a Camera, the form D's camera conditioning takes."""
        if camera is None:
            return None
        yaw, pitch, _ = camera_to_angles(camera.cam2world)
        return torch.stack([yaw, pitch], dim=1)

    def accumulate_G(self, z, camera, patch_params, angles, gain, blur_sigma, gen_kwargs, c, keep_fakes=None):
        with misc.requires_grad(self.D, False):  # G's loss trains G only
            fake = self.run_G(z, camera, patch_params, gen_kwargs, c)
            if keep_fakes is not None:
                keep_fakes.append(fake.detach())
            logits = self.run_D(fake, patch_params, angles, blur_sigma, c)
            loss = torch.nn.functional.softplus(-logits)  # Eq. 6, non-saturating: -log sigmoid(D(G(z)))
            training_stats.report('Loss/scores/fake', logits)
            training_stats.report('Loss/signs/fake', logits.sign())
            training_stats.report('Loss/G/loss', loss)
            loss.mean().mul(gain).backward()
        return loss.detach()

    def accumulate_D_fake(
        self, z, camera, patch_params, angles, gain, blur_sigma, gen_kwargs, c, images=None
    ):
        fake = images
        if fake is None:
            with torch.no_grad():  # D's loss trains D only; no graph through G
                fake = self.run_G(z, camera, patch_params, gen_kwargs, c)
        logits = self.run_D(fake, patch_params, angles, blur_sigma, c)
        loss = torch.nn.functional.softplus(logits)  # -log(1 - sigmoid(D(G(z))))
        training_stats.report('Loss/scores/fake', logits)
        training_stats.report('Loss/signs/fake', logits.sign())
        loss.mean().mul(gain).backward()
        return loss.detach()

    def accumulate_D_real(self, real, patch_params, angles, gain, blur_sigma, c, loss_fake, do_r1):
        """Dmain's real half (when loss_fake, its fake half's per-sample loss, is given) and/or R1."""
        preprocess = lambda x: self.preprocess(x, blur_sigma)  # noqa: E731
        if do_r1:
            penalty, logits = r1_penalty(self.D, real, patch_params, angles, preprocess, real_c=c)
        else:
            logits = self.D(preprocess(real.detach()), patch_params, angles, **class_kwargs(c))
        loss = logits * 0  # keeps D's output in the graph so DDP sees every parameter used
        total = torch.zeros([], device=logits.device)
        if loss_fake is not None:
            loss_real = torch.nn.functional.softplus(-logits)  # -log sigmoid(D(x))
            training_stats.report('Loss/scores/real', logits)
            training_stats.report('Loss/signs/real', logits.sign())
            training_stats.report('Loss/D/loss', loss_fake + loss_real)
            total = total + loss_fake.mean() + loss_real.detach().mean()
            if isinstance(self.augment_pipe, AugmentPipe):
                self.augment_pipe.accumulate_real_signs(logits)  # ADA's overfitting signal r_t
            loss = loss + loss_real
        if do_r1:
            loss_r1 = penalty[:, None] * (self.r1_gamma / 2)
            training_stats.report('Loss/r1_penalty', penalty)
            training_stats.report('Loss/D/reg', loss_r1)
            total = total + loss_r1.detach().mean()
            loss = loss + loss_r1
        loss.mean().mul(gain).backward()
        return total
