"""The generator: mapping z -> w, tri-plane synthesis w -> planes, and pure volume rendering of any patch.

Paper §3.1 / Appendix B: z, w in R^512; a 2-layer mapping network; three 32-channel 512^2 planes from a
StyleGAN2 skip generator in fp32; a tiny MLP decoder (32 -> 64 -> 4) with softplus density; 48 + 48
samples per ray (hierarchical); patches of r = 64 pixels of images of resolution R; an optional NeRF++
background. No 2D upsampler: a 64^2 patch, a 512^2 image and a 256^3 density grid come from the same field.

Schedules (density noise) are computed from `cur_nimg` by the caller and passed in: no module state
changes inside `forward` (except the explicit `update_emas=True` of the w average, as in StyleGAN2).
"""

import torch
import torch.utils.checkpoint

from torch_utils import misc
from training import rendering
from training.networks.background import BackgroundMLP
from training.networks.layers import FullyConnectedLayer
from training.networks.synthesis import TriPlaneSynthesis
from training.networks.triplane import TriPlaneDecoder, activate_outputs, density_noise_std
from training.patches import full_image_patch_params
from training.rendering import RenderOutput  # noqa: F401 (re-exported: G returns it)

__all__ = ['Generator', 'MappingNetwork', 'RenderOutput', 'density_noise_std', 'one_hot_classes']


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2)) per row: the mapping network's input normalisation (StyleGAN2)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(torch.nn.Module):
    """(z, c) -> w: normalize z, FC layers with leaky ReLU (lr multiplier 0.01), tracked w average, truncation.

    Class-conditional (c_dim > 0, StyleGAN2's recipe): a linear FC embeds the one-hot class c into w_dim
    features; z and the embedding are each 2nd-moment normalised and concatenated before the FC layers.
    With c_dim = 0 the network, its parameter names and its outputs are the unconditional ones.
    """

    @misc.record_init_kwargs
    def __init__(
        self,
        z_dim: int = 512,               # Input latent dimensionality.
        w_dim: int = 512,               # Output latent dimensionality.
        num_ws: int = 16,               # Number of copies of w to output.
        num_layers: int = 2,            # Number of FC layers (paper: 2).
        lr_multiplier: float = 0.01,    # Learning-rate multiplier of the FC layers.
        w_avg_beta: float = 0.998,      # Decay of the tracked average of w (for truncation).
        c_dim: int = 0,                 # Number of classes (one-hot c); 0 = unconditional.
    ):  # fmt: skip
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        self.c_dim = c_dim
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, w_dim)  # linear, at the full learning rate (StyleGAN2)
        dims = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        self.layers = torch.nn.ModuleList(
            FullyConnectedLayer(a, b, activation='lrelu', lr_multiplier=lr_multiplier)
            for a, b in zip(dims[:-1], dims[1:])
        )
        self.register_buffer('w_avg', torch.zeros(w_dim))

    def forward(self, z, truncation_psi=1, truncation_cutoff=None, update_emas=False, c=None):
        misc.assert_shape(z, [None, self.z_dim])
        x = normalize_2nd_moment(z)
        if self.c_dim > 0:
            if c is None:
                raise ValueError(
                    f'MappingNetwork: c_dim={self.c_dim} (a class-conditional G) needs class labels c '
                    f'[N, {self.c_dim}] (one-hot; see training.networks.generator.one_hot_classes)'
                )
            misc.assert_shape(c, [z.shape[0], self.c_dim])
            x = torch.cat([x, normalize_2nd_moment(self.embed(c.to(torch.float32)))], dim=1)
        for layer in self.layers:
            x = layer(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        ws = x[:, None].repeat(1, self.num_ws, 1)  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws


def one_hot_classes(classes, c_dim: int, device=None) -> torch.Tensor | None:
    """Class indices [N] -> one-hot float32 [N, c_dim], the c of G and D; None when c_dim = 0."""
    if c_dim == 0:
        return None
    classes = torch.as_tensor(classes, dtype=torch.int64, device=device)
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= c_dim):
        raise ValueError(f'class indices must lie in 0..{c_dim - 1}, got {classes.tolist()}')
    return torch.nn.functional.one_hot(classes, c_dim).to(torch.float32)


