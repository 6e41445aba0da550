"""Training options: defaults (the paper's numbers), YAML presets in configs/, and their validation.

DEFAULTS is the one place an option's default is written: train.py's help texts show it (help_default),
and presets hold only their differences from it (tests/training/options/test_config_presets.py checks both).
Precedence: DEFAULTS < base preset < configs/<preset>.yaml < explicit command-line flags. A preset may set
only the keys of DEFAULTS, plus `base: <name>` to start from another preset (the paper presets start from
configs/epigraf.yaml, where they all differ from DEFAULTS, and hold only their own differences; a
`*_kwargs` mapping is merged key by key with the base's). Anything else is an error naming the file and key.
The dataset's own numbers (resolution, camera prior, radius, fov, ray bounds, cube scale, background,
mirror default) live once in configs/datasets/<name>.yaml and are referenced by the preset's `dataset`.
"""

import difflib
import os

import yaml

import dnnlib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO_ROOT, 'configs')
DATASET_PRESET_DIR = os.path.join(CONFIG_DIR, 'datasets')  # configs/datasets/<name>.yaml


class ConfigError(ValueError):
    """A user mistake in an option or a preset: the message is one line saying what and how to fix it."""


# Every key a preset may set, with its default. Aligned with one-line meanings (StyleGAN's kwargs style).
DEFAULTS = dict(
    dataset=None,  # Name of configs/datasets/<name>.yaml (camera prior, bounds, resolution).
    batch=64,  # Total batch size over all processes (§3.4: 64).
    batch_gpu=None,  # Batch per process and accumulation round; None = batch // gpus.
    gamma=0.05,  # R1 weight (§3.4: 0.05); 'auto' = 0.0002 * R^2 / batch (StyleGAN2-ADA's heuristic).
    kimg=25000,  # Training length in thousands of real images shown to D (B.1: 25M).
    tick=4,  # Progress line / stats every this many kimg.
    max_minutes=None,  # Also end (as done, with a snapshot) after this many minutes of training steps; None = no limit.
    snap=50,  # Snapshot, image grid and metrics every this many ticks.
    image_snap=None,  # Image grid every this many ticks; None = same as snap.
    metrics=['fid50k_full'],  # Metrics computed at each snapshot (metrics registry names).
    mirror=None,  # x-flip the dataset (and the yaw); None = the dataset preset's default.
    aug='ada',  # Augmentation: ada | noaug | fixed (§3.4: StyleGAN2-ADA's).
    p=0.2,  # Augmentation probability for aug=fixed.
    target=0.6,  # ADA target for E[sign(D(real))].
    ada_interval=4,  # Adjust ADA p every this many steps.
    ada_kimg=500,  # ADA speed: p can go 0 -> 1 in this many kimg.
    workers=3,  # DataLoader worker processes per process.
    fp32=False,  # Legacy switch: true = precision fp32 (no low precision anywhere).
    precision='auto',  # Conv precision of G's synthesis and D: auto | fp32 | bf16 | fp16 (torch_utils/precision.py).
    g_fp32=False,  # Keep G's synthesis in fp32 (the paper's setting: G fp32, D mixed); D follows `precision`.
    checkpoint='auto',  # Recompute G's high-res synthesis blocks in backward: auto (if memory needs it) | on | off.
    memory_budget_gb=4.0,  # For checkpoint=auto: checkpoint when the synthesis activations would exceed this.
    threads=None,  # CPU threads per process (OpenMP/MKL); None = one per core. Idle threads sleep (threads.py),
    # which costs a wake-up per parallel region: tiny configs (the demo) run faster on one thread.
    glr=0.002,  # G learning rate (§3.4: 0.002; the public code: 0.0025).
    dlr=0.002,  # D learning rate (§3.4: 0.002).
    betas=[0.0, 0.99],  # Adam betas for G and D (paper: 0, 0.99).
    reuse_fakes=True,  # Dmain trains D on Gmain's fakes (rendered before G's step) instead of rendering new
    # ones: one G forward per step instead of two (paper step 1.26x). False = the public code's (StyleGAN2's) order.
    r1_interval=16,  # Lazy R1: Dreg every this many steps (lr and betas adjusted accordingly).
    ema_kimg=20,  # G_ema half-life in kimg.
    ema_rampup=0.05,  # G_ema ramp-up: half-life at most cur_nimg * ema_rampup; None = no ramp-up.
    patch_res=64,  # Patch resolution r rendered by G and seen by D (§3.3: 64); a power of two.
    patch_dist='beta',  # Patch scale distribution: beta (§3.3, Eq. 5) | uniform (Eq. 4) | discrete.
    beta_end=0.8,  # Final beta(T) of the Beta(1, beta(t)) scale distribution (Eq. 5; §3.4: 0.8).
    anneal_kimg=10000,  # Annealing length T of the scale schedule in kimg (§3.4: 10000).
    hyper_mod=True,  # Hypernetwork modulation of D's filters by (s, dx, dy) (§3.2, Eq. 2, 7).
    hyper_mod_mode='input',  # input: conv1's input per block (public code; lower FID here) | output: Eq. 2.
    patch_cond=True,  # Feed D's patch embedding to its projection head as well (Sec. 3.2).
    blur_sigma=0.0,  # Initial blur std (patch pixels) of real and fake patches, faded out over the loss's
    # blur_fade_kimg. 0 = none: the paper's setup, inherited from StyleGAN2-ADA, has no blur.
    triplane_res=512,  # Tri-plane resolution Rp (§3.4: 512); a power of two.
    ray_steps=48,  # Coarse samples per ray, as many fine ones again, hierarchically (§3.1: 48 + 48).
    bg=False,  # NeRF++ background model (the paper's separate experiment).
    camera_cond=False,  # Condition D on (yaw, pitch) (B.1: on for FFHQ and Cats).
    cond=False,  # Class-conditional G and D from dataset.json's "classes" (the authors: M-Plants, M-Food).
    camera_prior=None,  # G's cameras: dataset (the dataset's poses) | fit (the preset's camera_fit) | None = preset's.
    density_noise_std=1.0,  # Gaussian noise on G's raw densities at the start (public code) ...
    density_noise_kimg=5000,  # ... annealed linearly to 0 over this many kimg; 0 = no noise.
    grid_seeds=8,  # Image grid: number of fixed seeds (rows).
    grid_cameras=4,  # Image grid: number of fixed cameras (columns).
    G_kwargs={},  # Extra Generator constructor kwargs (names checked against its signature).
    D_kwargs={},  # Extra PatchDiscriminator constructor kwargs.
    loss_kwargs={},  # Extra PatchLoss constructor kwargs.
    augment_kwargs={},  # Extra AugmentPipe constructor kwargs.
    sampler_kwargs={},  # Extra patch-sampler kwargs.
)


