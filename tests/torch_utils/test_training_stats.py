import json
import math

import numpy as np
import pytest
import torch

from torch_utils import training_stats


@pytest.fixture(autouse=True)
def fresh_counters(monkeypatch):
    monkeypatch.setattr(training_stats, '_counters', {})


def test_pooled_mean_and_std_of_any_shapes():
    collector = training_stats.Collector()
    values = [
        torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1)),
        2.5,
        [1.0, -4.0],
        torch.tensor(3),
    ]
    for v in values:
        assert training_stats.report('Loss/x', v) is v  # returns its input
    collector.update()
    pooled = np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in values])
    stats = collector.as_dict()
    assert stats == {
        'Loss/x': dict(num=pooled.size, mean=pytest.approx(pooled.mean()), std=pytest.approx(pooled.std()))
    }
    assert collector.num('Loss/x') == 28 and collector.mean('Loss/x') == pytest.approx(pooled.mean())
    assert collector.std('Loss/x') == pytest.approx(pooled.std())
    assert math.isnan(collector.mean('never/reported')) and collector.num('never/reported') == 0


def test_accumulates_in_float64():
    collector = training_stats.Collector()
    values = torch.tensor([3e7, 3e7 + 2], dtype=torch.float32)  # exact in float32, their sum is not
    assert values.sum().item() != 6e7 + 2
    training_stats.report('big', values)
    collector.update()
    assert collector.mean('big') == 3e7 + 1
    assert collector.std('big') == pytest.approx(1.0, abs=0.05)


def test_update_before_any_report():
    collector = training_stats.Collector()
    collector.update()
    assert collector.as_dict() == {} and collector.names() == []


def test_each_update_covers_one_tick_and_earlier_reports_are_ignored():
    training_stats.report('a', 100.0)
    collector = training_stats.Collector()
    training_stats.report('a', [1.0, 3.0])
    collector.update()
    assert collector.as_dict() == {'a': dict(num=2, mean=2.0, std=1.0)}
    training_stats.report('a', 5.0)
    training_stats.report('b', 1.0)
    collector.update()
    assert collector.as_dict() == {'a': dict(num=1, mean=5.0, std=0.0), 'b': dict(num=1, mean=1.0, std=0.0)}
    collector.update()  # no reports this tick: keep_previous keeps the last values
    assert collector.mean('a') == 5.0 and collector.num('b') == 1


def test_keep_previous_false_and_regex_and_independent_collectors():
    loss_only = training_stats.Collector(regex='Loss/.*', keep_previous=False)
    everything = training_stats.Collector()
    training_stats.report('Loss/G', 1.0)
    training_stats.report('Timing/sec', 2.0)
    training_stats.report('MyLoss/G', 3.0)  # the regex must match the whole name
    loss_only.update()
    assert loss_only.names() == ['Loss/G']
    training_stats.report('Timing/sec', 4.0)
    loss_only.update()
    assert loss_only.names() == []
    everything.update()  # saw both ticks at once
    assert everything.as_dict()['Timing/sec'] == dict(num=2, mean=3.0, std=1.0)


def test_report0_and_bad_names():
    collector = training_stats.Collector()
    training_stats.report0('Progress/kimg', 4.0)  # single process: rank 0
    training_stats.report('empty', torch.zeros(0))  # registers the name, counts nothing
    collector.update()
    assert collector.as_dict() == {'Progress/kimg': dict(num=1, mean=4.0, std=0.0)}
    with pytest.raises(ValueError, match='non-empty string'):
        training_stats.report('', 1.0)


def test_nan_is_visible_and_jsonl_is_strict(tmp_path):
    collector = training_stats.Collector()
    training_stats.report('Loss/D', [1.0, float('nan')])
    training_stats.report('Loss/G', 2.0)
    collector.update()
    stats = collector.as_dict()
    assert math.isnan(stats['Loss/D']['mean'])
    path = tmp_path / 'stats.jsonl'
    training_stats.write_jsonl(path, dict(stats, timestamp=12.5))
    training_stats.write_jsonl(path, dict(kimg=torch.tensor(3.0)))
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    assert first['Loss/D'] == dict(num=2, mean=None, std=None) and first['timestamp'] == 12.5
    assert json.loads(lines[1]) == dict(kimg=3.0)
    assert training_stats.scalars(dict(stats, timestamp=12.5)) == {
        'Loss/D': stats['Loss/D']['mean'],
        'Loss/G': 2.0,
    }


@pytest.mark.gpu
def test_cuda_values_are_pooled_with_cpu_values():
    collector = training_stats.Collector()
    training_stats.report('x', torch.tensor([1.0, 2.0], device='cuda'))  # accumulated on the GPU, no sync
    training_stats.report('x', 6.0)
    collector.update()
    assert collector.as_dict() == {'x': dict(num=3, mean=3.0, std=pytest.approx(math.sqrt(14 / 3)))}
