"""The shipped presets resolve to pinned options (so refactoring the YAML files cannot change a run)."""

import json
import os

import pytest
from repo_paths import REPO_ROOT

from training.options import config

# Every option of the paper's FFHQ 256^2 run (§3.4, Appendix B), as resolved from configs/ffhq256.yaml.
PAPER = dict(
    dataset='ffhq256', batch=64, batch_gpu=None, gamma=0.05, kimg=25000, tick=4, max_minutes=None, snap=50, image_snap=50,
    metrics=['fid2k_full'], mirror=None, aug='ada', p=0.2, target=0.6, ada_interval=4, ada_kimg=500,
    workers=3, fp32=False, precision='auto', g_fp32=False, checkpoint='auto', memory_budget_gb=4.0, threads=None, glr=0.002, dlr=0.002, betas=[0.0, 0.99], reuse_fakes=True, r1_interval=16, ema_kimg=20,
    ema_rampup=0.05, patch_res=64, patch_dist='beta', beta_end=0.8, anneal_kimg=10000, hyper_mod=True,
    hyper_mod_mode='input', patch_cond=True, blur_sigma=10, triplane_res=512, ray_steps=48, bg=False,
    camera_cond=True, cond=False, camera_prior=None, density_noise_std=1.0, density_noise_kimg=5000, grid_seeds=8,
    grid_cameras=4, G_kwargs={}, D_kwargs=dict(channel_base=16384), loss_kwargs={}, augment_kwargs={},
    sampler_kwargs={},
)  # fmt: skip

DEMO = dict(
    dataset='demo', cond=True, batch=4, gamma=0.2, kimg=18, tick=0.5, snap=8, image_snap=2, metrics=[], aug='noaug', workers=1,
    threads=1, precision='fp32', glr=0.0025, ema_kimg=0.5, patch_res=32, triplane_res=16, ray_steps=8,
    camera_cond=False, density_noise_kimg=0.5, grid_seeds=5, blur_sigma=0.0,
    G_kwargs=dict(z_dim=64, w_dim=64, plane_channels=16, channel_base=1024, channel_max=64, decoder_hidden=32,
                  density_shift=-3.0, density_scale=10.0, checkpoint_res=None),
    D_kwargs=dict(channel_base=1024, channel_max=64, hyper_dim=64, hyper_table_dim=32, hyper_adapter_init=0.0,
                  cond_lr_multiplier=1.0),
)  # fmt: skip

EXPECTED = dict(
    ffhq256=PAPER,
    ffhq512=dict(PAPER, dataset='ffhq512'),
    cats256=dict(PAPER, dataset='cats256'),
    # B.1: camera conditioning for FFHQ, Cats; the authors trained M-Plants and M-Food class-conditionally.
    plants256=dict(PAPER, dataset='plants256', camera_cond=False, cond=True),
    food256=dict(PAPER, dataset='food256', camera_cond=False, cond=True),
    demo=dict(PAPER, **DEMO),
    demo_classic=dict(PAPER, **dict(DEMO, dataset='demo_classic', glr=0.006, dlr=0.0048, grid_seeds=8)),
)


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_shipped_preset_resolves_to_the_pinned_options(name):
    opts = config.resolve(config.load_preset(name), {})
    # JSON text, as --dry-run prints it: pins the types too (25000, not 25000.0).
    assert json.dumps(opts, sort_keys=True) == json.dumps(EXPECTED[name], sort_keys=True)


@pytest.mark.parametrize('name', config.list_presets())
def test_presets_hold_only_their_differences(name):
    """A preset key that repeats what its base (or DEFAULTS) already gives is a second copy of a default:
    the next change of the default would silently miss it."""
    _, data = config.read_preset(name, [*config.DEFAULTS, config.BASE_KEY], name)
    base = data.pop(config.BASE_KEY, None)
    inherited = {**config.DEFAULTS, **(config.load_preset(base) if base else {})}
    for key, value in data.items():
        if isinstance(value, dict):
            repeated = [k for k, v in value.items() if k in inherited[key] and inherited[key][k] == v]
            assert not repeated, f'{name}: {key}.{repeated} repeat the inherited value'
        else:
            assert value != inherited[key], f'{name}: {key} repeats the inherited value'
    if name == 'epigraf':
        assert 'dataset' not in data  # a base, not a runnable preset


