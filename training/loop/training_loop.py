"""The training loop, as an outline of small named steps (StyleGAN2-ADA's procedure, Sec. 3.4):

    setup -> [resume] -> repeat { train_step (Gmain, Dmain, Dreg, G_ema, ADA) -> at tick ends:
    progress line, stats, image grid, snapshot, metrics } until kimg or max_minutes, a stop signal, or
    divergence.

Every rank runs this function; only rank 0 writes files. A snapshot holds the full state (ADA's
accumulated signs included), so `--resume` continues exactly from any step; regular ticks end at
ADA-interval boundaries so that an interrupted and an uninterrupted run log the same ticks.
"""

import contextlib
import copy
import math
import os
import signal
import time

import torch

import dnnlib
from torch_utils import checkpoint, misc, training_stats
from training.loop import data_iter, run_dir, snapshots, train_logging, train_step
from training.loop.train_state import TrainState
from training.networks.generator import density_noise_std
from training.patches import make_patch_sampler

# ----------------------------------------------------------------------------
# Setup.


def setup_modules(s: TrainState) -> None:
    """G, D, G_ema, the augment pipe and the loss, identical on every rank (seeded with c.seed)."""
    c = s.c
    misc.set_seed(c.seed)  # same initial weights on every rank
    s.G = dnnlib.construct_class_by_name(**c.G_kwargs).train().requires_grad_(False).to(s.device)
    s.D = dnnlib.construct_class_by_name(**c.D_kwargs).train().requires_grad_(False).to(s.device)
    s.G_ema = copy.deepcopy(s.G).eval()
    s.augment_pipe, s.ada = None, None
    if c.augment_kwargs is not None:
        s.augment_pipe = dnnlib.construct_class_by_name(**c.augment_kwargs).train().requires_grad_(False)
        s.augment_pipe = s.augment_pipe.to(s.device)
    if c.aug == 'ada':
        s.ada = dnnlib.construct_class_by_name(**c.ada_kwargs)
    s.loss = dnnlib.construct_class_by_name(
        device=s.device, G=s.G, D=s.D, augment_pipe=s.augment_pipe, **c.loss_kwargs
    )
    s.phases, s.optimizers = train_step.make_phases(c, s.G, s.D)


def setup_data(s: TrainState) -> None:
    c = s.c
    s.dataset = dnnlib.construct_class_by_name(**c.dataset_kwargs)
    s.camera_prior = dnnlib.construct_class_by_name(**c.camera_prior_kwargs, dataset=s.dataset)
    s.patch_sampler = make_patch_sampler(**c.sampler_kwargs)
    s.batch_gpu = c.batch_gpu
    s.num_rounds = c.batch // (c.batch_gpu * s.world_size)
    s.input_stream = train_step.make_input_stream(c.seed)  # the same on every rank (a resume restores it)


def setup(c, rank: int, world_size: int, device) -> TrainState:
    """Everything the loop needs, in one TrainState; restores a snapshot when resuming."""
    c = dnnlib.EasyDict(c)
    log = run_dir.RunLog(os.path.join(c.run_dir, 'log.txt'), enabled=rank == 0)
    s = TrainState(c=c, rank=rank, world_size=world_size, device=torch.device(device), log=log)
    setup_data(s)
    setup_modules(s)
    resume_if_asked(s)
    if s.progress.batch_idx == 0:
        misc.set_seed(c.seed * world_size + rank)  # per-rank streams (a resumed run restored its own above)
    s.real_stream = data_iter.make_real_stream(
        s.dataset, s.batch_gpu, rank, world_size, c.seed, s.progress.cur_nimg, c.workers, s.device
    )
    s.stats_collector = training_stats.Collector(regex='.*', keep_previous=False)
    s.writer = train_logging.open_writer(c.run_dir) if rank == 0 else None
    train_logging.setup_grid(s)
    return s


