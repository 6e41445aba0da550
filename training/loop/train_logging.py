"""What a run tells its user: the per-tick progress line, stats.jsonl, TensorBoard scalars and
histograms, and image grids of fixed seeds from fixed cameras (rank 0 only)."""

import os
import time

import numpy as np
import PIL.Image
import torch

from torch_utils import misc, training_stats
from training.loop import train_step
from training.loop.train_state import TrainState
from training.networks.generator import one_hot_classes


def cpu_memory_gb() -> float:
    """Resident memory of this process in GB (Linux /proc; 0 elsewhere)."""
    try:
        with open('/proc/self/status', encoding='ascii') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def report_tick_resources(s: TrainState, tick_time: float) -> None:
    """Timing and memory of the finished tick, into training_stats (reduced across ranks)."""
    tick_kimg = (s.progress.cur_nimg - s.progress.tick_start_nimg) / 1000
    training_stats.report0('Progress/tick', s.progress.cur_tick)
    training_stats.report0('Progress/kimg', s.progress.cur_nimg / 1000)
    training_stats.report0('Timing/sec_per_tick', tick_time)
    training_stats.report0('Timing/sec_per_kimg', tick_time / max(tick_kimg, 1e-8))
    training_stats.report0('Timing/total_hours', s.progress.total_time / 3600)
    training_stats.report0('Resources/cpu_mem_gb', cpu_memory_gb())
    if s.device.type == 'cuda':
        training_stats.report0('Resources/peak_gpu_mem_gb', torch.cuda.max_memory_allocated(s.device) / 2**30)
        torch.cuda.reset_peak_memory_stats(s.device)
    for key, value in s.patch_sampler.describe(s.progress.cur_nimg).items():
        training_stats.report0(f'Progress/patch_{key}', value)


def progress_line(s: TrainState, stats: dict, tick_time: float) -> str:
    """tick, kimg, time, sec/kimg, memory, augment p, the patch-scale schedule."""

    def mean(name, default=float('nan')):
        return stats[name]['mean'] if name in stats else default

    fields = [
        f'tick {s.progress.cur_tick:<5d}',
        f'kimg {s.progress.cur_nimg / 1000:<8.3f}',
        f'time {_format_time(s.progress.total_time):<12s}',
        f'sec/tick {tick_time:<7.1f}',
        f'sec/kimg {mean("Timing/sec_per_kimg"):<8.2f}',
        f'cpumem {mean("Resources/cpu_mem_gb"):<6.2f}',
    ]
    if 'Resources/peak_gpu_mem_gb' in stats:
        fields.append(f'gpumem {mean("Resources/peak_gpu_mem_gb"):<6.2f}')
    if s.augment_pipe is not None:
        fields.append(f'augment {float(s.augment_pipe.p):.3f}')
    describe = s.patch_sampler.describe(s.progress.cur_nimg)
    fields += [f'{key} {value:.4g}' for key, value in describe.items()]
    for name, short in (('Loss/G/loss', 'G'), ('Loss/D/loss', 'D'), ('Loss/r1_penalty', 'R1')):
        if name in stats:
            fields.append(f'{short} {stats[name]["mean"]:.3f}')
    return ' '.join(fields + nonfinite_warnings(stats))


def nonfinite_warnings(stats: dict) -> list[str]:
    """'WARNING non-finite grads clamped in Dmain: 2 of 4 steps' for each phase that had any this tick."""
    prefix = train_step.NONFINITE_STAT + '/'
    out = []
    for name, value in sorted(stats.items()):
        count = round(value['mean'] * value['num']) if name.startswith(prefix) else 0
        if count > 0:
            out.append(
                f'WARNING non-finite grads clamped in {name[len(prefix) :]}: {count} of {value["num"]} steps'
            )
    return out


