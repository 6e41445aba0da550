"""Scale/location-aware patch discriminator (Sec. 3.2, Fig. 2, Appendix B.1).

A StyleGAN2 residual discriminator that sees r x r patches but keeps as many blocks as a discriminator
of the full R x R image: the first log2(R/r) blocks run at the patch resolution without downsampling
(at 256/64: blocks at 64, 64, 64, 32, 16, 8 -> 4x4 epilogue), and every block keeps the channel width
of the full-resolution block it stands for. A hypernetwork of the patch parameters (s, dx, dy)
(training/networks/hypernet.py) scales D's filters (Eq. 2, 7): `hyper_mod_mode='input'` (default: lower FID at
demo scale) the input channels of each block's resampling conv (the public code; one modulated layer
per block, as Fig. 7's layer indices suggest), 'output' the outputs of every conv (Eq. 2 read
literally); `hyper_mod=False`
gives the standard discriminator. The projection head is conditioned on the same patch embedding
(Sec. 3.2), and optionally on (yaw, pitch) (B.1) and a class label.
"""

import math

import numpy as np
import torch

from torch_utils import misc
from torch_utils import precision as precision_lib
from torch_utils.ops import bias_act, conv2d_resample
from training.networks.hypernet import ConditionMLP, HyperNetwork, PatchEmbedding
from training.networks.layers import Conv2dLayer, FourierFeatures, FullyConnectedLayer

# ----------------------------------------------------------------------------


class HyperConv2dLayer(Conv2dLayer):
    """Conv2dLayer whose output channels may be scaled per sample by sigma before bias and activation.

    Eq. 2: y = sigma * conv2d(W, x), which equals conv2d(W * sigma, x) (Eq. 1) at a fraction of the cost;
    the bias is added after the scaling, so it is not modulated (Eq. 1 scales only W).
    """

    def forward(self, x, sigma=None, gain=1):
        if sigma is None:
            return super().forward(x, gain=gain)
        misc.assert_shape(x, [None, self.in_channels, None, None])
        misc.assert_shape(sigma, [x.shape[0], self.out_channels])
        w = self.weight * self.weight_gain
        x = conv2d_resample.conv2d_resample(
            x, w.to(x.dtype), self.resample_filter, down=self.down, padding=self.padding
        )
        x = x * sigma.to(x.dtype)[:, :, None, None]  # Eq. 2: [N, C, 1, 1] scales the raw conv output
        b = self.bias.to(x.dtype) if self.bias is not None else None
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class DiscriminatorBlock(torch.nn.Module):
    """Residual block: [fromrgb] -> conv0 -> conv1 (down) plus a 1x1 skip (down), each branch * sqrt(1/2)."""

    def __init__(
        self, in_channels, tmp_channels, out_channels, img_channels, down, use_fp16, conv_clamp, hyper_mode
    ):
        super().__init__()
        self.in_channels, self.use_fp16, self.hyper_mode = in_channels, use_fp16, hyper_mode
        clamp = conv_clamp if use_fp16 else None  # clamping keeps fp16 activations finite
        if in_channels == 0:
            self.fromrgb = HyperConv2dLayer(
                img_channels, tmp_channels, 1, activation='lrelu', conv_clamp=clamp
            )
        self.conv0 = HyperConv2dLayer(tmp_channels, tmp_channels, 3, activation='lrelu', conv_clamp=clamp)
        self.conv1 = HyperConv2dLayer(
            tmp_channels, out_channels, 3, activation='lrelu', down=down, conv_clamp=clamp
        )
        self.skip = HyperConv2dLayer(tmp_channels, out_channels, 1, bias=False, down=down)

    def modulated_channels(self) -> dict:
        """{layer name: channels its sigma scales} for the current hyper_mode ({} when not modulated)."""
        if self.hyper_mode == 'output':  # Eq. 2: every conv layer, on its output channels
            names = (['fromrgb'] if self.in_channels == 0 else []) + ['conv0', 'conv1', 'skip']
            return {name: getattr(self, name).out_channels for name in names}
        if self.hyper_mode == 'input':  # public-code variant: the input channels of the resampling conv
            return {'conv1_in': self.conv1.in_channels}
        return {}

    def forward(self, x, img, sigmas: dict):
        use_fp16 = self.use_fp16 and img.device.type == 'cuda'  # fp16 only where it is fast and supported
        dtype = torch.float16 if use_fp16 else self.conv0.weight.dtype
        if self.in_channels == 0:
            # channels_last: oneDNN's native layout, so its convs skip two layout reorders per call (D's
            # forward+backward at demo size: -10..20 %); elementwise ops and the convs keep it downstream.
            img = img.to(dtype, memory_format=torch.channels_last)
            x = self.fromrgb(img, sigmas.get('fromrgb'))
        else:
            x = x.to(dtype)
        y = self.skip(x, sigmas.get('skip'), gain=np.sqrt(0.5))
        x = self.conv0(x, sigmas.get('conv0'))
        if 'conv1_in' in sigmas:
            x = (
                x * sigmas['conv1_in'].to(dtype)[:, :, None, None]
            )  # hyper_mod_mode='input': 1 + tanh(.) on conv1's input
        x = self.conv1(x, sigmas.get('conv1'), gain=np.sqrt(0.5))
        return y.add_(x)


