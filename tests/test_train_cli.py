"""train.py's command line: --dry-run resolves presets with precedence; user mistakes are one-line errors."""

import json
import os

import pytest
from click.testing import CliRunner
from test_train_fixtures import cli_args, make_tiny_setup

import train


@pytest.fixture
def setup(tmp_path):
    return make_tiny_setup(tmp_path)


def _invoke(*args):
    return CliRunner().invoke(train.main, list(args), catch_exceptions=False)


def _dry_run(setup, *extra):
    result = _invoke(*cli_args(setup, '--dry-run', *extra))
    assert result.exit_code == 0, result.output
    text = result.output[: result.output.rindex('}') + 1]
    return json.loads(text)


def test_dry_run_resolves_preset_and_flags_win(setup):
    c = _dry_run(setup)
    assert (c['batch'], c['gamma'], c['patch_res'], c['glr']) == (4, 0.05, 8, 0.002)  # preset, default
    assert c['G_kwargs']['class_name'] == 'pgrf.Generator'
    assert c['G_kwargs']['plane_resolution'] == 8 and c['G_kwargs']['num_coarse'] == 4
    assert c['G_kwargs']['ray_start'] == 1.75 and c['G_kwargs']['scene_bounds'] == 1.0  # dataset preset
    assert c['D_kwargs']['camera_cond'] is True and c['D_kwargs']['num_fp16_res'] == 0
    assert c['loss_kwargs']['r1_gamma'] == 0.05
    c = _dry_run(setup, '--gamma', '1.5', '--no-camera-cond', '--glr', '0.0025', '--patch-dist', 'uniform')
    assert c['gamma'] == 1.5 and c['loss_kwargs']['r1_gamma'] == 1.5
    assert c['D_kwargs']['camera_cond'] is False and c['glr'] == 0.0025
    assert c['sampler_kwargs']['kind'] == 'uniform' and 'beta_end' not in c['sampler_kwargs']
    assert not os.path.exists(setup['outdir'])  # a dry run writes nothing


def test_gamma_auto_resolves_to_the_heuristic(setup):
    c = _dry_run(setup, '--gamma', 'auto')  # 16x16 images, batch 4: 0.0002 * 16^2 / 4
    assert c['gamma'] == 'auto' and c['loss_kwargs']['r1_gamma'] == pytest.approx(0.0002 * 16**2 / 4)
    c = _dry_run(setup, '--gamma', '0')
    assert c['gamma'] == 0 and c['loss_kwargs']['r1_gamma'] == 0


def test_ablation_flags_reach_D_and_the_loss(setup):
    c = _dry_run(setup)  # defaults: the public code's modulation, patch projection (Sec. 3.2), no blur
    assert (c['D_kwargs']['hyper_mod_mode'], c['D_kwargs']['patch_cond']) == ('input', True)
    assert c['loss_kwargs']['blur_init_sigma'] == 0.0
    c = _dry_run(setup, '--hyper-mod-mode', 'output', '--no-patch-cond', '--blur-sigma', '10')
    assert (c['hyper_mod_mode'], c['patch_cond'], c['blur_sigma']) == ('output', False, 10.0)
    assert (c['D_kwargs']['hyper_mod_mode'], c['D_kwargs']['patch_cond']) == ('output', False)
    assert c['loss_kwargs']['blur_init_sigma'] == 10.0


def test_ablation_flags_override_the_preset(tmp_path):
    setup = make_tiny_setup(tmp_path, hyper_mod_mode='input', patch_cond=True, blur_sigma=2.0)
    c = _dry_run(setup)
    assert (c['D_kwargs']['hyper_mod_mode'], c['D_kwargs']['patch_cond']) == ('input', True)
    assert c['loss_kwargs']['blur_init_sigma'] == 2.0
    c = _dry_run(setup, '--hyper-mod-mode', 'output', '--no-patch-cond', '--blur-sigma', '0')
    assert (c['D_kwargs']['hyper_mod_mode'], c['D_kwargs']['patch_cond']) == ('output', False)
    assert c['loss_kwargs']['blur_init_sigma'] == 0.0


