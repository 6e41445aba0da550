"""Train a patch-wise 3D-aware GAN (tri-plane NeRF generator, patch discriminator).

Examples:
    python train.py --outdir runs --cfg demo --data data/demo
    python train.py --outdir runs --cfg ffhq256 --data datasets/ffhq256.zip --gpus 8
    torchrun --nproc_per_node 8 train.py --outdir runs --cfg ffhq256 --data datasets/ffhq256.zip
    python train.py --outdir runs --cfg ffhq256 --data datasets/ffhq256.zip --resume latest
"""

import json
import os

# Large transient tensors of the tri-plane synthesis would otherwise be mmapped and unmapped every step;
# transparent huge pages cut the page faults ~27x at a lower peak (scripts/bench.py --malloc thp). Must be
# set before torch allocates anything.
os.environ.setdefault('THP_MEM_ALLOC_ENABLE', '1')

import click  # noqa: E402

from torch_utils import threads as threads_lib  # noqa: E402
from training.loop import run_dir  # noqa: E402
from training.options import config, launch  # noqa: E402


def _flags(**kw) -> dict:
    """Only the preset-settable options; None means 'not given on the command line'."""
    return {k: v for k, v in kw.items() if k in config.DEFAULTS}


# fmt: off
@click.command(context_settings=dict(max_content_width=110))
# Required.
@click.option('--outdir', help='Where to make the run directory.', metavar='DIR', required=True)
@click.option('--cfg', help='Preset in configs/ (or a YAML path); it changes some of the defaults below.', metavar='NAME', required=True)
@click.option('--data', help='Dataset folder or zip  [default: the dataset preset\'s path]', metavar='PATH')
@click.option('--gpus', help='Processes to spawn locally (torchrun sets this itself).', type=click.IntRange(min=1), default=1, show_default=True)
# Training length, batch, regularization.
@click.option('--batch', help='Total batch size' + config.help_default('batch'), type=click.IntRange(min=1))
@click.option('--batch-gpu', 'batch_gpu', help='Batch per process and round  [default: batch/gpus]', type=click.IntRange(min=1))
@click.option('--gamma', help="R1 weight, a number >= 0 or 'auto' (0.0002*R^2/batch)" + config.help_default('gamma'), metavar='FLOAT|auto')
@click.option('--kimg', help='Length in thousands of real images' + config.help_default('kimg'), type=click.FloatRange(min=0, min_open=True))
@click.option('--max-minutes', 'max_minutes', help='Also end after this many minutes of training steps (summed over resumes; a snapshot is written)  [default: no limit]', type=click.FloatRange(min=0, min_open=True))
@click.option('--tick', help='Progress line every this many kimg' + config.help_default('tick'), type=click.FloatRange(min=0, min_open=True))
@click.option('--snap', help='Snapshot every this many ticks' + config.help_default('snap'), type=click.IntRange(min=1))
@click.option('--metrics', help="Comma-separated metrics at each snapshot, or 'none'" + config.help_default('metrics'), metavar='LIST')
@click.option('--glr', help='G learning rate' + config.help_default('glr'), type=click.FloatRange(min=0, min_open=True))
@click.option('--dlr', help='D learning rate' + config.help_default('dlr'), type=click.FloatRange(min=0, min_open=True))
# Data and augmentation.
@click.option('--mirror', help='x-flip the dataset and the yaw  [default: dataset preset]', type=bool, metavar='BOOL')
@click.option('--aug', help='Augmentation mode' + config.help_default('aug'), type=click.Choice(config.CHOICES['aug']))
@click.option('--target', help='ADA target' + config.help_default('target'), type=click.FloatRange(0, 1))
@click.option('--p', help='Augment probability for --aug fixed' + config.help_default('p'), type=click.FloatRange(0, 1))
@click.option('--workers', help='DataLoader workers per process' + config.help_default('workers'), type=click.IntRange(min=0))
# The method's knobs.
@click.option('--patch-res', 'patch_res', help='Patch resolution r' + config.help_default('patch_res'), type=click.IntRange(min=1))
@click.option('--patch-dist', 'patch_dist', help='Patch scale distribution' + config.help_default('patch_dist'), type=click.Choice(config.CHOICES['patch_dist']))
@click.option('--beta-end', 'beta_end', help='Final beta(T) of Beta(1, beta(t))' + config.help_default('beta_end'), type=click.FloatRange(min=0, min_open=True))
@click.option('--anneal-kimg', 'anneal_kimg', help='Scale annealing length T in kimg' + config.help_default('anneal_kimg'), type=click.FloatRange(min=0, min_open=True))
@click.option('--hyper-mod/--no-hyper-mod', 'hyper_mod', default=None, help='Hypernetwork-modulated D' + config.help_default('hyper_mod'))
@click.option('--hyper-mod-mode', 'hyper_mod_mode', help="Where sigma modulates: conv1's inputs per block (public code) or each conv's outputs (Eq. 2)" + config.help_default('hyper_mod_mode'), type=click.Choice(config.CHOICES['hyper_mod_mode']))
@click.option('--patch-cond/--no-patch-cond', 'patch_cond', default=None, help="Feed the patch embedding to D's projection head (Sec. 3.2)" + config.help_default('patch_cond'))
@click.option('--blur-sigma', 'blur_sigma', help='Initial blur sigma (patch pixels, exp2 kernel) of real and fake patches, faded out over 200 kimg' + config.help_default('blur_sigma'), type=click.FloatRange(min=0))
@click.option('--triplane-res', 'triplane_res', help='Tri-plane resolution Rp' + config.help_default('triplane_res'), type=click.IntRange(min=4))
@click.option('--ray-steps', 'ray_steps', help='Coarse (= fine) samples per ray' + config.help_default('ray_steps'), type=click.IntRange(min=2))
@click.option('--bg/--no-bg', 'bg', default=None, help='NeRF++ background model' + config.help_default('bg'))
@click.option('--camera-cond/--no-camera-cond', 'camera_cond', default=None, help='Condition D on yaw/pitch' + config.help_default('camera_cond'))
@click.option('--cond', help='Class-conditional G and D from the classes in dataset.json' + config.help_default('cond'), type=bool, metavar='BOOL')
@click.option('--fp32', help='Legacy: true = --precision fp32' + config.help_default('fp32'), type=bool, metavar='BOOL')
@click.option('--precision', help="Conv precision of G's synthesis and D; auto = bf16 on CPUs/GPUs with native bf16, fp16 on V100-class GPUs, else fp32" + config.help_default('precision'), type=click.Choice(config.CHOICES['precision']))
@click.option('--reuse-fakes', 'reuse_fakes', help="D trains on G's step's fakes instead of rendering new ones (one G forward per step)" + config.help_default('reuse_fakes'), type=bool, metavar='BOOL')
@click.option('--g-fp32', 'g_fp32', help="Keep G's synthesis fp32 (the paper: G fp32, D mixed)" + config.help_default('g_fp32'), type=bool, metavar='BOOL')
@click.option('--checkpoint', help="Recompute G's high-res synthesis blocks in backward; auto = when --memory-budget-gb needs it" + config.help_default('checkpoint'), type=click.Choice(config.CHOICES['checkpoint']))
@click.option('--memory-budget-gb', 'memory_budget_gb', help='Synthesis activation memory above which --checkpoint auto recomputes' + config.help_default('memory_budget_gb'), type=click.FloatRange(min=0, min_open=True))
@click.option('--threads', help='CPU threads per process (OpenMP/MKL); idle threads sleep, so processes sharing cores degrade gracefully  [default: the preset\'s (demo: 1), else one per core]', type=click.IntRange(min=1))
@click.option('--camera-prior', 'camera_prior', help="G's cameras: the dataset's poses or the preset's fitted prior  [default: dataset preset]", type=click.Choice(config.CHOICES['camera_prior']))
# Misc.
@click.option('--resume', help="Resume: 'latest', a run directory, or a snapshot file", metavar='WHAT')
@click.option('--seed', help='Random seed', type=int, default=0, show_default=True)
@click.option('--desc', help='String appended to the run directory name', metavar='STR')
@click.option('--dry-run', 'dry_run', is_flag=True, help='Print the resolved options and exit')
# fmt: on
def main(outdir, cfg, data, gpus, resume, seed, desc, dry_run, metrics, threads, **kw):
    """Train a tri-plane NeRF GAN on r x r patches of random scale (EpiGRAF)."""
    threads_lib.configure(threads or _preset_threads(cfg))  # before torch loads (the resolution below imports it)
    try:
        if kw['gamma'] is not None:
            kw['gamma'] = config.parse_gamma(kw['gamma'])
        flags = _flags(metrics=config.parse_metrics(metrics), threads=threads, **kw)
        c = launch.resolve_training_options(
            outdir=outdir, cfg=cfg, data=data, gpus=gpus, resume=resume, seed=seed, desc=desc, flags=flags
        )
    except (config.ConfigError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    if dry_run:
        click.echo(json.dumps(c, indent=2, sort_keys=True))
        click.echo('Dry run: nothing was written.')
        return
    _fetch_feature_net(c.metrics)
    try:
        launch.launch(c)
    except run_dir.TrainingStopped as err:
        raise click.ClickException(str(err)) from None


def _preset_threads(cfg: str) -> int | None:
    """The preset's `threads` (read without torch); a broken preset is reported by the full resolution later."""
    try:
        threads = config.load_preset(cfg).get('threads')
    except config.ConfigError:
        return None
    return threads if config.is_thread_count(threads) else None  # a bad value: refused by the resolution


def _fetch_feature_net(metrics: list[str]) -> None:
    """Get the FID network's weights now, so an offline machine fails before training, not at the first snapshot."""
    from metrics import inception, metric_main

    if not any(metric_main.uses_feature_net(m) for m in metrics):
        return
    try:
        inception.resolve_weights_path()
    except OSError as err:
        raise click.ClickException(
            f'--metrics {",".join(metrics)} needs the FID Inception weights: {err} '
            f'(set ${inception.ENV_VAR} to a local copy, or train with --metrics none)'
        ) from None


if __name__ == '__main__':
    main()
