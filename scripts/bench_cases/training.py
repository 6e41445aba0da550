"""Benchmarks of one full training step (scripts/bench.py discovers CASES; each fn(args) -> dict).

A step is Gmain + Dmain + Dreg / r1_interval (lazy R1, amortized) + the G_ema update, run by the loop's
own functions (training/loop/train_step.py) on random real images; only the data loading is left out.
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
from training.dataset import make_preset_camera_prior  # noqa: E402
from training.loop import train_step, training_loop  # noqa: E402
from training.options import config, derive  # noqa: E402
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
    if c.camera_prior_kwargs['kind'] == 'dataset':  # no dataset here: time with the preset's fitted prior
        s.camera_prior = make_preset_camera_prior(dp, choice='fit')
    else:
        s.camera_prior = dnnlib.construct_class_by_name(**c.camera_prior_kwargs, dataset=None)
    s.patch_sampler = make_patch_sampler(**c.sampler_kwargs)
    s.batch_gpu, s.num_rounds = c.batch_gpu, c.batch // c.batch_gpu
    if hasattr(
        train_step, 'make_input_stream'
    ):  # --code-root may time a checkout older than the input stream
        s.input_stream = train_step.make_input_stream(c.seed)
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
    """Median ms of each phase over `repeats` timed runs (after one warm-up), and the amortized step.

    Wall time and this process's CPU time (user + system, all threads): on a shared machine the CPU time
    is the steadier measure of the work done, the wall time what a user waits.
    """
    gen_kwargs = dict(density_noise_std=0.0)
    reals = train_step.prepare_reals(s, random_reals(s))
    names = [phase.name for phase in s.phases] + ['G_ema']
    wall, cpu = {k: [] for k in names}, {k: [] for k in names}
    for i in range(repeats + 1):
        # a step's Gmain fakes for its Dmain (reuse_fakes); passed only when on, as --code-root may time
        # a checkout whose run_phase does not take them
        shared = [] if s.c.get('reuse_fakes') else None
        for name in names:
            phase = next((p for p in s.phases if p.name == name), None)
            _sync(s.device)
            t0, c0 = time.perf_counter(), time.process_time()
            if phase is None:
                train_step.update_ema(s)
            else:
                train_step.run_phase(s, phase, reals, gen_kwargs, *([shared] if shared is not None else []))
            _sync(s.device)
            if i > 0:  # the first round is the warm-up
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    weight = {p.name: 1 / p.interval for p in s.phases} | {'G_ema': 1.0}
    median = lambda v: sorted(v)[len(v) // 2] * 1000  # noqa: E731
    ms = {k: median(v) for k, v in wall.items()}
    cpu_ms = {k: median(v) for k, v in cpu.items()}
    step_ms = sum(ms[k] * weight[k] for k in ms)
    return dict(
        step_ms=step_ms,
        images_per_s=s.c.batch / (step_ms / 1000),
        phase_ms=ms,
        phase_share={k: ms[k] * weight[k] / step_ms for k in ms},
        step_cpu_ms=sum(cpu_ms[k] * weight[k] for k in cpu_ms),
        phase_cpu_ms=cpu_ms,
        r1_interval=s.c.r1_interval,
    )


def profile_phases(s, row_limit: int = 15) -> None:
    """One more step with torch.profiler, a table of the top ops by self CPU time per phase on stderr."""
    from torch.profiler import ProfilerActivity, profile

    reals = train_step.prepare_reals(s, random_reals(s))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if s.device.type == 'cuda' else [])
    sort_by = 'self_cuda_time_total' if s.device.type == 'cuda' else 'self_cpu_time_total'
    shared = [] if s.c.get('reuse_fakes') else None
    for phase in s.phases:
        with profile(activities=activities, profile_memory=True) as prof:
            train_step.run_phase(
                s, phase, reals, dict(density_noise_std=0.0), *([shared] if shared is not None else [])
            )
            _sync(s.device)
        table = prof.key_averages().table(sort_by=sort_by, row_limit=row_limit, max_name_column_width=36)
        print(f'--- profile of {phase.name} ---\n{table}', file=sys.stderr, flush=True)


def _case(preset: str, batch: int | None, default_repeats: int):
    def case(args):
        device = torch.device(getattr(args, 'device', None) or 'cpu')
        repeats = getattr(args, 'repeat', None) or default_repeats
        torch.manual_seed(0)
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        flags = {k: args.get(k) for k in OPTION_FLAGS if args.get(k) is not None}
        s = build_state(preset, device, batch, **flags)
        result = time_step(s, repeats)
        if args.get('profile'):
            profile_phases(s)
        return dict(
            preset=preset, batch=s.c.batch, peak_memory_gb=_peak_memory_gb(device), **result,
            precision=s.c.get('resolved_precision', 'fp32 (G), fp16 on CUDA (D)'),
            checkpoint_res=s.c.G_kwargs.get('checkpoint_res', 'default'),
        )  # fmt: skip

    return case


# training options scripts/bench.py can set
OPTION_FLAGS = ('precision', 'g_fp32', 'checkpoint', 'reuse_fakes')

CASES = {
    'training_step_paper': _case('ffhq256', batch=4, default_repeats=1),
    'training_step_demo': _case('demo', batch=None, default_repeats=3),
}


if __name__ == '__main__':
    import json

    names = sys.argv[1:] or list(CASES)
    for name in names:
        print(json.dumps(dict(case=name, **CASES[name](dnnlib.EasyDict(device=None)))), flush=True)
