"""Generator benchmarks: G forward and forward+backward for the paper config and a small demo-like one.

Each result holds the end-to-end median `ms`, `images_per_s`, and a split into mapping / synthesis /
decode / composite measured by timing those parts separately on the same shapes (`split_ms`; composite =
the two compositing calls of a patch render, timed directly; `render_total` = the whole render). `synthesis_conv_gflops` is the achieved rate of the synthesis convolutions (useful
FLOPs of the forward convs / synthesis forward time) and `matmul_gflops` the measured float32 matmul rate of
the machine with the same threads, so their ratio says how far from the hardware limit the synthesis runs.

Measured 2026-11-25 on the team's 2-core CPU machine, shared with other jobs (load average 0.7-4),
--repeat 1, so times vary by up to 2x between runs:
- G_paper_fwdbwd (thp): 72.7 s/step, peak RSS of the step 2905 MB (process peak 4004 MB, reached in the
  split measurements that follow), 1.9 M minor page faults; split synthesis 35.4 s, decode 10.2 s.
- G_paper_fwdbwd (default malloc): 57.1 s/step, step peak RSS 3151 MB, 50.8 M minor page faults.
- G_paper_fwd (thp): 10.2 s; synthesis convs 83 GFLOP/s (forward) vs 172 GFLOP/s float32 matmul (48 %).
"""

import math
import resource
import statistics
import time

import torch

from training import cameras
from training.networks.generator import Generator

CONFIGS = {
    # Paper: R = 256, r = 64, Rp = 512, 48 + 48 samples, batch 4 (all other sizes are the defaults).
    'paper': dict(batch=4, G=dict()),
    # Demo-like (configs/demo.yaml: 64^2 images, 32^2 patches, 64^2 planes, 12 + 12 samples, batch 8) with
    # narrow synthesis channels and 16-channel planes.
    'demo': dict(
        batch=8,
        G=dict(
            z_dim=128,
            w_dim=128,
            img_resolution=64,
            patch_resolution=32,
            plane_resolution=64,
            plane_channels=16,
            channel_base=4096,
            channel_max=128,
            num_coarse=24,
            num_fine=24,
            scene_bounds=1.0,
            ray_start=1.75,
            ray_end=5.25,
        ),  # fmt: skip
    ),
}
CAMERA = {'paper': dict(radius=1.0, fov=12.0), 'demo': dict(radius=3.5, fov=45.0)}


def _inputs(config: str, device):
    cfg = CONFIGS[config]
    torch.manual_seed(0)
    G = Generator(**cfg['G']).to(device).train()
    N = cfg['batch']
    z = torch.randn(N, G.z_dim, device=device)
    camera = cameras.angles_to_camera(
        torch.randn(N) * 0.3,
        math.pi / 2 + torch.randn(N) * 0.2,
        CAMERA[config]['radius'],
        CAMERA[config]['fov'],
    ).to(device)
    s = torch.rand(N) * (1 - G.patch_resolution / G.img_resolution) + G.patch_resolution / G.img_resolution
    patch_params = torch.stack([s, torch.rand(N) * (1 - s), torch.rand(N) * (1 - s)], dim=1).to(device)
    return G, z, camera, patch_params