def help_default(key: str) -> str:
    """'  [default: <DEFAULTS[key]>]', the tail of the option's --help text (bools as on/off): so a default
    is written once, here, and a preset that changes it says so in its own file."""
    value = DEFAULTS[key]
    if isinstance(value, bool):
        text = 'on' if value else 'off'
    elif isinstance(value, float):
        text = f'{value:g}'
    elif isinstance(value, list):
        text = ','.join(str(v) for v in value) or 'none'
    else:
        text = str(value)
    return f'  [default: {text}]'


CHOICES = dict(
    aug=('ada', 'noaug', 'fixed'),
    patch_dist=('beta', 'uniform', 'discrete'),
    hyper_mod_mode=('output', 'input'),
    precision=('auto', 'fp32', 'bf16', 'fp16'),
    checkpoint=('auto', 'on', 'off'),
    camera_prior=('dataset', 'fit'),  # or None: the dataset preset's own camera_prior
)


def list_presets(folder: str = CONFIG_DIR) -> list[str]:
    """Names of configs/*.yaml (epigraf is the shared base of the paper presets, with no dataset), or of
    another preset folder's YAML files."""
    names = (
        [f[: -len('.yaml')] for f in os.listdir(folder) if f.endswith('.yaml')]
        if os.path.isdir(folder)
        else []
    )
    return sorted(names)