def _format_time(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f'{s}s'
    if s < 3600:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 86400:
        return f'{s // 3600}h {(s // 60) % 60:02d}m'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h'


def open_writer(run_path: str):
    """TensorBoard SummaryWriter for rank 0 (None, with a note, if tensorboard is not installed)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        print(f'TensorBoard logging disabled: {err}')
        return None
    return SummaryWriter(run_path)


def write_stats(s: TrainState, stats: dict, scales: torch.Tensor | None) -> None:
    """One line of stats.jsonl plus TensorBoard scalars (and the patch-scale histogram)."""
    kimg = s.progress.cur_nimg / 1000
    training_stats.write_jsonl(
        os.path.join(s.c.run_dir, 'stats.jsonl'), dict(stats, timestamp=time.time(), kimg=kimg)
    )
    if s.writer is None:
        return
    step = int(s.progress.cur_nimg / 1e3)
    for name, value in training_stats.scalars(stats).items():
        s.writer.add_scalar(name, value, global_step=step)
    if scales is not None and scales.numel() > 0:
        s.writer.add_histogram('Patch/scale', scales, global_step=step)
    s.writer.flush()


# ----------------------------------------------------------------------------
# Image grids.


def setup_grid(s: TrainState) -> None:
    """Fixed latents [S, z_dim] and cameras (C of them) for every grid of the run (seeded, not from the run's RNG);
    a class-conditional G's row i shows class i mod c_dim."""
    gen = torch.Generator().manual_seed(1234)
    s.grid_z = torch.randn(s.c.grid_seeds, s.G.z_dim, generator=gen)
    s.grid_camera = s.camera_prior.sample(s.c.grid_cameras, device='cpu', generator=gen)
    c_dim = getattr(s.G, 'c_dim', 0)
    s.grid_c = one_hot_classes(torch.arange(s.c.grid_seeds) % max(c_dim, 1), c_dim)


def save_image_grid(images: torch.Tensor, path: str, cols: int) -> np.ndarray:
    """Tile images [N, 3, H, W] in [-1, 1] into a grid of `cols` columns; save as PNG; return [H', W', 3]."""
    N, C, H, W = images.shape
    rows = (N + cols - 1) // cols
    pad = images.new_ones(rows * cols - N, C, H, W)
    images = torch.cat([images, pad])
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    x = (
        x.reshape(rows, cols, C, H, W).permute(0, 3, 1, 4, 2).reshape(rows * H, cols * W, C)
    )  # [rows*H, cols*W, C]
    arr = x.numpy()
    PIL.Image.fromarray(arr, 'RGB').save(path)
    return arr


@torch.no_grad()
def render_grid(G, z: torch.Tensor, camera, device, c: torch.Tensor | None = None) -> torch.Tensor:
    """Every latent (rows; with its one-hot class c [S, c_dim] if given) from every camera (columns), full
    resolution. [S * C, 3, R, R]"""
    S, C = z.shape[0], camera.batch_size
    rows = []
    for i in range(S):
        zi = z[i : i + 1].expand(C, -1).to(device)
        cond = {} if c is None else dict(c=c[i : i + 1].expand(C, -1).to(device))
        out = G(zi, camera.to(device), patch_params=None, noise_mode='const', **cond)
        rows.append(out.image.float().cpu())
    images = torch.cat(rows)
    misc.assert_shape(images, [S * C, 3, None, None])
    return images


def save_fakes(s: TrainState) -> None:
    """fakes<kimg>.png of G_ema and its TensorBoard image (RNG-neutral: the caller preserves RNG state)."""
    images = render_grid(s.G_ema, s.grid_z, s.grid_camera, s.device, s.grid_c)
    path = os.path.join(s.c.run_dir, f'fakes{s.progress.cur_nimg // 1000:06d}.png')
    arr = save_image_grid(images, path, cols=s.c.grid_cameras)
    if s.writer is not None:
        s.writer.add_image('Images/fakes', arr, global_step=int(s.progress.cur_nimg / 1e3), dataformats='HWC')


def save_reals(s: TrainState, dataset) -> None:
    """reals.png: the first grid_seeds * grid_cameras training images, as the grid shows fakes."""
    n = min(len(dataset), s.c.grid_seeds * s.c.grid_cameras)
    images = torch.stack([torch.as_tensor(dataset[i][0]) for i in range(n)]).float() / 127.5 - 1
    arr = save_image_grid(images, os.path.join(s.c.run_dir, 'reals.png'), cols=s.c.grid_cameras)
    if s.writer is not None:
        s.writer.add_image('Images/reals', arr, global_step=0, dataformats='HWC')
