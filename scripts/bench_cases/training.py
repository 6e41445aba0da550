"""Benchmarks of one full training step (scripts/bench.py discovers CASES; each fn(args) -> dict).

A step is Gmain + Dmain + Dreg / r1_interval (lazy R1, amortized) + the G_ema update, run by the loop's
own functions (training/train_step.py) on random real images; only the data loading is left out.
- training_step_paper: configs/ffhq256.yaml at batch 4 per process (R = 256, r = 64, Rp = 512, 48 + 48).
- training_step_demo: configs/demo.yaml at its own batch.
Reported: ms per phase and its share of the amortized step, images/s, and peak memory (CUDA allocator
peak on a GPU, peak resident set size of the process on the CPU).
"""

import os
import resource
import sys
import time

if __name__ == '__main__':  # run directly: the repository root, not this folder (training.py), comes first
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import dnnlib  # noqa: E402
from training import config, derive, train_step, training_loop  # noqa: E402
from training.patches import make_patch_sampler  # noqa: E402


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def build_state(preset: str, device, batch: int | None = None, **flags) -> dnnlib.EasyDict:
    """A TrainState as training_loop.setup builds it, without a dataset (random reals instead).

    `flags`: training options (precision, checkpoint, ...) as train.py's flags; None = the preset's.
    """
    opts = config.resolve(config.load_preset(preset), dict(batch=batch, batch_gpu=batch, **flags))
    dp = derive.load_dataset_preset(opts.dataset, preset)
    c = derive.model_kwargs(opts, dp, opts.batch_gpu or opts.batch, preset)
    c.seed = 0
    s = dnnlib.EasyDict(c=c, rank=0, world_size=1, device=torch.device(device), tick_scales=[])
    s.progress = dnnlib.EasyDict(cur_nimg=0, cur_tick=0, batch_idx=0, tick_start_nimg=0, total_time=0.0)
    training_loop.setup_modules(s)
    s.camera_prior = dnnlib.construct_class_by_name(**c.camera_prior_kwargs, dataset=None)
    s.patch_sampler = make_patch_sampler(**c.sampler_kwargs)
    s.batch_gpu, s.num_rounds = c.batch_gpu, c.batch // c.batch_gpu
    return s


def random_reals(s) -> list:
    """Real batches of random images in [-1, 1] with cameras from the prior (labels [N, 25])."""
    R = s.c.dataset_preset['resolution']
    out = []
    for _ in range(s.num_rounds):
        labels = s.camera_prior.sample(s.batch_gpu, device=s.device).to_label()
        images = torch.rand(s.batch_gpu, 3, R, R, device=s.device) * 2 - 1
        out.append(dnnlib.EasyDict(images=images, labels=labels))
    return out


def _peak_memory_gb(device) -> float:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux


def time_step(s, repeats: int) -> dict:
    """Median ms of each phase over `repeats` timed runs (after one warm-up), and the amortized step."""
    gen_kwargs = dict(density_noise_std=0.0)
    reals = train_step.prepare_reals(s, random_reals(s))
    times = {phase.name: [] for phase in s.phases}
    times['G_ema'] = []
    for i in range(repeats + 1):
        for phase in s.phases:
            _sync(s.device)
            t0 = time.perf_counter()
            train_step.run_phase(s, phase, reals, gen_kwargs)
            _sync(s.device)
            times[phase.name].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        train_step.update_ema(s)
        _sync(s.device)
        times['G_ema'].append(time.perf_counter() - t0)
        if i == 0:
            times = {k: [] for k in times}  # drop the warm-up
    ms = {k: sorted(v)[len(v) // 2] * 1000 for k, v in times.items()}
    weight = {p.name: 1 / p.interval for p in s.phases} | {'G_ema': 1.0}
    step_ms = sum(ms[k] * weight[k] for k in ms)
    return dict(
        step_ms=step_ms,
        images_per_s=s.c.batch / (step_ms / 1000),
        phase_ms=ms,
        phase_share={k: ms[k] * weight[k] / step_ms for k in ms},
        r1_interval=s.c.r1_interval,
    )


def _case(preset: str, batch: int | None, default_repeats: int):
    def case(args):
        device = torch.device(getattr(args, 'device', None) or 'cpu')
        repeats = getattr(args, 'repeat', None) or default_repeats
        torch.manual_seed(0)
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        flags = {k: args.get(k) for k in OPTION_FLAGS}
        s = build_state(preset, device, batch, **flags)
        result = time_step(s, repeats)
        return dict(
            preset=preset, batch=s.c.batch, peak_memory_gb=_peak_memory_gb(device), **result,
            precision=s.c.resolved_precision, checkpoint_res=s.c.G_kwargs['checkpoint_res'],
        )  # fmt: skip

    return case


OPTION_FLAGS = ('precision', 'g_fp32', 'checkpoint')  # training options scripts/bench.py can set

CASES = {
    'training_step_paper': _case('ffhq256', batch=4, default_repeats=1),
    'training_step_demo': _case('demo', batch=None, default_repeats=3),
}


if __name__ == '__main__':
    import json

    names = sys.argv[1:] or list(CASES)
    for name in names:
        print(json.dumps(dict(case=name, **CASES[name](dnnlib.EasyDict(device=None)))), flush=True)