def test_help_texts_show_the_defaults_of_config():
    """train.py --help shows DEFAULTS (no number of its own), in one format."""
    import train

    assert config.help_default('beta_end') == '  [default: 0.8]'
    assert config.help_default('hyper_mod') == '  [default: on]'
    assert config.help_default('metrics') == '  [default: fid50k_full]'
    shown = [
        p.name for p in train.main.params if p.name in config.DEFAULTS and config.DEFAULTS[p.name] is not None
    ]
    assert len(shown) > 20
    for name in shown:
        help_text = next(p.help for p in train.main.params if p.name == name)
        assert help_text.endswith(config.help_default(name)), name


def test_precedence_base_preset_flag_and_kwargs_merge(tmp_path):
    (tmp_path / 'b.yaml').write_text(
        'dataset: demo\nbatch: 16\ngamma: 0.5\nD_kwargs: {hyper_dim: 8, cmap_dim: 4}\n'
    )
    (tmp_path / 'p.yaml').write_text('base: b.yaml\ngamma: 0.25\nD_kwargs: {cmap_dim: 2}\n')
    opts = config.resolve(config.load_preset(str(tmp_path / 'p.yaml')), dict(batch=8, glr=None))
    assert (opts.dataset, opts.gamma, opts.batch) == ('demo', 0.25, 8)  # base < preset < flag
    assert opts.glr == config.DEFAULTS['glr'] and opts.D_kwargs == dict(hyper_dim=8, cmap_dim=2)
    assert 'base' not in opts
    (tmp_path / 'q.yaml').write_text('base: epigraf\ndataset: demo\nkimg: 7\n')  # a shipped base by name
    opts = config.resolve(config.load_preset(str(tmp_path / 'q.yaml')), {})
    assert (opts.kimg, opts.batch, opts.triplane_res) == (7, 64, 512)


@pytest.mark.parametrize(
    'files, message',
    [
        (
            {'p.yaml': 'base: b.yaml\n', 'b.yaml': 'dataset: demo\nbatchsize: 3\n'},
            r'b\.yaml: unknown key "batchsize"',
        ),
        ({'p.yaml': 'base: epigraff\n'}, r'p\.yaml: base: no preset "epigraff"'),
        ({'p.yaml': 'base: [epigraf]\n'}, r'p\.yaml: base must be the name of a preset'),
        (
            {'p.yaml': 'base: b.yaml\n', 'b.yaml': 'base: p.yaml\n'},
            r'b\.yaml: base "p\.yaml" leads back to itself',
        ),
        ({'p.yaml': 'bsae: epigraf\n'}, r'p\.yaml: unknown key "bsae" \(did you mean "base"\?\)'),
    ],
)
def test_base_mistakes_are_one_line_errors(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(config.ConfigError, match=message) as info:
        config.load_preset(str(tmp_path / 'p.yaml'))
    assert '\n' not in str(info.value)


def test_a_constructor_parameter_fed_by_an_option_has_no_default_of_its_own():
    """The option's default (config.DEFAULTS) is the only one: a second copy in a signature would be the
    number a caller silently gets when it forgets the option."""
    import inspect

    from training import augment, loss, patches

    fed = [  # (constructor, parameter): derive passes the option's value to each
        (patches.BetaPatchSampler, 'beta_end'), (patches.BetaPatchSampler, 'anneal_kimg'),
        (patches.UniformPatchSampler, 'anneal_kimg'), (loss.PatchLoss, 'r1_gamma'),
        (loss.PatchLoss, 'blur_init_sigma'), (augment.AdaController, 'target'),
        (augment.AdaController, 'interval'), (augment.AdaController, 'speed_kimg'),
        (augment.AdaController, 'batch_size'),
    ]  # fmt: skip
    for cls, name in fed:
        param = inspect.signature(cls.__init__).parameters[name]
        assert param.default is inspect.Parameter.empty, f'{cls.__name__}.{name} has a default of its own'


@pytest.mark.parametrize('name', ['demo', 'demo_classic'])
def test_demo_patches_are_whole_images_of_the_demo_data(name, monkeypatch):
    """The CPU demo trains on whole images: its patch size is its data's resolution (paper_map, "The CPU
    demo"), and dataset_tool renders the demo data at that size by default."""
    from training.options import derive

    monkeypatch.syspath_prepend(os.path.join(REPO_ROOT, 'scripts'))
    import demo_data

    opts = config.resolve(config.load_preset(name), {})
    resolution = derive.load_dataset_preset(opts.dataset, name)['resolution']
    assert opts.patch_res == resolution == demo_data.DEMO_RESOLUTION