def _timed(fn, repeat: int, warmup: bool = True) -> float:
    """Median wall time in ms of `fn` over `repeat` runs (after one warm-up run if `warmup`)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def synthesis_conv_flops(G: Generator, batch: int) -> float:
    """Forward FLOPs (2 x multiply-adds) of the synthesis convolutions for `batch` samples."""
    flops = 0.0
    for block in G.synthesis.blocks:
        res = block.resolution
        for layer in [getattr(block, 'conv0', None), block.conv1]:
            if layer is None:
                continue
            cout, cin, kh, kw = layer.weight.shape
            pixels = (res // layer.up) ** 2  # an upsampling conv runs on the input grid (transposed conv)
            flops += 2 * batch * cout * cin * kh * kw * pixels
        cout, cin, _, _ = block.to_planes.weight.shape
        flops += 2 * batch * cout * cin * res * res
    return flops


def matmul_gflops(device, size: int = 2048, repeat: int = 3) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    ms = _timed(lambda: torch.mm(a, b), repeat)
    return 2 * size**3 / (ms / 1000) / 1e9


def _render_points(G, N):
    per_ray = G.march.num_coarse + G.march.num_fine
    return torch.rand(N, G.patch_resolution**2 * per_ray, 3) * 2 * G.scene_bounds - G.scene_bounds


def _split(G, z, camera, patch_params, repeat, backward: bool) -> dict:
    """Time mapping, synthesis, render and decode separately on the step's shapes."""
    N = z.shape[0]
    grad_ctx = torch.enable_grad if backward else torch.no_grad

    def step(fn):
        def run():
            with grad_ctx():
                out = fn()
                if backward:
                    outs = out if isinstance(out, tuple) else (out,)
                    sum((o * torch.randn_like(o)).sum() for o in outs).backward()

        return run

    with torch.no_grad():
        ws = G.mapping(z)
        planes = G.synthesis(ws)
    ws_leaf = ws.clone().requires_grad_(backward)
    planes_leaf = planes.clone().requires_grad_(backward)
    points = _render_points(G, N).to(z.device)
    split = dict(
        mapping=_timed(step(lambda: G.mapping(z)), repeat),
        synthesis=_timed(step(lambda: G.synthesis(ws_leaf)), repeat),
        render=_timed(
            step(lambda: G.render(planes_leaf, camera, patch_params, density_noise_std=0.5).image), repeat
        ),
        decode=_timed(step(lambda: G.query_points(planes_leaf, points, density_noise_std=0.5)), repeat),
    )
    split['composite'] = _timed(step(lambda: _composite_passes(G, N, z.device, backward)), repeat)
    split['render_total'] = split.pop('render')  # rays + sampling + decode + composite, end to end
    return {k: round(v, 1) for k, v in split.items()}


def _composite_passes(G, N, device, backward: bool):
    """The two compositing calls of one patch render: coarse samples, then coarse + fine merged."""
    from torch_utils.ops import volume_render

    R = G.patch_resolution**2
    outs = []
    for S in (G.march.num_coarse, G.march.num_coarse + G.march.num_fine):
        colors = torch.rand(N, R, S, 3, device=device, requires_grad=backward)
        sigmas = torch.rand(N, R, S, device=device, requires_grad=backward)
        t = torch.linspace(G.march.ray_start, G.march.ray_end, S, device=device).expand(N, R, S)
        deltas = torch.full_like(t, (G.march.ray_end - G.march.ray_start) / S)
        outs.append(volume_render.composite(colors, sigmas, deltas, t)[0])
    return tuple(outs)


def _bench(config: str, backward: bool):
    def run(args) -> dict:
        device = torch.device(args['device'])
        G, z, camera, patch_params = _inputs(config, device)
        N = z.shape[0]

        def full_step():
            with torch.enable_grad() if backward else torch.no_grad():
                out = G(z, camera, patch_params, density_noise_std=0.5)
                if backward:
                    (out.image.square().mean() + out.depth.mean()).backward()
                    G.zero_grad(set_to_none=True)

        ms = _timed(full_step, args['repeat'])
        peak_step_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the split runs
        split = _split(G, z, camera, patch_params, args['repeat'], backward)
        with torch.no_grad():
            ws = G.mapping(z)
            synth_ms = _timed(
                lambda: G.synthesis(ws), args['repeat'], warmup=backward
            )  # fwd case: warm already
        conv_gflops = synthesis_conv_flops(G, N) / (synth_ms / 1000) / 1e9
        return dict(
            config=config,
            batch=N,
            backward=backward,
            ms=round(ms, 1),
            peak_rss_step_mb=round(peak_step_mb, 1),
            images_per_s=round(N / (ms / 1000), 3),
            split_ms=split,
            synthesis_fwd_ms=round(synth_ms, 1),
            synthesis_conv_gflop=round(synthesis_conv_flops(G, N) / 1e9, 2),
            synthesis_conv_gflops=round(conv_gflops, 2),
            matmul_gflops=round(matmul_gflops(device), 2),
            num_params=sum(p.numel() for p in G.parameters()),
        )

    return run


CASES = {
    'G_demo_fwd': _bench('demo', backward=False),
    'G_demo_fwdbwd': _bench('demo', backward=True),
    'G_paper_fwd': _bench('paper', backward=False),
    'G_paper_fwdbwd': _bench('paper', backward=True),
}
