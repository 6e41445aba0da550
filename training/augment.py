"""Adaptive discriminator augmentation (ADA): an augmentation pipeline with one probability p, and the
controller that adapts p from the sign of D's outputs on real patches.

The pipeline holds the default geometric and colour transforms of ADA ('bgc' without x-flip: mirroring
is a dataset option that also flips yaw, Appendix B.1). Every transform is applied to each sample
independently with probability p, and reals and fakes go through the same pipeline, so they are
augmented identically in distribution. Geometric transforms are composed into one inverse affine map
and applied with a single bilinear resampling (reflection padding); colour transforms are composed into
one 4x4 affine colour matrix.
"""

import math

import numpy as np
import torch

from torch_utils import misc

LUMA_AXIS = (
    1 / math.sqrt(3),
    1 / math.sqrt(3),
    1 / math.sqrt(3),
)  # Grey axis of RGB, about which hue rotates.

# ----------------------------------------------------------------------------
# 3x3 (2D homogeneous) and 4x4 (RGB homogeneous) matrices, batched. [N, 3, 3] / [N, 4, 4]


def _eye(n: int, batch: int, device) -> torch.Tensor:
    return torch.eye(n, device=device).expand(batch, n, n).clone()


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(3, tx.shape[0], tx.device)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(3, sx.shape[0], sx.device)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(3, theta.shape[0], theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def translate3d(t: torch.Tensor) -> torch.Tensor:
    m = _eye(4, t.shape[0], t.device)
    m[:, :3, 3] = t[:, None]
    return m


def scale3d(s: torch.Tensor) -> torch.Tensor:
    m = _eye(4, s.shape[0], s.device)
    m[:, [0, 1, 2], [0, 1, 2]] = s[:, None]
    return m


def rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues rotation about a unit axis [3] by angles theta [N]."""
    vx, vy, vz = axis.tolist()
    cross = torch.tensor([[0, -vz, vy], [vz, 0, -vx], [-vy, vx, 0]], device=theta.device)
    outer = torch.outer(axis, axis)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    m = _eye(4, theta.shape[0], theta.device)
    m[:, :3, :3] = c * torch.eye(3, device=theta.device) + s * cross + (1 - c) * outer
    return m


# ----------------------------------------------------------------------------


class AugmentPipe(torch.nn.Module):
    """ADA's default pipeline minus x-flip; each transform fires per sample with probability p * its weight."""

    @misc.record_init_kwargs
    def __init__(
        self,
        rotate90=1.0,  # Weight of rotations by multiples of 90 degrees.
        xint=1.0,  # Weight of integer (whole-pixel) translation.
        scale=1.0,  # Weight of isotropic scaling.
        rotate=1.0,  # Weight of arbitrary rotation.
        aniso=1.0,  # Weight of anisotropic scaling.
        xfrac=1.0,  # Weight of fractional translation.
        brightness=1.0,  # Weight of brightness shift.
        contrast=1.0,  # Weight of contrast scaling.
        lumaflip=1.0,  # Weight of luma flip (reflection about the grey plane).
        hue=1.0,  # Weight of hue rotation.
        saturation=1.0,  # Weight of saturation scaling.
        xint_max=0.125,  # Largest integer translation, as a fraction of the image size.
        scale_std=0.2,  # Std of log2 of the isotropic scale.
        rotate_max=1.0,  # Largest rotation, as a fraction of a half turn.
        aniso_std=0.2,  # Std of log2 of the anisotropic scale.
        xfrac_std=0.125,  # Std of the fractional translation, as a fraction of the image size.
        brightness_std=0.2,  # Std of the brightness shift (images in [-1, 1]).
        contrast_std=0.5,  # Std of log2 of the contrast.
        hue_max=1.0,  # Largest hue rotation, as a fraction of a half turn.
        saturation_std=1.0,  # Std of log2 of the saturation.
        init_p=0.0,  # Initial augmentation probability.
    ):
        super().__init__()
        self.register_buffer(
            'p', torch.tensor(float(init_p))
        )  # Probability of each transform; ADA adapts it.
        # (sum, count) of sign(D(real)) since ADA's last adjustment: fed by the loss, read by AdaController.
        # A buffer, so it rides in the snapshot with p and a resumed run adjusts p exactly as it would have.
        self.register_buffer('real_signs', torch.zeros(2, dtype=torch.float64))
        self.weights = dict(
            rotate90=rotate90, xint=xint, scale=scale, rotate=rotate, aniso=aniso, xfrac=xfrac,
            brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue, saturation=saturation,
        )  # fmt: skip
        bad = {k: v for k, v in self.weights.items() if not (0 <= float(v) <= 1)}
        if bad:
            raise ValueError(f'AugmentPipe: transform weights {bad} must lie in [0, 1]')
        self.xint_max, self.scale_std, self.rotate_max, self.aniso_std = (
            xint_max,
            scale_std,
            rotate_max,
            aniso_std,
        )
        self.xfrac_std, self.brightness_std, self.contrast_std = xfrac_std, brightness_std, contrast_std
        self.hue_max, self.saturation_std = hue_max, saturation_std

    @torch.no_grad()
    def accumulate_real_signs(self, real_logits: torch.Tensor) -> None:
        """Add sign(D(real)) of one batch to `real_signs` (the loss calls this in Dmain; no GPU sync)."""
        signs = torch.sign(real_logits.detach()).to(torch.float64)
        self.real_signs += torch.stack([signs.sum(), torch.ones_like(signs).sum()]).to(self.real_signs.device)

    def _fires(self, name: str, batch: int, device, prob=None) -> torch.Tensor:
        """Per-sample Bernoulli(p * weight) mask as float. [N]"""
        prob = self.p * self.weights[name] if prob is None else prob
        return (torch.rand(batch, device=device) < prob).float()

    def _gaussian(self, name: str, std: float, batch: int, device) -> torch.Tensor:
        return torch.randn(batch, device=device) * std * self._fires(name, batch, device)

    def geometric_matrix(self, batch: int, width: int, device) -> torch.Tensor:
        """Inverse map (output -> input) in normalized [-1, 1] image coordinates. [N, 3, 3]"""
        g = _eye(3, batch, device)
        k = torch.floor(torch.rand(batch, device=device) * 4) * self._fires('rotate90', batch, device)
        g = g @ rotate2d(-k * math.pi / 2)
        t = (torch.rand(batch, 2, device=device) * 2 - 1) * self.xint_max  # fraction of the image size
        t = torch.round(t * width) / width * self._fires('xint', batch, device)[:, None]  # whole pixels
        g = g @ translate2d(-2 * t[:, 0], -2 * t[:, 1])  # normalized coordinates span 2 per image
        s = torch.exp2(self._gaussian('scale', self.scale_std, batch, device))
        g = g @ scale2d(1 / s, 1 / s)
        p_rot = 1 - torch.sqrt((1 - self.p * self.weights['rotate']).clamp(0, 1))  # two chances -> total p
        theta = (torch.rand(batch, device=device) * 2 - 1) * math.pi * self.rotate_max
        g = g @ rotate2d(-theta * self._fires('rotate', batch, device, p_rot))
        s = torch.exp2(self._gaussian('aniso', self.aniso_std, batch, device))
        g = g @ scale2d(1 / s, s)
        theta = (torch.rand(batch, device=device) * 2 - 1) * math.pi * self.rotate_max
        g = g @ rotate2d(-theta * self._fires('rotate', batch, device, p_rot))
        t = (
            torch.randn(batch, 2, device=device)
            * self.xfrac_std
            * self._fires('xfrac', batch, device)[:, None]
        )
        return g @ translate2d(-2 * t[:, 0], -2 * t[:, 1])

    def colour_matrix(self, batch: int, device) -> torch.Tensor:
        """Forward colour transform in homogeneous RGB. [N, 4, 4]"""
        v = torch.tensor(LUMA_AXIS, device=device)
        c = _eye(4, batch, device)
        c = translate3d(self._gaussian('brightness', self.brightness_std, batch, device)) @ c
        c = scale3d(torch.exp2(self._gaussian('contrast', self.contrast_std, batch, device))) @ c
        flip = torch.floor(torch.rand(batch, device=device) * 2) * self._fires('lumaflip', batch, device)
        householder = _eye(4, batch, device)
        householder[:, :3, :3] -= 2 * torch.outer(v, v) * flip[:, None, None]  # reflect about the grey plane
        c = householder @ c
        theta = (torch.rand(batch, device=device) * 2 - 1) * math.pi * self.hue_max
        c = rotate3d(v, theta * self._fires('hue', batch, device)) @ c
        s = torch.exp2(self._gaussian('saturation', self.saturation_std, batch, device))
        sat = _eye(4, batch, device)
        sat[:, :3, :3] = (
            torch.outer(v, v) + (torch.eye(3, device=device) - torch.outer(v, v)) * s[:, None, None]
        )
        return sat @ c

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment images [N, C, H, W] (float, in [-1, 1]); p = 0 returns them unchanged."""
        misc.assert_shape(images, [None, None, None, None])
        N, C, H, W = images.shape
        if float(self.p) <= 0:
            return images
        if H != W:
            raise ValueError(f'AugmentPipe: images must be square, got {H}x{W}')
        g = self.geometric_matrix(N, W, images.device)
        if not torch.equal(g, _eye(3, N, images.device)):
            # DEVIATION: one bilinear resampling at the patch resolution with reflection padding; ADA
            # resamples a 2x-upsampled, wavelet-filtered image (less aliasing under scaling/rotation). Both
            # reals and fakes go through the same resampling, so it adds no real/fake cue.
            theta = g[:, :2, :].to(images.dtype)  # [N, 2, 3]
            grid = torch.nn.functional.affine_grid(theta, [N, C, H, W], align_corners=False)
            images = torch.nn.functional.grid_sample(
                images, grid, mode='bilinear', padding_mode='reflection', align_corners=False
            )
        c = self.colour_matrix(N, images.device)
        if not torch.equal(c, _eye(4, N, images.device)):
            if C != 3:
                raise ValueError(
                    f'AugmentPipe: colour transforms need 3 channels, got {C}; set their weights to 0'
                )
            c = c.to(images.dtype)
            flat = images.reshape(N, C, H * W)  # [N, C, HW]
            images = (c[:, :3, :3] @ flat + c[:, :3, 3:]).reshape(N, C, H, W)
        return images


# ----------------------------------------------------------------------------


class AdaController:
    """Adapts the pipeline's p toward a target of r_t = E[sign(D(real))] (ADA's overfitting heuristic).

    The loss adds sign(D(real)) of every Dmain batch to `augment_pipe.real_signs`; every `interval` steps
    p += sign(r_t - target) * batch_size * interval / (speed_kimg * 1000), clamped to [0, 1], so p can
    go from 0 to 1 in `speed_kimg` kimg. Its own state (the step count) is plain data for checkpoints.
    """

    def __init__(
        self, *, target, interval, speed_kimg, batch_size
    ):  # --target, --ada-interval, --ada-kimg, --batch
        if not (0 < target < 1) or interval < 1 or speed_kimg <= 0 or batch_size < 1:
            raise ValueError(
                f'AdaController: need 0 < target < 1, interval >= 1, speed_kimg > 0, batch_size >= 1; '
                f'got target={target}, interval={interval}, speed_kimg={speed_kimg}, batch_size={batch_size}'
            )
        self.target, self.interval = target, interval
        self.speed_kimg, self.batch_size = speed_kimg, batch_size
        self.steps = 0
        self.last_rt = None  # r_t of the latest adjustment, for logging.

    def step(self, augment_pipe: AugmentPipe) -> float:
        """Call once per training step; adjusts augment_pipe.p every `interval` steps. Returns p."""
        self.steps += 1
        if self.steps % self.interval != 0:
            return float(augment_pipe.p)
        totals = augment_pipe.real_signs.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)  # every rank sees the same r_t and so keeps the same p
        augment_pipe.real_signs.zero_()
        if totals[1] == 0:
            raise RuntimeError(
                'AdaController: no sign(D(real)) was recorded; give the same AugmentPipe to PatchLoss '
                '(augment_pipe=...) so that its Dmain phase feeds it'
            )
        self.last_rt = float(totals[0] / totals[1])
        adjust = (
            np.sign(self.last_rt - self.target) * self.batch_size * self.interval / (self.speed_kimg * 1000)
        )
        new_p = float(np.clip(float(augment_pipe.p) + adjust, 0, 1))  # DEVIATION: ADA clamps only at 0
        augment_pipe.p.fill_(new_p)
        return new_p

    def state_dict(self) -> dict:
        return dict(steps=self.steps, last_rt=self.last_rt)

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.last_rt = int(state['steps']), state['last_rt']
