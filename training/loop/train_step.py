"""One training step: real patches, per-phase fake inputs, Gmain / Dmain / Dreg with lazy R1, the
cross-rank gradient average, G_ema with ramp-up, and the ADA p update.

DDP is done by hand (as StyleGAN3 does): every rank runs the same phases on its share of the batch,
then the flattened gradients are averaged with one all_reduce per phase. This works with any
forward API (G.mapping, G.render, ...) and with phases that leave parameters unused (lazy R1).
"""

import torch

import dnnlib
from torch_utils import misc, training_stats
from training import cameras, patches
from training.loop.train_state import TrainState
from training.networks.generator import one_hot_classes

INPUT_STREAM_OFFSET = 2**40  # the input stream's seed is c.seed + this: unrelated to the init-weight stream
NONFINITE_STAT = 'Progress/nonfinite_grads'  # + '/<phase>': 1 per step whose gradients were clamped, else 0


class NonFiniteLoss(RuntimeError):
    """A phase produced a NaN/inf loss or gradient: training must stop (the last snapshot stays good)."""


def make_phases(c, G, D) -> tuple[list, dict]:
    """Phases Gmain (every step), Dmain (every step), Dreg (every r1_interval steps) and their optimizers.

    Lazy regularization (StyleGAN2): Dreg's gradient is scaled by its interval inside the loss (`gain`),
    and D's lr and betas are adjusted by mb_ratio = k / (k + 1) so that the Adam statistics match.
    """
    b1, b2 = c.betas
    opt_G = make_adam(G, lr=c.glr, betas=(b1, b2))
    ratio = c.r1_interval / (c.r1_interval + 1)
    opt_D = make_adam(D, lr=c.dlr * ratio, betas=(b1**ratio, b2**ratio))
    phases = [
        dnnlib.EasyDict(name='Gmain', module=G, opt=opt_G, interval=1),
        dnnlib.EasyDict(name='Dmain', module=D, opt=opt_D, interval=1),
        dnnlib.EasyDict(name='Dreg', module=D, opt=opt_D, interval=c.r1_interval),
    ]
    if c.loss_kwargs['r1_gamma'] == 0:  # a number: derive resolves 'auto' before any process starts
        phases = phases[:2]  # no R1: Dreg would be a no-op
    return phases, dict(G=opt_G, D=opt_D)


def make_adam(module: torch.nn.Module, lr: float, betas) -> torch.optim.Adam:
    """Adam (eps 1e-8) over the module's parameters, as one fused kernel where PyTorch has one.

    The fused step computes the for-loop implementation's update (equal to float32 round-off) in one
    pass over all parameters: 0.75 ms against 3.0 ms for 100 small tensors on one CPU thread.
    """
    params = list(module.parameters())
    fused = all(p.device.type in ('cpu', 'cuda') and p.dtype == torch.float32 for p in params)
    return torch.optim.Adam(params, lr=lr, betas=tuple(float(b) for b in betas), eps=1e-8, fused=fused)


def real_angles(labels: torch.Tensor) -> torch.Tensor:
    """(yaw, pitch) of the dataset cameras, for D's camera conditioning. [N, 2]"""
    yaw, pitch, _ = cameras.camera_to_angles(cameras.Camera.from_label(labels).cam2world)
    return torch.stack([yaw, pitch], dim=1)


def make_input_stream(seed: int) -> torch.Generator:
    """The random stream of G's inputs and the patch parameters: one stream for the global batch.

    Every rank holds the same stream and keeps its own slice of each draw (`rank_slice`), so the
    global batch (latents, cameras, patches) is the same for any number of processes, and a resume
    continues it on any world size. G's own noise and D's augmentations use each rank's stream.
    """
    return torch.Generator().manual_seed(seed + INPUT_STREAM_OFFSET)


def rank_slice(s: TrainState, x):
    """This rank's rows of a draw for the global round [world_size * batch_gpu, ...]: rows rank::world_size.

    Strided, like the real images' sampler (data_iter.InfiniteSampler), so reals and their patch
    parameters stay paired, and the minibatch-stddev groups (sample i in group i mod N/G, the patch
    sampler's groups too) are the same groups as in a single process with the whole batch.
    """
    if isinstance(x, cameras.Camera):
        return x.select(slice(s.rank, None, s.world_size)).to(s.device)
    return x[s.rank :: s.world_size].to(s.device)