def resume_if_asked(s: TrainState) -> None:
    """Restore the full state from --resume (a run continued in place, or a snapshot file).

    Any snapshot problem ends the run with its one-line message (run_dir.TrainingStopped).
    """
    try:
        if s.c.resume_file is not None:
            data, source = checkpoint.load(s.c.resume_file), s.c.resume_file
        elif s.c.resume == 'in_place':
            data, source = snapshots.load_latest(s.c.run_dir, s.log)
        else:
            return
        snapshots.restore(s, data, source)
    except checkpoint.CheckpointError as err:
        s.log.print(str(err))
        raise run_dir.TrainingStopped(str(err)) from None
    s.log.print(
        f'Resumed from {source} at kimg {s.progress.cur_nimg / 1000:.3f} (tick {s.progress.cur_tick})'
    )


# ----------------------------------------------------------------------------
# Stop signals.


class StopSignals:
    """SIGTERM/SIGINT set a flag; the loop checks it at step boundaries, snapshots, and exits cleanly."""

    def __init__(self):
        self.received = None
        self.previous = {}

    def _handler(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave the handlers alone
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def agreed_stop(s: TrainState, out_of_time: bool) -> tuple[bool, bool]:
    """(any rank received a stop signal, rank 0's clock passed max_minutes), the same on every rank. Rank 0's
    clock decides: its total_time is the one the log and the snapshot keep (the other ranks' clocks also
    count the time they wait for rank 0's snapshots)."""
    out_of_time = out_of_time and s.rank == 0
    flags = torch.tensor([float(s.signals.received is not None), float(out_of_time)], device=s.device)
    if s.world_size > 1:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    stop, out_of_time = flags.tolist()
    return stop > 0, out_of_time > 0


# ----------------------------------------------------------------------------
# Ticks: stats, images, snapshots, metrics.


@contextlib.contextmanager
def preserved_rng():
    """Run a block (image grids, metrics) without disturbing the training RNG streams."""
    state = misc.get_rng_state()
    try:
        yield
    finally:
        misc.set_rng_state(state)


def maybe_evaluate(s: TrainState, snapshot_path: str | None) -> None:
    """Metrics of G_ema at a snapshot; track the best value of the first metric."""
    if not s.c.metrics:
        return
    from metrics import metric_main

    for i, metric in enumerate(s.c.metrics):
        result = metric_main.calc_metric(
            metric=metric, G=s.G_ema, dataset_kwargs=s.c.dataset_kwargs, num_gpus=s.world_size,
            rank=s.rank, device=s.device, camera_prior_kwargs=s.c.camera_prior_kwargs,
        )  # fmt: skip
        if s.rank == 0:
            metric_main.report_metric(result, run_dir=s.c.run_dir, snapshot_path=snapshot_path)
        value = metric_main.headline_value(metric, result.get('results', {}))
        best = s.best_metric['value'] if s.best_metric else None
        if i == 0 and value is not None and metric_main.is_improvement(metric, value, best):
            s.best_metric = dict(name=metric, value=value, kimg=s.progress.cur_nimg / 1000)


def end_tick(s: TrainState, tick_time: float, final: bool) -> None:
    """Progress line, image grid, snapshot, metrics, stats; then start the next tick."""
    train_logging.report_tick_resources(s, tick_time)
    s.stats_collector.update()
    stats = s.stats_collector.as_dict()
    s.log.print(train_logging.progress_line(s, stats, tick_time))
    tick, scales = s.progress.cur_tick, (torch.cat(s.tick_scales) if s.tick_scales else None)
    s.tick_scales = []
    s.progress.cur_tick, s.progress.tick_start_nimg = tick + 1, s.progress.cur_nimg
    if s.rank == 0 and (final or tick % s.c.image_snap == 0):
        with preserved_rng():
            train_logging.save_fakes(s)
    if final or tick % s.c.snap == 0:
        if s.world_size > 1:
            train_step.check_consistency(s)  # raises if any rank drifted
        path = os.path.join(s.c.run_dir, run_dir.snapshot_name(s.progress.cur_nimg))
        with preserved_rng():
            maybe_evaluate(s, path)  # before saving, so the snapshot holds the best metric so far
        if snapshots.save_snapshot(s):
            s.log.print(f'Saved {path}')
    if s.rank == 0:
        train_logging.write_stats(s, stats, scales)


# ----------------------------------------------------------------------------
# The loop.


def generator_kwargs(s: TrainState) -> dict:
    """Per-step generator kwargs computed from cur_nimg (schedules are never module state)."""
    std = density_noise_std(s.progress.cur_nimg, s.c.density_noise_std, s.c.density_noise_kimg)
    # update_emas: G's mapping tracks the w average used for truncation (StyleGAN2 updates it while training).
    return dict(density_noise_std=std, update_emas=True)


def next_real_batches(s: TrainState) -> list:
    return [data_iter.real_batch_to_device(next(s.real_stream), s.device) for _ in range(s.num_rounds)]


def train(s: TrainState) -> str:
    """Run steps until done; returns why it ended: 'done' or the signal's name."""
    if s.rank == 0 and s.progress.cur_nimg == 0:
        train_logging.save_reals(s, s.dataset)
    s.log.print(f'Training for {s.c.kimg} kimg from kimg {s.progress.cur_nimg / 1000:.3f}...')
    tick_start = time.time()
    max_seconds = 60 * (s.c.get('max_minutes') or math.inf)  # .get: runs that predate the option
    while True:
        train_step.train_step(s, next_real_batches(s), generator_kwargs(s))
        out_of_time = s.progress.total_time + time.time() - tick_start >= max_seconds
        # Every step: DataLoader workers may already be gone after a Ctrl-C.
        stop, out_of_time = agreed_stop(s, out_of_time)
        at_boundary = s.progress.batch_idx % s.c.ada_interval == 0  # keeps tick lengths run-independent
        done = at_boundary and (s.progress.cur_nimg >= s.c.kimg * 1000 or out_of_time)
        tick_due = s.progress.cur_nimg >= s.progress.tick_start_nimg + s.c.tick * 1000
        if not (stop or done or (at_boundary and (tick_due or s.progress.cur_tick == 0))):
            continue
        now = time.time()
        s.progress.total_time += now - tick_start
        end_tick(s, now - tick_start, final=done or stop)
        tick_start = time.time()
        if done or stop:
            if done and s.progress.cur_nimg < s.c.kimg * 1000:
                s.log.print(
                    f'max_minutes {s.c.max_minutes:g} reached at kimg {s.progress.cur_nimg / 1000:.3f}'
                )
            return 'done' if done else (s.signals.received or 'a signal on another rank')


def teardown(s: TrainState) -> None:
    if s.writer is not None:
        s.writer.close()
    s.real_stream = None  # lets the DataLoader's workers go
    s.log.close()


def training_loop(c, rank: int = 0, world_size: int = 1, device='cpu') -> TrainState:
    """Train with the resolved options `c` (see training/options/launch.py) on this rank.

    Returns the final TrainState (`.reason` is 'done' or the stop signal's name); raises
    run_dir.TrainingStopped on a non-finite loss.
    """
    s = setup(c, rank, world_size, device)
    try:
        with StopSignals() as s.signals:
            s.reason = train(s)
        if s.reason != 'done':
            s.log.print(f'Stopped by {s.reason}: snapshot written; continue with --resume latest')
        else:
            s.log.print('Exiting...')
        return s
    except train_step.NonFiniteLoss as err:
        kimg = s.progress.cur_nimg / 1000
        last = run_dir.list_snapshots(s.c.run_dir)
        keep = f'the last good snapshot is {last[-1]}' if last else 'no snapshot was written yet'
        msg = f'non-finite loss in phase {err} at kimg {kimg:.3f}; training stopped, {keep}'
        s.log.print(msg)
        raise run_dir.TrainingStopped(msg) from None
    finally:
        teardown(s)
