"""Resolved options -> the constructor kwargs of every object the loop builds (plain data, by class name).

This is the one place where a preset's numbers meet the modules' signatures: the dataset preset
(configs/datasets/<name>.yaml) supplies the camera prior and the scene bounds, the model preset and
the flags supply the rest, and every extra `*_kwargs` key is checked against the constructor it goes
to, so a misspelt key is a one-line error before any process starts.
"""

import inspect
import os

import dnnlib
from training.options import config

# Stable names from dnnlib/registry.py: what training_options.json and snapshots store.
G_CLASS = 'pgrf.Generator'
D_CLASS = 'pgrf.Discriminator'
LOSS_CLASS = 'pgrf.PatchLoss'
AUGMENT_CLASS = 'pgrf.AugmentPipe'
ADA_CLASS = 'pgrf.AdaController'
DATASET_CLASS = 'pgrf.ImageFolderDataset'
CAMERA_PRIOR_CLASS = 'pgrf.make_camera_prior'


def check_kwargs(class_name: str, kwargs: dict, source: str, skip=()) -> None:
    """Raise ConfigError if `kwargs` has a key that the constructor of `class_name` does not take."""
    _check_names(dnnlib.util.get_obj_by_name(class_name), kwargs, f'{source} ({class_name})', skip)


def _check_names(obj, kwargs: dict, source: str, skip=()) -> None:
    fn = obj.__init__ if inspect.isclass(obj) else obj
    params = inspect.signature(fn).parameters
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = set(params) - {'self'} - set(skip)
    for key in kwargs:
        if key not in known:
            raise config.ConfigError(config._unknown_key_message(source, key, known))


def _check_builds(build, kwargs: dict, source: str) -> None:
    """Build a cheap object (sampler, loss, augment pipe, ADA) once from its kwargs, so that a value its
    constructor rejects is a one-line ConfigError here rather than a traceback inside every process."""
    try:
        build(**kwargs)
    except ValueError as err:
        raise config.ConfigError(f'{source}: {err}') from None


def _signature_default(class_name: str, name: str):
    return inspect.signature(dnnlib.util.get_obj_by_name(class_name).__init__).parameters[name].default


def load_dataset(data_path: str | None, dataset_preset: dict, mirror: bool, source: str):
    """Open the dataset once to check it (exists, readable, resolution of the preset)."""
    from training import dataset as dataset_module

    if data_path is None:
        raise config.ConfigError(f'--data is missing and {source} names no default path; pass --data PATH')
    if not os.path.exists(data_path):
        hint = (
            ' (render it with: python scripts/dataset_tool.py demo --dest data/demo)'
            if 'demo' in data_path
            else ''
        )
        raise config.ConfigError(f'--data {data_path}: no such file or folder{hint}')
    try:
        ds = dataset_module.ImageFolderDataset(
            data_path, mirror=mirror, background=dataset_preset['background']
        )
    except dataset_module.DatasetError as err:
        raise config.ConfigError(f'--data: {err}') from None
    if ds.resolution != dataset_preset['resolution']:
        raise config.ConfigError(
            f'--data {data_path}: images are {ds.resolution}x{ds.resolution} but {source} expects '
            f'{dataset_preset["resolution"]}x{dataset_preset["resolution"]}; convert the dataset or pick another --cfg'
        )
    return ds


def load_dataset_preset(name: str, source: str) -> dict:
    from training import dataset as dataset_module

    try:
        return dataset_module.load_dataset_preset(name)
    except dataset_module.DatasetError as err:
        raise config.ConfigError(f'{source}: dataset: {err}') from None


# What derive adds to the user's resolved options: the numbers computed from them and the constructor kwargs
# of every object the loop builds (`*_kwargs` that are also options hold the user's extras merged into the
# complete kwargs; batch_gpu and mirror get their None resolved). Every other key of training_options.json
# is an option exactly as config.resolve gave it (config.DEFAULTS) or a key of the run (launch.RUN_KEYS).
DERIVED_KEYS = (
    'batch_gpu', 'mirror', 'data', 'dataset_size', 'dataset_preset', 'resolved_precision', 'dataset_kwargs',
    'camera_prior_kwargs', 'G_kwargs', 'D_kwargs', 'sampler_kwargs', 'loss_kwargs', 'augment_kwargs', 'ada_kwargs',
    'class_names',  # only in a class-conditional run: gen_samples.py --class accepts a name
)  # fmt: skip