def test_thread_count_comes_from_the_flag_then_the_preset(tmp_path, monkeypatch):
    """The preset's `threads` reaches threads.configure (before torch loads); --threads wins; bad ones refused."""
    calls = []
    monkeypatch.setattr(train.threads_lib, 'configure', calls.append)
    setup = make_tiny_setup(tmp_path, threads=1)
    assert _dry_run(setup)['threads'] == 1 and calls[-1] == 1
    assert _dry_run(setup, '--threads', '2')['threads'] == 2 and calls[-1] == 2
    assert _dry_run(make_tiny_setup(tmp_path / 'plain'))['threads'] is None and calls[-1] is None
    for bad in (0, 1.5, 'two'):
        result = _invoke(*cli_args(make_tiny_setup(tmp_path / f'bad{bad}', threads=bad), '--dry-run'))
        assert result.exit_code != 0 and calls[-1] is None  # not applied; the resolution says why
        assert f'threads must be a whole number >= 1 or null, got {bad!r}' in result.output


def test_shipped_demo_preset_dry_run(setup):
    # The demo preset against a dataset of the wrong resolution: one line naming both numbers.
    result = _invoke('--outdir', setup['outdir'], '--cfg', 'demo', '--data', setup['data'], '--dry-run')
    assert result.exit_code != 0
    assert 'images are 16x16 but configs/demo.yaml expects 32x32' in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    'extra, message',
    [
        (['--batch', '6', '--gpus', '4'], '--batch 6 is not divisible by --gpus 4'),
        (['--patch-res', '32'], '--patch-res 32 is larger than the image resolution 16'),
        (['--batch-gpu', '3'], '--batch-gpu 3 must divide the per-process batch 4'),
        (['--resume', 'latest'], '--resume latest: no run with a snapshot'),
        (['--metrics', 'fid50k_full,fid1M'], '--metrics: unknown metric "fid1M"'),
        (['--gamma', 'sometimes'], "--gamma: gamma must be a number >= 0 or 'auto', got 'sometimes'"),
        (['--gamma', '-1'], "--gamma: gamma must be a number >= 0 or 'auto', got -1.0"),
        # Each of these passed --dry-run once and failed inside every training process:
        (['--triplane-res', '48'], '--triplane-res 48 must be a power of two >= 4'),
        (['--patch-res', '12'], '--patch-res 12 must be a power of two >= 8 (D halves'),
        (['--patch-res', '4'], '--patch-res 4 must be a power of two >= 8'),
        (['--target', '1'], '--aug ada: AdaController: need 0 < target < 1'),
    ],
)
def test_user_mistakes_are_one_line_errors(setup, extra, message):
    result = _invoke(*cli_args(setup, '--dry-run', *extra))
    assert result.exit_code == 2 or result.exit_code == 1
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_dataset_and_unknown_preset(setup, tmp_path):
    result = _invoke('--outdir', setup['outdir'], '--cfg', setup['cfg'], '--data', str(tmp_path / 'nope'))
    assert result.exit_code == 1 and 'no such file or folder' in result.output
    result = _invoke('--outdir', setup['outdir'], '--cfg', 'ffhq1024', '--data', setup['data'])
    assert result.exit_code == 1 and 'no preset "ffhq1024"' in result.output


def test_kwargs_with_their_own_option_are_an_error(tmp_path):
    setup = make_tiny_setup(tmp_path, loss_kwargs=dict(blur_init_sigma=3.0))
    result = _invoke(*cli_args(setup, '--dry-run'))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert 'loss_kwargs.blur_init_sigma has its own option; set "blur_sigma" instead' in result.output