def minibatch_stddev(x: torch.Tensor, group_size: int, num_channels: int) -> torch.Tensor:
    """Append the std over groups of samples (mean over features) as `num_channels` extra maps."""
    N, C, H, W = x.shape
    G = min(group_size, N)
    if N % G != 0:
        raise ValueError(f'PatchDiscriminator: batch size {N} must be divisible by mbstd_group_size {G}')
    F = num_channels
    y = x.reshape(G, -1, F, C // F, H, W)  # [G, n, F, c, H, W]; sample i is in group i % n
    y = (y - y.mean(dim=0)).square().mean(dim=0)  # [n, F, c, H, W] variance over the group
    y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])  # [n, F]
    y = y.reshape(-1, F, 1, 1).repeat(G, 1, H, W)  # [N, F, H, W]
    return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(torch.nn.Module):
    """4x4: minibatch-stddev -> conv -> fc -> out, with projection onto cmap when conditioned."""

    def __init__(self, in_channels, cmap_dim, mbstd_group_size, mbstd_num_channels, conv_clamp):
        super().__init__()
        self.in_channels, self.cmap_dim = in_channels, cmap_dim
        self.mbstd_group_size, self.mbstd_num_channels = mbstd_group_size, mbstd_num_channels
        mbstd_channels = mbstd_num_channels if mbstd_group_size > 1 else 0
        self.conv = HyperConv2dLayer(in_channels + mbstd_channels, in_channels, 3, activation='lrelu')
        self.fc = FullyConnectedLayer(in_channels * 16, in_channels, activation='lrelu')
        self.out = FullyConnectedLayer(in_channels, max(cmap_dim, 1))

    def forward(self, x, cmap, sigma=None):
        misc.assert_shape(x, [None, self.in_channels, 4, 4])
        x = x.to(self.fc.weight.dtype)
        if self.mbstd_group_size > 1:
            x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = self.conv(x, sigma)
        x = self.out(self.fc(x.flatten(1)))  # [N, cmap_dim or 1]
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) / np.sqrt(self.cmap_dim)  # projection conditioning
        return x


class ConditionMapping(torch.nn.Module):
    """Projection-head conditioning -> cmap [N, cmap_dim]: the mapping-network structure (ConditionMLP) over

    [Fourier(yaw, pitch) with dropout | the shared patch embedding], whichever are on, and the one-hot
    class embedded on its own (ConditionMLP's c_dim).
    """

    def __init__(self, camera_cond, patch_features, c_dim, cmap_dim, camera_num_freqs, camera_dropout,
                 num_layers, lr_multiplier):  # fmt: skip
        super().__init__()
        self.camera_cond, self.patch_features, self.c_dim = camera_cond, patch_features, c_dim
        in_features = patch_features
        if camera_cond:  # integer harmonics 1, 2, 4, ... of the angles: periodic in 2 pi
            self.camera_fourier = FourierFeatures(2, camera_num_freqs, min_freq=1 / (2 * math.pi))
            self.camera_dropout = torch.nn.Dropout(camera_dropout)  # App. B.1: keeps D off 3D dataset biases
            in_features += self.camera_fourier.out_features
        self.mlp = ConditionMLP(in_features, cmap_dim, num_layers, lr_multiplier, c_dim=c_dim)

    def forward(self, camera_angles, patch_embedding, c):
        dtype = self.mlp.dtype
        parts = []
        if self.camera_cond:
            parts.append(self.camera_dropout(self.camera_fourier(camera_angles.to(dtype))))
        if self.patch_features > 0:
            parts.append(patch_embedding.to(dtype))
        features = torch.cat(parts, dim=1) if parts else None
        return self.mlp(features, c)  # [N, cmap_dim]; c is read only when c_dim > 0


# ----------------------------------------------------------------------------