def draw_patch_params(s: TrainState) -> torch.Tensor:
    """Patch parameters (s, dx, dy) for this rank's share of one global round, at cur_nimg. [batch_gpu, 3]"""
    N = s.batch_gpu * s.world_size
    return rank_slice(s, s.patch_sampler.sample(N, s.progress.cur_nimg, generator=s.input_stream))


def prepare_reals(s: TrainState, real_batches: list) -> list:
    """Crop one patch per real image at parameters drawn from the schedule at cur_nimg."""
    rounds = []
    for batch in real_batches:
        params = draw_patch_params(s)
        img = patches.crop_patches(batch.images, params, s.patch_sampler.patch_resolution)  # [N, 3, r, r]
        s.tick_scales.append(params[:, 0].detach().cpu())
        c = one_hot_classes(batch.get('classes'), class_dim(s), s.device)  # reals pass their own class to D
        rounds.append(dnnlib.EasyDict(img=img, params=params, angles=real_angles(batch.labels), c=c))
    return rounds


def class_dim(s: TrainState) -> int:
    """G's number of classes: 0 for an unconditional run."""
    return getattr(s.G, 'c_dim', 0)


def draw_fake_classes(s: TrainState, N: int) -> torch.Tensor | None:
    """One-hot classes of one global round of fakes [batch_gpu, c_dim], or None when unconditional.

    The classes of random real items (StyleGAN2's recipe), so fakes follow the dataset's class
    distribution; drawn from the shared input stream, so every rank agrees on the global batch.
    Unconditional runs draw nothing, which keeps their stream unchanged.
    """
    if class_dim(s) == 0:
        return None
    classes = torch.as_tensor(s.dataset.classes)
    items = torch.randint(len(classes), [N], generator=s.input_stream)
    return one_hot_classes(rank_slice(s, classes[items]), class_dim(s), s.device)


def gen_inputs(s: TrainState) -> list:
    """Latents, cameras from the camera prior, patch parameters and (conditional G) classes per round."""
    rounds = []
    N = s.batch_gpu * s.world_size  # one global round; this rank keeps its rows
    for _ in range(s.num_rounds):
        z = rank_slice(s, torch.randn(N, s.G.z_dim, generator=s.input_stream))
        camera = rank_slice(s, s.camera_prior.sample(N, generator=s.input_stream))
        params = draw_patch_params(s)
        rounds.append(dnnlib.EasyDict(z=z, camera=camera, params=params, c=draw_fake_classes(s, N)))
    return rounds


def class_inputs(real, fake) -> dict:
    """The loss's real_c / gen_c, passed only for a class-conditional run (a loss may not take them)."""
    return {} if fake.c is None else dict(real_c=real.c, gen_c=fake.c)


def phase_inputs(s: TrainState, phase, shared: list | None) -> list:
    """The fake inputs of each round: fresh draws, except that with reuse_fakes (`shared` a list) Dmain
    takes Gmain's rounds, whose rendered patches Gmain kept, so a step renders G once instead of twice."""
    if shared and phase.name == 'Dmain':
        return shared
    rounds = gen_inputs(s)
    if shared is not None and phase.name == 'Gmain':
        shared[:] = rounds
    return rounds


def rendered_fakes(fake, kept: list | None) -> dict:
    """The loss's gen_images / keep_fakes, passed only when fakes are reused (a loss may not take them)."""
    out = {} if kept is None else dict(keep_fakes=kept)
    if fake.get('images') is not None:
        out['gen_images'] = fake.images
    return out


def run_phase(s: TrainState, phase, reals: list, gen_kwargs: dict, shared: list | None = None) -> None:
    """Accumulate the phase's gradients over the rounds, average them across ranks, take an Adam step.

    shared: None, or (reuse_fakes) the step's list through which Dmain reuses Gmain's fakes.
    """
    phase.opt.zero_grad(set_to_none=True)
    phase.module.requires_grad_(True)
    keep = shared is not None and phase.name == 'Gmain'
    loss_sum = None  # stays None if the loss does not return its value
    for real, fake in zip(reals, phase_inputs(s, phase, shared)):
        kept = [] if keep else None
        value = s.loss.accumulate_gradients(
            phase=phase.name,
            real_patches=real.img,
            real_patch_params=real.params,
            real_angles=real.angles,
            gen_z=fake.z,
            gen_camera=fake.camera,
            gen_patch_params=fake.params,
            gain=phase.interval,
            cur_nimg=s.progress.cur_nimg,
            gen_kwargs=gen_kwargs,
            **class_inputs(real, fake),
            **rendered_fakes(fake, kept),
        )
        if kept:
            fake.images = kept[0]  # G's patches before its step: Dmain trains D on them
        if value is not None:
            value = torch.as_tensor(value, dtype=torch.float32).detach().sum().cpu()
            loss_sum = value if loss_sum is None else loss_sum + value
    phase.module.requires_grad_(False)
    finite, clamped = reduce_gradients(phase.module, s.world_size, loss_sum)
    if not finite:
        raise NonFiniteLoss(phase.name)
    # 1 for a step whose inf/NaN gradients were clamped: stats.jsonl's mean * num counts them per tick.
    training_stats.report0(f'{NONFINITE_STAT}/{phase.name}', float(clamped))
    phase.opt.step()