class Generator(torch.nn.Module):
    """G(z, camera, patch_params, c=None) -> RenderOutput(image [N, 3, r, r] in [-1, 1], depth, opacity); c is
    the one-hot class [N, c_dim] of a class-conditional G (c_dim > 0)."""

    @misc.record_init_kwargs
    def __init__(
        self,
        z_dim: int = 512,               # Input latent (Z) dimensionality.
        w_dim: int = 512,               # Intermediate latent (W) dimensionality.
        img_resolution: int = 256,      # R: full-image resolution.
        patch_resolution: int = 64,     # r: training patch resolution.
        mapping_layers: int = 2,        # Depth of the mapping network.
        plane_resolution: int = 512,    # Rp: tri-plane resolution.
        plane_channels: int = 32,       # Channels per plane.
        channel_base: int = 32768,      # Synthesis channels at res: min(channel_base // res, channel_max).
        channel_max: int = 512,         # Maximum synthesis channels.
        use_noise: bool = True,         # Per-pixel noise inputs in the synthesis network.
        conv_clamp: float | None = 256, # Clamp synthesis conv outputs; None = off.
        decoder_hidden: int = 64,       # Hidden width of the tri-plane decoder MLP.
        density_shift: float = 0.0,     # Added to raw densities before softplus.
        density_scale: float = 1.0,     # Multiplies the softplus of the densities (1 = the public code).
        scene_bounds: float = 0.2,      # Half-size of the world box the planes cover (the preset's cube scale).
        ray_start: float = 0.88,        # Near bound along each ray (distance from the camera centre).
        ray_end: float = 1.12,          # Far bound along each ray.
        num_coarse: int = 48,           # Stratified samples per ray.
        num_fine: int = 48,             # Importance samples per ray.
        background: str = 'white',      # Colour behind the scene: 'white' or 'black'.
        bg_model: bool = False,         # NeRF++ background model behind the foreground.
        bg_samples: int = 16,           # Background samples per ray (no hierarchical sampling).
        bg_radius: float = 1.0,         # Radius of the sphere (around the origin, enclosing the cameras) where the background starts.
        bg_hidden: int = 128,           # Hidden width of the background MLP.
        ray_chunk: int = 32768,         # Rays rendered at once (all samples of the batch together).
        point_chunk: int = 262144,      # Points decoded at once.
        checkpoint_res: int | None = 128,  # Recompute synthesis blocks at res >= this in backward; None = never.
        checkpoint_decode: bool = True, # Recompute the decoder in backward (keeps only points and outputs).
        train_jitter: bool = True,      # Random sample depths in training; False = bin middles (a deterministic G).
        precision: str = 'fp32',        # Synthesis convs: fp32 (paper) | bf16 | fp16; mapping, decoder, compositing stay fp32.
        c_dim: int = 0,                 # Number of classes of a class-conditional G (one-hot c); 0 = unconditional.
    ):  # fmt: skip
        super().__init__()
        if not (0 < scene_bounds and 0 < ray_start < ray_end):
            raise ValueError(
                f'Generator: need 0 < scene_bounds and 0 < ray_start < ray_end, got {scene_bounds}, {ray_start}, '
                f'{ray_end} (cube_scale, ray_start, ray_end of the dataset preset, configs/datasets/<name>.yaml)'
            )
        self.z_dim, self.w_dim = z_dim, w_dim
        self.img_resolution, self.patch_resolution = img_resolution, patch_resolution
        self.scene_bounds = scene_bounds
        self.ray_chunk, self.point_chunk, self.checkpoint_decode = ray_chunk, point_chunk, checkpoint_decode
        self.train_jitter = train_jitter
        self.bg_samples, self.bg_radius = bg_samples, bg_radius
        self.synthesis = TriPlaneSynthesis(
            w_dim,
            plane_resolution,
            plane_channels,
            channel_base,
            channel_max,
            use_noise,
            conv_clamp,
            checkpoint_res,
            precision=precision,
        )
        self.decoder = TriPlaneDecoder(plane_channels, decoder_hidden, density_shift, density_scale)
        self.background_mlp = BackgroundMLP(w_dim, bg_hidden) if bg_model else None
        self.num_ws = self.synthesis.num_ws + (self.background_mlp.num_ws if bg_model else 0)
        self.c_dim = c_dim
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers, c_dim=c_dim)
        self.march = rendering.RayMarchOptions(
            ray_start, ray_end, num_coarse, num_fine, background, last_to_infinity=not bg_model
        )

    def forward(
        self, z, camera, patch_params=None, resolution=None, truncation_psi=1, truncation_cutoff=None,
        noise_mode='random', density_noise_std=0.0, foreground_only=False, update_emas=False, c=None,
        **render_kwargs,
    ) -> RenderOutput:  # fmt: skip
        """c: one-hot classes [N, c_dim] of a class-conditional G (c_dim > 0), else None."""
        misc.assert_shape(z, [camera.batch_size, self.z_dim])
        ws = self.mapping(z, truncation_psi, truncation_cutoff, update_emas=update_emas, c=c)
        planes = self.synthesis(ws[:, : self.synthesis.num_ws], noise_mode)
        return self.render(
            planes, camera, patch_params, resolution, ws=ws, density_noise_std=density_noise_std,
            foreground_only=foreground_only, **render_kwargs,
        )  # fmt: skip

    def render(
        self, planes, camera, patch_params=None, resolution=None, ws=None, density_noise_std=0.0,
        foreground_only=False, num_samples_multiplier=1, jitter=None, ray_chunk=None,
    ) -> RenderOutput:  # fmt: skip
        """Render tri-planes [N, 3, C, Rp, Rp] from `camera`: the patch `patch_params` [N, 3] at `resolution`
        (default patch_resolution), or the full image (default img_resolution) when patch_params is None.

        num_samples_multiplier scales both sample counts (higher-quality inference renders); jitter
        (random sample positions) defaults to training mode with train_jitter; ray_chunk overrides the
        constructor's.
        """
        N = camera.batch_size
        misc.assert_shape(planes, [N, 3, None, None, None])
        if patch_params is None:
            patch_params = full_image_patch_params(N, device=planes.device)
            resolution = resolution or self.img_resolution
        else:
            resolution = resolution or self.patch_resolution
        use_bg = self.background_mlp is not None and not foreground_only
        if use_bg and ws is None:
            raise ValueError('Generator.render: the background model needs ws; pass ws=G.mapping(z)')
        opts = rendering.RayMarchOptions(
            self.march.ray_start, self.march.ray_end, self.march.num_coarse * num_samples_multiplier,
            self.march.num_fine * num_samples_multiplier, self.march.background, self.march.last_to_infinity,
            (self.training and self.train_jitter) if jitter is None else jitter,
        )  # fmt: skip
        origins, dirs = rendering.patch_rays(
            camera.to(planes.device), patch_params.to(planes.device), resolution
        )

        def field(points):
            return self.query_points(planes, points, density_noise_std=density_noise_std)

        def background_field(coords):
            return self._query_background(ws[:, self.synthesis.num_ws :], coords)

        out = rendering.render_rays_chunked(
            ray_chunk or self.ray_chunk, origins, dirs, field=field, opts=opts,
            background_field=background_field if use_bg else None, num_bg_samples=self.bg_samples,
            bg_radius=self.bg_radius,
        )  # fmt: skip
        return rendering.rays_to_image(*out, resolution)

    def query_points(self, planes, points, chunk_size=None, density_noise_std=0.0):
        """Colour and density at world points [N, P, 3] -> (rgb [N, P, 3] in [-1, 1], sigma [N, P, 1]).

        Decodes at most `chunk_size` (default point_chunk) points at a time; with gradients enabled and
        checkpoint_decode, each chunk's features are recomputed in the backward pass instead of stored.
        """
        N, P, _ = points.shape
        misc.assert_shape(planes, [N, 3, None, None, None])
        per_sample = max(1, (chunk_size or self.point_chunk) // N)
        coords = points / self.scene_bounds  # [N, P, 3] in [-1, 1]^3 inside the box
        checkpoint = self.checkpoint_decode and torch.is_grad_enabled()
        raws = []
        for i in range(0, P, per_sample):
            chunk = coords[:, i : i + per_sample]
            if checkpoint:
                raws.append(
                    torch.utils.checkpoint.checkpoint(self._decode, planes, chunk, use_reentrant=False)
                )
            else:
                raws.append(self._decode(planes, chunk))
        raw = torch.cat(raws, dim=1) if len(raws) > 1 else raws[0]  # [N, P, 4]
        rgb, sigma = self.decoder.activate(raw, density_noise_std)
        # The scene lives in the box the planes cover. Outside it the planes read zero features and the MLP
        # would still emit a constant density: that fog, with the last interval running to infinity,
        # paints the box's walls into every image. Density outside the box is therefore zero.
        inside = (coords.abs() <= 1).all(dim=-1, keepdim=True)  # [N, P, 1]
        return rgb, sigma * inside

    def _decode(self, planes, coords):
        return self.decoder.decode(planes, coords)

    def _query_background(self, ws_bg, coords):
        return activate_outputs(self.background_mlp(coords, ws_bg))

    def density(self, ws, points, chunk_size=None, noise_mode='const'):
        """Density at world points [N, P, 3] for the latents ws [N, num_ws, w_dim] -> sigma [N, P, 1]."""
        return self.density_field(ws, noise_mode)(points, chunk_size)

    def density_field(self, ws, noise_mode='const'):
        """points [N, P, 3] -> sigma [N, P, 1] for the latents ws, with the tri-planes synthesised once.

        For many queries of one sample (a marching-cubes grid in chunks): `G.density` per chunk would re-run
        the synthesis network every time.
        """
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        planes = self.synthesis(ws[:, : self.synthesis.num_ws], noise_mode)
        return lambda points, chunk_size=None: self.query_points(planes, points, chunk_size)[1]