def derive_training_kwargs(opts, data_path, num_gpus: int, preset_source: str) -> dnnlib.EasyDict:
    """The options plus DERIVED_KEYS: everything a training process needs, as plain data (opens the dataset
    once to check it)."""
    dp = load_dataset_preset(opts.dataset, preset_source)
    mirror = dp['mirror'] if opts.mirror is None else bool(opts.mirror)
    data_path = data_path if data_path is not None else dp['path']
    c = model_kwargs(opts, dp, opts.batch_gpu or opts.batch // num_gpus, preset_source)
    ds = load_dataset(data_path, dp, mirror, preset_source)
    class_conditioning(opts, ds, c)
    c.update(mirror=mirror, data=os.path.abspath(data_path), dataset_size=len(ds))
    c.dataset_kwargs = dict(
        class_name=DATASET_CLASS, path=c.data, resolution=dp['resolution'], mirror=mirror,
        background=dp['background'],
    )  # fmt: skip
    return c


def class_conditioning(opts, ds, c) -> int:
    """With `cond`, G's mapping and D's projection get c_dim = the dataset's number of classes; returns it
    (0 for an unconditional run)."""
    for key in ('G_kwargs', 'D_kwargs'):
        if 'c_dim' in opts[key]:
            raise config.ConfigError(
                f'{key}.c_dim has its own option; set "cond: true" (--cond) and the classes in dataset.json'
            )
    if not opts.cond:
        return 0
    if ds.num_classes == 0:
        raise config.ConfigError(
            f'--cond: {ds.path} has no class labels; add "classes": [[image name, class index], ...] (and '
            f'optionally "class_names") to its dataset.json, or train with --cond false'
        )
    c.G_kwargs['c_dim'] = c.D_kwargs['c_dim'] = ds.num_classes
    c.class_names = list(ds.class_names)  # kept in snapshots: gen_samples.py --class accepts a name
    return ds.num_classes


def model_kwargs(opts, dp: dict, batch_gpu: int, source: str) -> dnnlib.EasyDict:
    """The options plus the kwargs of G, D, the loss, augmentation, ADA, the camera prior and the sampler."""
    R = dp['resolution']
    if opts.patch_res > R:
        raise config.ConfigError(f'--patch-res {opts.patch_res} is larger than the image resolution {R}')
    c = dnnlib.EasyDict(opts)
    c.batch_gpu = batch_gpu
    c.dataset_preset = dp
    from training.dataset import preset_camera_prior

    try:
        kind, angles = preset_camera_prior(dp, opts.camera_prior)
    except ValueError as err:
        raise config.ConfigError(f'--camera-prior: {err}') from None
    c.camera_prior_kwargs = dict(
        class_name=CAMERA_PRIOR_CLASS, kind=kind, radius=dp['radius'], fov=dp['fov'], **angles,
    )  # fmt: skip
    _check_metrics(opts.metrics)
    c.resolved_precision = resolve_precisions(opts)
    c.G_kwargs = _generator_kwargs(opts, dp, source)
    c.G_kwargs.setdefault('precision', c.resolved_precision['G'])
    if 'checkpoint_res' not in c.G_kwargs:
        c.G_kwargs['checkpoint_res'] = checkpoint_res_for_budget(opts, c.G_kwargs, batch_gpu)
    if 'checkpoint_decode' not in c.G_kwargs:
        c.G_kwargs['checkpoint_decode'] = checkpoint_decode_for_budget(opts, c.G_kwargs, batch_gpu)
    c.D_kwargs = _discriminator_kwargs(opts, R, source)
    c.D_kwargs.setdefault('precision', c.resolved_precision['D'])
    c.sampler_kwargs = _sampler_kwargs(opts, R, c.D_kwargs, batch_gpu, source)
    c.loss_kwargs = _loss_kwargs(opts, R, source)
    c.augment_kwargs = None
    if opts.aug != 'noaug':
        check_kwargs(AUGMENT_CLASS, opts.augment_kwargs, f'{source}: augment_kwargs')
        init_p = opts.p if opts.aug == 'fixed' else 0.0
        c.augment_kwargs = dict(class_name=AUGMENT_CLASS, init_p=init_p, **opts.augment_kwargs)
        _check_builds(dnnlib.construct_class_by_name, c.augment_kwargs, f'{source}: augment_kwargs')
    c.ada_kwargs = dict(
        class_name=ADA_CLASS, target=opts.target, interval=opts.ada_interval, speed_kimg=opts.ada_kimg,
        batch_size=opts.batch,
    )  # fmt: skip
    if opts.aug == 'ada':
        _check_builds(dnnlib.construct_class_by_name, c.ada_kwargs, '--aug ada')
    return c


def resolve_precisions(opts) -> dict:
    """{'G': synthesis precision, 'D': conv-block precision} on this machine's hardware ('auto' resolved)."""
    from torch_utils import precision

    name = 'fp32' if opts.fp32 else precision.resolve(opts.precision)
    return dict(G='fp32' if opts.g_fp32 else name, D=name)


# Bytes per activation element kept for backward by the synthesis convs, by precision; the skip output is fp32.
_ACT_BYTES = dict(fp32=4, bf16=2, fp16=2)
CHECKPOINT_RES = 128  # With checkpointing, blocks at resolutions >= this are recomputed in backward.


def synthesis_activation_gb(G_kwargs: dict, batch_gpu: int) -> float:
    """Estimated memory the synthesis blocks at res >= CHECKPOINT_RES keep for backward, without checkpointing.

    Per block: about 3 conv-width tensors (scaled input, conv output, activation) in the conv precision and
    2 plane-width skip tensors in fp32, each N x res^2 (a model of the layers, not a measurement: at the
    paper config, batch 4, bf16, the step's peak resident memory was 4.9 GB without checkpointing).
    """
    gen = lambda name: G_kwargs.get(name, _signature_default(G_CLASS, name))  # noqa: E731
    Rp, planes = gen('plane_resolution'), 3 * gen('plane_channels')
    act = _ACT_BYTES[G_kwargs.get('precision', 'fp32')]
    total, res = 0, CHECKPOINT_RES
    while res <= Rp:
        channels = min(gen('channel_base') // res, gen('channel_max'))
        total += batch_gpu * res * res * (3 * channels * act + 2 * planes * 4)
        res *= 2
    return total / 2**30


def checkpoint_res_for_budget(opts, G_kwargs: dict, batch_gpu: int) -> int | None:
    """checkpoint on|off, or auto: recompute only when the activations would not fit memory_budget_gb."""
    if opts.checkpoint == 'on':
        return CHECKPOINT_RES
    if opts.checkpoint == 'off':
        return None
    return CHECKPOINT_RES if synthesis_activation_gb(G_kwargs, batch_gpu) > opts.memory_budget_gb else None


# checkpoint=auto recomputes the decoder when its activations exceed this share of the memory budget.
DECODE_BUDGET_SHARE = 1 / 16


def decoder_activation_gb(G_kwargs: dict, batch_gpu: int) -> float:
    """Estimated memory the tri-plane decoder keeps for backward in one training render, without checkpointing.

    Per point: the plane features (C), the hidden activation, and about 16 floats of grid coordinates and
    outputs (a model of `TriPlaneDecoder.decode`; at the paper config, batch 4, it is 0.7 GB, which
    would take the step's peak past 4.7 GB; at the demo's 16 MB recomputation only costs time).
    """
    gen = lambda name: G_kwargs.get(name, _signature_default(G_CLASS, name))  # noqa: E731
    points = batch_gpu * gen('patch_resolution') ** 2 * (gen('num_coarse') + gen('num_fine'))
    return points * (gen('plane_channels') + gen('decoder_hidden') + 16) * 4 / 2**30


def checkpoint_decode_for_budget(opts, G_kwargs: dict, batch_gpu: int) -> bool:
    """checkpoint on|off, or auto: recompute the decoder only when it would keep a sizeable share of the budget."""
    if opts.checkpoint in ('on', 'off'):
        return opts.checkpoint == 'on'
    return decoder_activation_gb(G_kwargs, batch_gpu) > opts.memory_budget_gb * DECODE_BUDGET_SHARE


def _check_metrics(names: list) -> None:
    if not names:
        return
    from metrics import metric_main

    for name in names:
        if not metric_main.is_valid_metric(name):
            valid = ', '.join(metric_main.list_valid_metrics())
            raise config.ConfigError(f'--metrics: unknown metric "{name}"; valid: {valid} (or none)')


def _sampler_kwargs(opts, R: int, D_kwargs: dict, batch_gpu: int, source: str) -> dict:
    """One (s, dx, dy) per minibatch-stddev group of D, as the public code draws them (else mbstd would
    compare patches of different scales); Eq. 3's independence holds across groups."""
    group = D_kwargs.get('mbstd_group_size', _signature_default(D_CLASS, 'mbstd_group_size'))
    group = min(group, batch_gpu)
    if batch_gpu % group != 0:
        raise config.ConfigError(
            f"--batch-gpu {batch_gpu} must be a multiple of D's minibatch-stddev group size {group}"
        )
    from training import patches

    where = f'{source}: sampler_kwargs'
    _check_names(patches.PATCH_SAMPLERS[opts.patch_dist], opts.sampler_kwargs, f'{where} ({opts.patch_dist})')
    _check_own_options(opts, 'sampler_kwargs', source)
    kw = dict(kind=opts.patch_dist, img_resolution=R, patch_resolution=opts.patch_res, group_size=group)
    if opts.patch_dist == 'beta':
        kw.update(beta_end=opts.beta_end, anneal_kimg=opts.anneal_kimg)
    elif opts.patch_dist == 'uniform':
        kw.update(anneal_kimg=opts.anneal_kimg)
    kw.update(opts.sampler_kwargs)
    _check_builds(patches.make_patch_sampler, kw, where)
    return kw


def _generator_kwargs(opts, dp: dict, source: str) -> dict:
    """Paper defaults live in Generator's signature; the dataset preset gives the scene, the flags the sizes."""
    check_kwargs(G_CLASS, opts.G_kwargs, f'{source}: G_kwargs')
    background = dp['background'] if dp['background'] in ('white', 'black') else 'white'
    kw = dict(
        class_name=G_CLASS, img_resolution=dp['resolution'], patch_resolution=opts.patch_res,
        plane_resolution=opts.triplane_res, num_coarse=opts.ray_steps, num_fine=opts.ray_steps,
        scene_bounds=dp['cube_scale'], ray_start=dp['ray_start'], ray_end=dp['ray_end'],
        background=background, bg_model=bool(opts.bg),
    )  # fmt: skip
    kw.update(opts.G_kwargs)  # a preset's G_kwargs may refine anything (e.g. num_fine)
    return kw


# Constructor kwargs that have their own option (and flag): set them there, so that a flag can override them.
OWN_OPTION = dict(
    D_kwargs=dict(hyper_mod='hyper_mod', hyper_mod_mode='hyper_mod_mode', patch_cond='patch_cond',
                  camera_cond='camera_cond', img_resolution='dataset', patch_resolution='patch_res'),
    loss_kwargs=dict(r1_gamma='gamma', blur_init_sigma='blur_sigma'),
    sampler_kwargs=dict(kind='patch_dist', img_resolution='dataset', patch_resolution='patch_res',
                        beta_end='beta_end', anneal_kimg='anneal_kimg', group_size='D_kwargs.mbstd_group_size'),
)  # fmt: skip


def _check_own_options(opts, key: str, source: str) -> None:
    for name, option in OWN_OPTION[key].items():
        if name in opts[key]:
            raise config.ConfigError(
                f'{source}: {key}.{name} has its own option; set "{option}" instead (flags can then override it)'
            )


def _discriminator_kwargs(opts, R: int, source: str) -> dict:
    check_kwargs(D_CLASS, opts.D_kwargs, f'{source}: D_kwargs')
    _check_own_options(opts, 'D_kwargs', source)
    kw = dict(
        class_name=D_CLASS, img_resolution=R, patch_resolution=opts.patch_res, hyper_mod=bool(opts.hyper_mod),
        hyper_mod_mode=opts.hyper_mod_mode, camera_cond=bool(opts.camera_cond), patch_cond=bool(opts.patch_cond),
    )  # fmt: skip
    if opts.fp32:
        kw.update(num_fp16_res=0)
    kw.update(opts.D_kwargs)
    return kw


def _loss_kwargs(opts, R: int, source: str) -> dict:
    """gamma 'auto' is resolved here (R = full image size, the total batch), so the number is in the options."""
    check_kwargs(
        LOSS_CLASS, opts.loss_kwargs, f'{source}: loss_kwargs', skip=('device', 'G', 'D', 'augment_pipe')
    )
    _check_own_options(opts, 'loss_kwargs', source)
    r1_gamma = config.resolve_gamma(opts.gamma, R, opts.batch)
    kw = dict(
        class_name=LOSS_CLASS, r1_gamma=r1_gamma, blur_init_sigma=float(opts.blur_sigma), **opts.loss_kwargs
    )
    no_modules = dict(
        device='cpu', G=None, D=None
    )  # the loss only stores them; its numbers are what is checked
    _check_builds(dnnlib.construct_class_by_name, {**kw, **no_modules}, f'{source}: loss_kwargs')
    return kw