def reduce_gradients(
    module: torch.nn.Module, world_size: int, loss_sum: torch.Tensor | None
) -> tuple[bool, bool]:
    """Average gradients across ranks in place; returns (finite, clamped), the same on every rank.

    finite is False if the phase diverged on any rank (a non-finite loss, or NaN gradients when the
    loss value is unknown), so all ranks stop together. Non-finite gradients with a finite loss (a
    mixed-precision overflow in D) are clamped as StyleGAN2-ADA does, and clamped says so: the loop
    counts such steps in stats.jsonl and warns in the progress line instead of hiding them.
    """
    params = [p for p in module.parameters() if p.grad is not None]
    device = params[0].device if params else torch.device('cpu')
    known = loss_sum is not None
    tail = torch.as_tensor(loss_sum if known else 0.0, dtype=torch.float32).reshape(1).to(device)
    flat = torch.cat([p.grad.flatten() for p in params] + [tail])
    if world_size > 1:
        torch.distributed.all_reduce(flat)
        flat /= world_size
    grads = flat[:-1]
    if not torch.isfinite(flat[-1]) or (not known and bool(torch.isnan(grads).any())):
        return False, False
    clamped = not bool(torch.isfinite(grads).all())
    if clamped:
        torch.nan_to_num(grads, nan=0, posinf=1e5, neginf=-1e5, out=grads)
    for p, grad in zip(params, grads.split([p.numel() for p in params])):
        p.grad = grad.reshape(p.shape)
    return True, clamped


@torch.no_grad()
def update_ema(s: TrainState) -> None:
    """G_ema <- lerp toward G with half-life ema_kimg, ramped up to cur_nimg * ema_rampup early on."""
    ema_nimg = s.c.ema_kimg * 1000
    if s.c.ema_rampup is not None:
        ema_nimg = min(ema_nimg, s.progress.cur_nimg * s.c.ema_rampup)
    ema_beta = 0.5 ** (s.c.batch / max(ema_nimg, 1e-8))
    for p_ema, p in zip(s.G_ema.parameters(), s.G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, ema_beta))
    for b_ema, b in zip(s.G_ema.buffers(), s.G.buffers()):
        b_ema.copy_(b)


def update_ada(s: TrainState) -> None:
    """ADA: the controller adjusts augment p every ada_interval steps from the D(real) signs the loss fed it."""
    if s.ada is not None:
        s.ada.step(s.augment_pipe)


def train_step(s: TrainState, real_batches: list, gen_kwargs: dict) -> None:
    """One step over the global batch; counters advance by `batch` images."""
    reals = prepare_reals(s, real_batches)
    shared = [] if s.c.get('reuse_fakes') else None  # Dmain trains on Gmain's fakes (one G render per step)
    for phase in s.phases:
        if s.progress.batch_idx % phase.interval == 0:
            run_phase(s, phase, reals, gen_kwargs, shared)
    update_ema(s)
    s.progress.cur_nimg += s.c.batch
    s.progress.batch_idx += 1
    update_ada(s)
    if s.augment_pipe is not None:
        training_stats.report0('Progress/augment', float(s.augment_pipe.p))


def check_consistency(s: TrainState) -> None:
    """Parameters and buffers agree across ranks (cheap enough to run at each snapshot)."""
    for name in ('G', 'D', 'G_ema'):
        # Running averages (the w average) follow each rank's own samples; everything else must agree.
        misc.check_ddp_consistency(getattr(s, name), ignore_regex=r'.*\.[^.]+_(avg|ema)')
