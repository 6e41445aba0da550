"""The TrainState is the whole of what the loop holds, and what --dry-run accepts builds and trains."""

import dataclasses

import pytest
from test_train_fixtures import make_tiny_setup, setup_train_state, take_step

from training.loop import training_loop
from training.loop.train_state import TrainState


def _setup(tmp_path, flags=None, **overrides):
    return setup_train_state(make_tiny_setup(tmp_path, **overrides), flags)


def test_setup_fills_the_declared_fields_and_a_step_adds_none(tmp_path):
    s = _setup(tmp_path)  # the tiny preset: ADA on, so every optional part exists
    try:
        take_step(s)
        declared = {f.name for f in dataclasses.fields(TrainState)}
        assert set(vars(s)) == declared  # no module keeps state of its own on the TrainState
        unset = {name for name in declared if getattr(s, name) is None}
        assert unset <= {'best_metric', 'writer', 'signals', 'reason', 'grid_c'}, unset  # later, or optional
        assert s.progress.as_dict() == dict(
            cur_nimg=4, cur_tick=0, batch_idx=1, tick_start_nimg=0, total_time=0.0
        )
        assert set(s.modules()) == set(TrainState.MODULES)
    finally:
        training_loop.teardown(s)


@pytest.mark.parametrize(
    'flags, overrides',
    [
        (dict(gamma='auto'), dict(sampler_kwargs=dict(beta_start=0.01, pixel_aligned=True))),
        (dict(patch_dist='discrete'), dict(sampler_kwargs=dict(scales=[0.5, 1.0]))),
        (
            dict(patch_dist='uniform'),
            dict(sampler_kwargs=dict(s_min_start=0.7), augment_kwargs=dict(hue=0.0)),
        ),
        (dict(patch_res=16, triplane_res=4, aug='fixed', p=0.5), dict(loss_kwargs=dict(blur_fade_kimg=1))),
        (
            dict(bg=True, hyper_mod_mode='output', patch_cond=False, checkpoint='on', gamma=0),
            dict(r1_interval=1),
        ),
    ],
)
def test_what_the_dry_run_accepts_builds_and_trains(tmp_path, flags, overrides):
    s = _setup(tmp_path, flags, **overrides)
    try:
        take_step(s)
        assert s.progress.batch_idx == 1
    finally:
        training_loop.teardown(s)
