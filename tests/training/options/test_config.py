"""Presets: loading, precedence (defaults < preset < flag), unknown keys and bad values are one-line errors."""

import os

import pytest

from training.options import config


def test_every_shipped_preset_loads_and_validates():
    names = config.list_presets()
    for name in ('ffhq256', 'ffhq512', 'cats256', 'plants256', 'food256', 'demo'):
        assert name in names
        opts = config.resolve(config.load_preset(name), {})
        config.validate(opts, num_gpus=1, source=name)
        assert opts.dataset == name


def test_paper_numbers_in_the_ffhq_preset():
    opts = config.resolve(config.load_preset('ffhq256'), {})
    assert (opts.batch, opts.gamma, opts.glr, opts.dlr, opts.betas) == (64, 0.05, 0.002, 0.002, [0.0, 0.99])
    assert (opts.patch_res, opts.beta_end, opts.anneal_kimg, opts.triplane_res, opts.ray_steps) == (
        64, 0.8, 10000, 512, 48,
    )  # fmt: skip
    assert (opts.ema_kimg, opts.ema_rampup, opts.ada_interval, opts.r1_interval) == (20, 0.05, 4, 16)
    assert opts.camera_cond and opts.hyper_mod and opts.kimg == 25000


def test_precedence_default_preset_flag(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text('dataset: demo\nbatch: 16\ngamma: 0.5\n')
    opts = config.resolve(config.load_preset(str(path)), dict(gamma=2.0, batch=None))
    assert opts.batch == 16  # preset beats the default; a flag left out (None) does not override
    assert opts.gamma == 2.0  # the explicit flag beats the preset
    assert opts.glr == config.DEFAULTS['glr']  # untouched default
    assert opts.image_snap == opts.snap


def test_unknown_preset_key_is_an_error_naming_file_and_key(tmp_path):
    path = tmp_path / 'bad.yaml'
    path.write_text('dataset: demo\nbatchsize: 16\n')
    with pytest.raises(
        config.ConfigError, match=r'bad\.yaml: unknown key "batchsize" \(did you mean "batch"\?\)'
    ):
        config.load_preset(str(path))


def test_missing_preset_and_bad_yaml(tmp_path):
    with pytest.raises(config.ConfigError, match='no preset "nope"'):
        config.load_preset('nope')
    path = tmp_path / 'broken.yaml'
    path.write_text('dataset: [demo\n')
    with pytest.raises(config.ConfigError, match='not valid YAML'):
        config.load_preset(str(path))


@pytest.mark.parametrize(
    'flags, gpus, message',
    [
        (dict(batch=10), 4, 'not divisible by --gpus 4'),
        (dict(batch=16, batch_gpu=3), 2, 'must divide the per-process batch 8'),
        (dict(aug='sometimes'), 1, 'aug must be one of ada, noaug, fixed'),
        (dict(glr=-1.0), 1, 'glr must be a positive number'),
        (dict(target=1.5), 1, 'must lie in'),
        (dict(hyper_mod_mode='both'), 1, 'hyper_mod_mode must be one of output, input'),
        (dict(blur_sigma=-1.0), 1, 'blur_sigma must be a number >= 0'),
    ],
)
def test_validation_errors_are_one_line(flags, gpus, message):
    opts = config.resolve(config.load_preset('demo'), flags)
    with pytest.raises(config.ConfigError, match=message) as info:
        config.validate(opts, num_gpus=gpus)
    assert '\n' not in str(info.value)


def test_parse_metrics():
    assert config.parse_metrics(None) is None
    assert config.parse_metrics('none') == []
    assert config.parse_metrics('fid50k_full, kid50k_full') == ['fid50k_full', 'kid50k_full']


def test_gamma_auto_in_a_preset_and_bad_gamma_values(tmp_path):
    path = tmp_path / 'auto.yaml'
    path.write_text('dataset: demo\ngamma: auto\n')
    opts = config.resolve(config.load_preset(str(path)), {})
    config.validate(opts, num_gpus=1, source=str(path))
    assert opts.gamma == 'auto'
    assert (
        config.parse_gamma('0.1') == 0.1
        and config.parse_gamma(0) == 0
        and config.parse_gamma(' Auto ') == 'auto'
    )
    assert config.resolve_gamma('auto', 256, 64) == pytest.approx(0.0002 * 256**2 / 64)  # StyleGAN2-ADA's
    assert config.resolve_gamma(0.05, 256, 64) == 0.05 and config.resolve_gamma(0, 256, 64) == 0.0
    for bad in ('often', -1.0, True, [0.1], float('nan')):
        with pytest.raises(config.ConfigError, match=r"gamma must be a number >= 0 or 'auto'") as info:
            config.validate(
                config.resolve({'dataset': 'demo', 'gamma': bad}, {}), num_gpus=1, source='p.yaml'
            )
        assert '\n' not in str(info.value) and 'p.yaml' in str(info.value)


def test_ray_steps_below_two_are_refused_before_training():
    for bad in (1, 2.5):  # the CLI's range stops 1; a preset could pass it and fail inside G
        with pytest.raises(config.ConfigError, match='--ray-steps .* must be a whole number >= 2'):
            config.validate(config.resolve({'dataset': 'demo', 'ray_steps': bad}, {}), num_gpus=1)


def test_model_and_dataset_presets_share_one_reader_and_its_messages(tmp_path):
    from training import dataset

    for load in (config.load_preset, dataset.load_dataset_preset):
        with pytest.raises(
            (config.ConfigError, dataset.DatasetError), match=r'no preset "nope" \(.*not found\); choose'
        ):
            load('nope')
    (tmp_path / 'm.yaml').write_text('dataset: demo\nbatchh: 4\n')
    (tmp_path / 'd.yaml').write_text(
        open(os.path.join(dataset.PRESET_DIR, 'demo.yaml')).read() + 'radiuss: 2\n'
    )
    for load, name, hint in (
        (config.load_preset, 'm', 'batch'),
        (dataset.load_dataset_preset, 'd', 'radius'),
    ):
        with pytest.raises((config.ConfigError, dataset.DatasetError)) as info:
            load(str(tmp_path / f'{name}.yaml'))
        assert str(info.value).endswith(f'(did you mean "{hint}"?)') and '\n' not in str(info.value)