@pytest.mark.parametrize(
    'group, value, message',
    [
        ('sampler_kwargs', dict(beta_strat=0.1), 'unknown key "beta_strat" (did you mean "beta_start"?)'),
        ('sampler_kwargs', dict(scales=[0.5]), 'unknown key "scales"'),  # a key of the discrete sampler only
        ('sampler_kwargs', dict(beta_end=0.5), 'sampler_kwargs.beta_end has its own option; set "beta_end"'),
        ('sampler_kwargs', dict(beta_start=-1), 'sampler_kwargs: beta patch sampler: beta_start=-1'),
        ('augment_kwargs', dict(rotate=2.0), 'augment_kwargs: AugmentPipe: transform weights'),
        ('loss_kwargs', dict(blur_fade_kimgs=1), 'unknown key "blur_fade_kimgs"'),
    ],
)
def test_every_kwargs_group_is_checked_at_the_door(tmp_path, group, value, message):
    setup = make_tiny_setup(tmp_path, **{group: value})
    result = _invoke(*cli_args(setup, '--dry-run'))
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert message in result.output, result.output


def test_unknown_model_kwarg_is_an_error(tmp_path):
    setup = make_tiny_setup(tmp_path, G_kwargs=dict(plane_chanels=4))
    result = _invoke(*cli_args(setup, '--dry-run'))
    assert result.exit_code == 1
    assert 'unknown key "plane_chanels" (did you mean "plane_channels"?)' in result.output


def test_missing_feature_net_fails_before_training(setup, monkeypatch, tmp_path):
    monkeypatch.setenv('PGRF_FEATURE_NET', str(tmp_path / 'no-such-inception.pt'))
    result = CliRunner().invoke(train.main, cli_args(setup, '--metrics', 'fid2k_full'))
    assert result.exit_code != 0
    assert 'needs the FID Inception weights' in result.output and 'no-such-inception.pt' in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not os.path.exists(setup['outdir'])  # failed before any run directory was made


def test_camera_prior_flag_picks_the_dataset_poses_or_the_fit(tmp_path):
    setup = make_tiny_setup(tmp_path)
    assert _dry_run(setup)['camera_prior_kwargs']['kind'] == 'uniform_sphere'  # the dataset preset's
    c = _dry_run(setup, '--camera-prior', 'dataset')
    assert {k: v for k, v in c['camera_prior_kwargs'].items() if k != 'class_name'} == dict(
        kind='dataset', radius=3.5, fov=45.0
    )
    preset = tmp_path / 'tiny_dataset.yaml'
    preset.write_text(preset.read_text() + 'camera_fit: {kind: normal, yaw_std: 0.25}\n')
    c = _dry_run(setup, '--camera-prior', 'fit')
    assert (c['camera_prior_kwargs']['kind'], c['camera_prior_kwargs']['yaw_std']) == ('normal', 0.25)
    preset.write_text(preset.read_text().replace('camera_fit: {kind: normal, yaw_std: 0.25}\n', ''))
    result = _invoke(*cli_args(setup, '--dry-run', '--camera-prior', 'fit'))
    assert result.exit_code != 0 and 'no camera_fit' in result.output


def test_training_options_are_the_options_the_derived_kwargs_and_the_run(setup):
    """Every key of training_options.json has one source: an option as resolved, derived, or the run's."""
    from training.options import config, derive, launch

    c = _dry_run(setup, '--beta-end', '0.7')
    assert set(c) == set(config.DEFAULTS) | set(derive.DERIVED_KEYS) - {'class_names'} | set(launch.RUN_KEYS)
    opts = config.resolve(config.load_preset(setup['cfg']), dict(beta_end=0.7))
    for key in set(config.DEFAULTS) - set(derive.DERIVED_KEYS):
        assert c[key] == opts[key], key  # derive adds keys; it never changes an option
    assert c['sampler_kwargs']['beta_end'] == c['beta_end'] == 0.7