def _check_resolutions(img_resolution, patch_resolution):
    for name, res in [('img_resolution', img_resolution), ('patch_resolution', patch_resolution)]:
        if res < 8 or res & (res - 1):
            raise ValueError(f'PatchDiscriminator: {name}={res} must be a power of two >= 8')
    if patch_resolution > img_resolution:
        raise ValueError(
            f'PatchDiscriminator: patch_resolution={patch_resolution} exceeds img_resolution={img_resolution}'
        )


class PatchDiscriminator(torch.nn.Module):
    """D(img [N, C, r, r], patch_params [N, 3], camera_angles [N, 2] or None, c [N, c_dim]) -> logits [N, 1]."""

    @misc.record_init_kwargs
    def __init__(
        self,
        img_resolution,  # R: resolution of the full images the patches come from.
        patch_resolution,  # r: resolution of the patches D sees.
        img_channels=3,  # Number of image channels.
        channel_base=32768,  # Channels of a block at virtual resolution v: min(channel_base // v, channel_max).
        channel_max=512,  # Largest number of channels in any block.
        num_fp16_res=4,  # Run the blocks of the 4 highest virtual resolutions in fp16 (on CUDA only).
        conv_clamp=256,  # Clamp the outputs of fp16 convs to +-conv_clamp; None = off.
        mbstd_group_size=4,  # Group size of the minibatch-stddev layer; 1 = off.
        mbstd_num_channels=1,  # Feature maps the minibatch-stddev layer appends.
        hyper_mod=True,  # Modulate the conv layers with the patch hypernetwork (Sec. 3.2); False = standard D.
        hyper_mod_mode='input',  # 'input': conv1's input channels per block (public code); 'output': Eq. 2.
        hyper_dim=512,  # Width of the hypernetwork and of p.
        hyper_num_layers=2,  # Layers of the hypernetwork MLP.
        hyper_lr_multiplier=0.01,  # Learning-rate multiplier of the hypernetwork MLP (B.1: mapping network's).
        hyper_adapter_init=1.0,  # Initial scale of the adapters W_l (1: public code; 0: sigma = 1 at init).
        hyper_table_dim=256,  # Learned table width per patch scalar (embedding 3 * (256 + 20) = 828).
        hyper_num_freqs=10,  # Sin/cos pairs per patch scalar.
        camera_cond=False,  # Condition on (yaw, pitch) by projection (App. B.1; FFHQ and Cats).
        camera_num_freqs=6,  # Harmonics of the angles in the camera Fourier features.
        camera_dropout=0.5,  # Dropout on the camera features (App. B.1).
        patch_cond=True,  # Feed the patch embedding to the projection head too (Sec. 3.2).
        c_dim=0,  # Number of classes for class-conditional projection (0 = unconditional).
        cmap_dim=None,  # Width of the conditioning vector; None = the epilogue's channels (public code).
        cond_num_layers=2,  # Layers of the conditioning MLP.
        precision='fp16',  # Conv blocks: fp16 = the num_fp16_res highest in fp16 on CUDA (paper) | bf16 = all in bf16 | fp32.
        cond_lr_multiplier=0.01,  # Learning-rate multiplier of the conditioning MLP (mapping network's).
    ):
        super().__init__()
        self.precision = precision  # the hypernetwork, conditioning and epilogue always run in fp32
        num_fp16_res = num_fp16_res if precision == 'fp16' else 0
        _check_resolutions(img_resolution, patch_resolution)
        if hyper_mod_mode not in ('output', 'input'):
            raise ValueError(
                f"PatchDiscriminator: hyper_mod_mode={hyper_mod_mode!r} must be 'output' or 'input'"
            )
        self.img_resolution, self.patch_resolution = img_resolution, patch_resolution
        self.img_channels, self.hyper_mod, self.hyper_mod_mode = img_channels, hyper_mod, hyper_mod_mode
        self.camera_cond, self.patch_cond, self.c_dim = camera_cond, patch_cond, c_dim
        channels = lambda v: min(channel_base // v, channel_max)  # noqa: E731
        cmap_dim = channels(4) if cmap_dim is None else cmap_dim
        self.blocks = self._build_blocks(channels, num_fp16_res, conv_clamp)
        # One patch embedding, shared by H and the projection head (Sec. 3.2, as in the public code).
        self.patch_embed = None
        if hyper_mod or patch_cond:
            self.patch_embed = PatchEmbedding(table_dim=hyper_table_dim, num_freqs=hyper_num_freqs)
        has_cond = camera_cond or patch_cond or c_dim > 0
        self.mapping = None
        if has_cond:
            patch_features = self.patch_embed.out_features if patch_cond else 0
            cond = (cmap_dim, camera_num_freqs, camera_dropout, cond_num_layers, cond_lr_multiplier)
            self.mapping = ConditionMapping(camera_cond, patch_features, c_dim, *cond)
        self.epilogue = DiscriminatorEpilogue(
            channels(4), cmap_dim if has_cond else 0, mbstd_group_size, mbstd_num_channels, conv_clamp
        )
        self.hyper = None
        if hyper_mod:
            hyper = (self.patch_embed.out_features, hyper_dim, hyper_num_layers, hyper_lr_multiplier)
            self.hyper = HyperNetwork(self.modulated_channels(), *hyper, adapter_init=hyper_adapter_init)

    def _build_blocks(self, channels, num_fp16_res, conv_clamp) -> torch.nn.ModuleList:
        """One block per block of a full-resolution D, each with that block's channel widths.

        Block i stands for the full-resolution block at virtual resolution v = R / 2^i; it runs at
        min(v, r) and downsamples only once v <= r (at 256/64: 64, 64, 64, 32, 16, 8 -> 4).
        """
        R, r = self.img_resolution, self.patch_resolution
        fp16_resolution = max(2 ** (int(np.log2(R)) + 1 - num_fp16_res), 8)
        virtual = [R // 2**i for i in range(int(np.log2(R)) - 2)]  # R, R/2, ..., 8
        self.block_resolutions = [min(v, r) for v in virtual]  # spatial input resolution of each block
        blocks = torch.nn.ModuleList()
        for i, v in enumerate(virtual):
            block = DiscriminatorBlock(
                in_channels=channels(v) if i > 0 else 0,
                tmp_channels=channels(v),
                out_channels=channels(v // 2),
                img_channels=self.img_channels,
                down=2 if v <= r else 1,  # the log2(R/r) extra blocks keep the patch resolution
                use_fp16=v >= fp16_resolution,
                conv_clamp=conv_clamp,
                hyper_mode=self.hyper_mod_mode if self.hyper_mod else None,
            )
            blocks.append(block)
        return blocks

    def modulated_channels(self) -> dict:
        """{'blocks.i.layer' or 'epilogue.conv': channels} of every layer the hypernetwork modulates."""
        out = {}
        for i, block in enumerate(self.blocks):
            out.update({f'blocks.{i}.{name}': c for name, c in block.modulated_channels().items()})
        if self.hyper_mod and self.hyper_mod_mode == 'output':
            out['epilogue.conv'] = self.epilogue.conv.out_channels
        return out

    def modulations(self, patch_params: torch.Tensor) -> dict:
        """{layer name: sigma [N, c]} (Eq. 7); empty for the standard D."""
        if self.hyper is None:
            return {}
        return self.hyper(self.patch_embed(patch_params.to(self.epilogue.fc.weight.dtype)))

    def _check_inputs(self, img, patch_params, camera_angles, c):
        N, r = img.shape[0], self.patch_resolution
        misc.assert_shape(img, [N, self.img_channels, r, r])
        misc.assert_shape(patch_params, [N, 3])
        if self.camera_cond:
            if camera_angles is None:
                raise ValueError(
                    'PatchDiscriminator: camera_cond=True needs camera_angles [N, 2] (yaw, pitch)'
                )
            misc.assert_shape(camera_angles, [N, 2])
        if self.c_dim > 0:
            if c is None:
                raise ValueError(
                    f'PatchDiscriminator: c_dim={self.c_dim} needs class labels c [N, {self.c_dim}]'
                )
            misc.assert_shape(c, [N, self.c_dim])

    def forward(self, img, patch_params, camera_angles=None, c=None, update_emas=False):
        del update_emas  # D keeps no running averages; the argument mirrors G's interface.
        self._check_inputs(img, patch_params, camera_angles, c)
        dtype = self.epilogue.fc.weight.dtype
        embedding = self.patch_embed(patch_params.to(dtype)) if self.patch_embed is not None else None
        sigmas = self.hyper(embedding) if self.hyper is not None else {}
        x = None
        with precision_lib.autocast(img.device, 'bf16' if self.precision == 'bf16' else 'fp32'):
            for i, block in enumerate(self.blocks):
                prefix = f'blocks.{i}.'
                block_sigmas = {k[len(prefix) :]: v for k, v in sigmas.items() if k.startswith(prefix)}
                x = block(x, img, block_sigmas)
        x = x.to(img.dtype)  # back from the blocks' compute dtype
        cmap = self.mapping(camera_angles, embedding, c) if self.mapping is not None else None
        return self.epilogue(x, cmap, sigmas.get('epilogue.conv'))  # [N, 1]