def _unknown_key_message(source: str, key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else f' (known keys: {", ".join(sorted(known))})'
    return f'{source}: unknown key "{key}"{hint}'


BASE_KEY = 'base'  # A preset's key naming the preset it starts from (not an option itself).


def _preset_path(name: str, relative_to: str | None = None, folder: str = CONFIG_DIR) -> str:
    """<folder>/<name>.yaml, or `name` itself if it is a YAML path (relative to `relative_to`'s folder)."""
    if not name.endswith(('.yaml', '.yml')):
        return os.path.join(folder, f'{name}.yaml')
    if relative_to is not None and not os.path.isabs(name):
        return os.path.join(os.path.dirname(relative_to), name)
    return name


def read_preset(name: str, known, where: str, folder: str = CONFIG_DIR, relative_to: str | None = None):
    """(path, mapping) of the YAML preset `name` in `folder` (or a YAML path), with only `known` keys.

    The one reader of both kinds of preset (configs/*.yaml and configs/datasets/*.yaml): a missing
    file, invalid YAML, a non-mapping or an unknown key is a ConfigError of one line naming the file.
    """
    path = _preset_path(name, relative_to, folder)
    if not os.path.isfile(path):
        raise ConfigError(
            f'{where}: no preset "{name}" ({path} not found); choose one of {", ".join(list_presets(folder))}'
        )
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as err:
        raise ConfigError(f'{path}: not valid YAML ({str(err).splitlines()[0]})') from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: a preset must be a mapping of key: value, got {type(data).__name__}')
    for key in data:
        if key not in known:
            raise ConfigError(_unknown_key_message(path, key, known))
    return path, data


def load_preset(name: str, _children: tuple = ()) -> dict:
    """The keys of configs/<name>.yaml merged over those of its `base` preset (if any), checked against
    DEFAULTS. `name` may also be a path to a YAML file."""
    where = f'{_children[-1]}: base' if _children else '--cfg'
    if os.path.abspath(_preset_path(name, _children[-1] if _children else None)) in _children:
        raise ConfigError(
            f'{_children[-1]}: base "{name}" leads back to itself; remove the cycle of "base" keys'
        )
    path, data = read_preset(
        name, [*DEFAULTS, BASE_KEY], where, relative_to=_children[-1] if _children else None
    )
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(
            f'{path}: base must be the name of a preset in configs/ (or a YAML path), got {base!r}'
        )
    merged = load_preset(base, _children + (os.path.abspath(path),))
    for key, value in data.items():
        both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = {**merged[key], **value} if both_dicts else value
    return merged


def resolve(preset: dict, flags: dict) -> dnnlib.EasyDict:
    """DEFAULTS < preset < flags (flags whose value is None were not given and do not override)."""
    opts = dnnlib.EasyDict({k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()})
    opts.update(preset)
    for key, value in flags.items():
        if key not in DEFAULTS:
            raise ConfigError(_unknown_key_message('command line', key, DEFAULTS))
        if value is not None:
            opts[key] = value
    if opts.image_snap is None:
        opts.image_snap = opts.snap
    return opts


def _check_positive(opts, keys, source):
    for key in keys:
        value = opts[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f'{source}: {key} must be a positive number, got {value!r}')


def _check_power_of_two(opts, key: str, low: int, why: str) -> None:
    value = opts[key]
    if isinstance(value, int) and value >= low and value & (value - 1) == 0:
        return
    below = 2 ** max(int(value).bit_length() - 1, 0) if isinstance(value, (int, float)) else low
    hint = f'{below} or {below * 2}' if below >= low else str(low)
    raise ConfigError(
        f'--{key.replace("_", "-")} {value!r} must be a power of two >= {low} ({why}); try {hint}'
    )


def is_thread_count(value) -> bool:
    """A usable `threads` value: a whole number >= 1 (None, one per core, is checked by the caller)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def validate(opts: dnnlib.EasyDict, num_gpus: int, source: str = 'options') -> None:
    """Check ranges and divisibility; raise ConfigError with one line naming the option."""
    if opts.dataset is None:
        raise ConfigError(f'{source}: the preset sets no "dataset" (name of a configs/datasets/*.yaml)')
    _check_positive(
        opts, ['batch', 'kimg', 'tick', 'snap', 'image_snap', 'patch_res', 'triplane_res'], source
    )
    _check_positive(opts, ['ray_steps', 'glr', 'dlr', 'r1_interval', 'ada_interval', 'ada_kimg'], source)
    _check_positive(opts, ['anneal_kimg', 'ema_kimg', 'grid_seeds', 'grid_cameras'], source)
    if (
        not isinstance(opts.blur_sigma, (int, float))
        or isinstance(opts.blur_sigma, bool)
        or opts.blur_sigma < 0
    ):
        raise ConfigError(f'{source}: blur_sigma must be a number >= 0, got {opts.blur_sigma!r}')
    if opts.density_noise_std < 0 or opts.density_noise_kimg < 0:
        raise ConfigError(f'{source}: density_noise_std and density_noise_kimg must be >= 0')
    for key, choices in CHOICES.items():
        if opts[key] not in choices and not (key == 'camera_prior' and opts[key] is None):
            raise ConfigError(f'{source}: {key} must be one of {", ".join(choices)}, got {opts[key]!r}')
    _check_power_of_two(opts, 'patch_res', 8, 'D halves the patch block by block down to 4x4')
    _check_power_of_two(opts, 'triplane_res', 4, 'the synthesis network doubles 4x4 planes up to it')
    if not isinstance(opts.ray_steps, int) or opts.ray_steps < 2:
        raise ConfigError(
            f'--ray-steps {opts.ray_steps!r} must be a whole number >= 2 (samples bound each interval)'
        )
    opts.gamma = parse_gamma(opts.gamma, source)
    _check_positive(opts, ['memory_budget_gb'], source)
    if opts.max_minutes is not None:
        _check_positive(opts, ['max_minutes'], source)
    if opts.threads is not None and not is_thread_count(opts.threads):
        raise ConfigError(f'{source}: threads must be a whole number >= 1 or null, got {opts.threads!r}')
    if not 0 <= opts.target <= 1 or not 0 <= opts.p <= 1:
        raise ConfigError(f'--target and p must lie in [0, 1], got target={opts.target}, p={opts.p}')
    if opts.batch % num_gpus != 0:
        raise ConfigError(
            f'--batch {opts.batch} is not divisible by --gpus {num_gpus}: pick a multiple of {num_gpus}'
        )
    per_gpu = opts.batch // num_gpus
    batch_gpu = opts.batch_gpu or per_gpu
    if batch_gpu <= 0 or per_gpu % batch_gpu != 0:
        raise ConfigError(
            f'--batch-gpu {batch_gpu} must divide the per-process batch {per_gpu} (= --batch / --gpus)'
        )
    if len(opts.betas) != 2 or not all(0 <= b < 1 for b in opts.betas):
        raise ConfigError(f'{source}: betas must be two numbers in [0, 1), got {opts.betas!r}')
    for key in ('G_kwargs', 'D_kwargs', 'loss_kwargs', 'augment_kwargs', 'sampler_kwargs'):
        if not isinstance(opts[key], dict):
            raise ConfigError(f'{source}: {key} must be a mapping, got {opts[key]!r}')
    if not isinstance(opts.cond, bool):
        raise ConfigError(f'{source}: cond must be true or false, got {opts.cond!r}')
    if not isinstance(opts.metrics, list):
        raise ConfigError(f'{source}: metrics must be a list of names, got {opts.metrics!r}')


def parse_gamma(value, source: str = '--gamma'):
    """A number >= 0 or 'auto' (from a flag's text or a preset's value); anything else is a ConfigError."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == 'auto':
            return 'auto'
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{source}: gamma must be a number >= 0 or 'auto', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{source}: gamma must be a number >= 0 or 'auto', got {value!r}")
    return value


def resolve_gamma(gamma, img_resolution: int, batch: int) -> float:
    """The R1 weight as a number: 'auto' = 0.0002 * R^2 / batch (StyleGAN2-ADA's heuristic, R = full image size,
    batch = the total batch). The one place 'auto' is resolved; the loss only ever sees the number."""
    return 0.0002 * img_resolution**2 / batch if gamma == 'auto' else float(gamma)


def parse_metrics(text: str | None) -> list[str] | None:
    """'fid50k_full,kid50k_full' -> list; 'none' -> []; None -> None (not given)."""
    if text is None:
        return None
    if text.strip().lower() in ('', 'none'):
        return []
    return [name.strip() for name in text.split(',') if name.strip()]
