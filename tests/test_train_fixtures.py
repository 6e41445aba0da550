"""Shared helpers for the training tests: a tiny posed dataset and tiny presets (no tests here).

The dataset: 12 images 16x16 of a coloured disc on white, with cameras on a sphere of radius 3.5
looking at the origin (the demo's protocol), so every real code path runs in a fraction of a second.
"""

import json
import os

import numpy as np
import PIL.Image
import torch

from training import cameras

TINY_PRESET = """\
dataset: {dataset_yaml}
batch: 4
batch_gpu: 2
gamma: 0.05
kimg: 0.032
tick: 0.016
snap: 1
image_snap: 1
metrics: []
aug: ada
ada_kimg: 0.1
r1_interval: 4
patch_res: 8
anneal_kimg: 0.1
triplane_res: 8
ray_steps: 4
camera_cond: true
workers: 0
fp32: true
ema_kimg: 0.01
density_noise_kimg: 0.05
grid_seeds: 2
grid_cameras: 2
G_kwargs: {{z_dim: 8, w_dim: 8, plane_channels: 4, channel_base: 64, channel_max: 8, decoder_hidden: 8,
           checkpoint_res: null}}
D_kwargs: {{channel_base: 64, channel_max: 8, hyper_dim: 8, hyper_table_dim: 4, hyper_num_freqs: 2, cmap_dim: 8,
           camera_num_freqs: 2, mbstd_group_size: 2}}
"""

TINY_DATASET_PRESET = """\
description: tiny test dataset (coloured discs, demo camera protocol)
path: null
resolution: 16
mirror: false
background: white
camera_prior: uniform_sphere
camera_prior_kwargs: {yaw_mean: 0.0, yaw_range: 3.141592653589793, pitch_mean: 1.5707963267948966,
                      pitch_range: 1.2}
radius: 3.5
fov: 45.0
ray_start: 1.75
ray_end: 5.25
cube_scale: 1.0
"""


def make_tiny_dataset(root: str, n: int = 12, res: int = 16) -> str:
    """A folder of n RGB images + dataset.json; returns its path."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.RandomState(0)
    yaw = torch.from_numpy(rng.uniform(-np.pi, np.pi, n))
    pitch = torch.from_numpy(rng.uniform(0.6, 2.5, n))
    labels = cameras.angles_to_camera(yaw, pitch, 3.5, 45.0, dtype=torch.float64).to_label()
    yy, xx = np.mgrid[:res, :res]
    entries = []
    for i in range(n):
        img = np.full((res, res, 3), 255, np.uint8)
        disc = (yy - res / 2 + 0.5) ** 2 + (xx - res / 2 + 0.5) ** 2 < (res / 3) ** 2
        img[disc] = rng.randint(0, 256, 3)
        name = f'img{i:03d}.png'
        PIL.Image.fromarray(img).save(os.path.join(root, name))
        entries.append([name, labels[i].tolist()])
    with open(os.path.join(root, 'dataset.json'), 'w') as f:
        json.dump(dict(labels=entries), f)
    return root


def add_classes(root: str, classes: list[int], class_names: list[str] | None = None) -> str:
    """Give the images of a make_tiny_dataset folder classes (in name order) in its dataset.json."""
    path = os.path.join(root, 'dataset.json')
    with open(path) as f:
        data = json.load(f)
    names = sorted(name for name, _ in data['labels'])
    data['classes'] = [[name, k] for name, k in zip(names, classes, strict=True)]
    if class_names is not None:
        data['class_names'] = class_names
    with open(path, 'w') as f:
        json.dump(data, f)
    return root


def make_tiny_setup(tmp_path, **overrides) -> dict:
    """Dataset folder + dataset preset + model preset under tmp_path; returns their paths."""
    data = make_tiny_dataset(str(tmp_path / 'data'))
    dataset_yaml = tmp_path / 'tiny_dataset.yaml'
    dataset_yaml.write_text(TINY_DATASET_PRESET)
    preset = TINY_PRESET.format(dataset_yaml=dataset_yaml)
    for key, value in overrides.items():
        preset += f'{key}: {json.dumps(value)}\n'
    cfg = tmp_path / 'tiny.yaml'
    cfg.write_text(preset)
    return dict(data=data, cfg=str(cfg), outdir=str(tmp_path / 'runs'))


def cli_args(setup: dict, *extra) -> list:
    return ['--outdir', setup['outdir'], '--cfg', setup['cfg'], '--data', setup['data'], *extra]


def ddp_worker(c: dict, out_dir: str) -> None:
    """Run by distributed.spawn in each rank: train, then save this rank's final weights for comparison."""
    from torch_utils import distributed
    from training.loop import training_loop

    info = distributed.get_info()
    s = training_loop.training_loop(c, rank=info.rank, world_size=info.world_size, device=info.device)
    state = {
        f'{name}.{k}': v for name in ('G', 'D', 'G_ema') for k, v in getattr(s, name).state_dict().items()
    }
    torch.save(state, os.path.join(out_dir, f'rank{info.rank}.pt'))


def tiny_train_state(G, optimizers: dict, rank: int = 0, world_size: int = 1, **c):
    """A TrainState as training_loop.setup makes it, holding only G and its optimizers (snapshot unit tests)."""
    import dnnlib
    from training.loop import run_dir, train_step
    from training.loop.train_state import TrainState

    c = dnnlib.EasyDict(dict(seed=0, run_dir=None), **c)
    return TrainState(
        c=c, rank=rank, world_size=world_size, input_stream=train_step.make_input_stream(c.seed),
        device=torch.device('cpu'), G=G, optimizers=optimizers, log=run_dir.RunLog(None, enabled=rank == 0),
    )  # fmt: skip


def _tensors(data: dict) -> dict:
    """Every tensor of the modules and optimizers of a snapshot, by a readable path."""
    out = {}

    def walk(prefix, obj):
        if isinstance(obj, torch.Tensor):
            out[prefix] = obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f'{prefix}/{k}', v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f'{prefix}/{i}', v)

    walk('modules', data['modules'])
    walk('optimizers', data['optimizers'])
    return out


def assert_same_training_state(a: dict, b: dict) -> None:
    """Two snapshots hold bit-identical weights, EMA, optimizer moments, ADA state and counters."""
    assert a['progress'] == {**b['progress'], 'total_time': a['progress']['total_time']}
    assert a['ada'] == b['ada']
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


def setup_train_state(setup: dict, flags: dict | None = None):
    """training_loop.setup of a make_tiny_setup() run (run directory made), ready for train_step."""
    from training.loop import training_loop
    from training.options import launch

    c = launch.resolve_training_options(
        outdir=setup['outdir'], cfg=setup['cfg'], data=setup['data'], gpus=1, resume=None, seed=0, desc=None,
        flags=flags or {},
    )  # fmt: skip
    launch._prepare_run_dir(c)
    return training_loop.setup(c, rank=0, world_size=1, device='cpu')


def take_step(s) -> None:
    """One training step as the loop takes it."""
    from training.loop import train_step, training_loop

    train_step.train_step(s, training_loop.next_real_batches(s), training_loop.generator_kwargs(s))
