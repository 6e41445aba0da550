"""Steps whose loss is finite but whose gradients are not: clamped (as StyleGAN2-ADA does), but counted in
the stats and named in the progress line, never silently."""

import torch

from torch_utils import training_stats
from training.loop import train_logging, train_step


def _module_with_grads(*grads):
    module = torch.nn.Linear(len(grads), 1, bias=False)
    module.weight.grad = torch.tensor([list(grads)])
    return module


def test_reduce_gradients_reports_clamping_and_divergence():
    module = _module_with_grads(1.0, float('inf'), float('nan'))
    assert train_step.reduce_gradients(module, 1, torch.tensor(0.5)) == (True, True)
    assert module.weight.grad.tolist() == [[1.0, 1e5, 0.0]]
    assert train_step.reduce_gradients(_module_with_grads(1.0, 2.0), 1, torch.tensor(0.5)) == (True, False)
    assert train_step.reduce_gradients(_module_with_grads(1.0), 1, torch.tensor(float('inf')))[0] is False
    assert train_step.reduce_gradients(_module_with_grads(float('nan')), 1, None)[0] is False


def test_clamped_steps_are_counted_per_tick_and_warned_about():
    collector = training_stats.Collector(regex=train_step.NONFINITE_STAT + '/.*')
    for clamped in (0, 1, 0, 1, 1):
        training_stats.report0(f'{train_step.NONFINITE_STAT}/Dmain', float(clamped))
    training_stats.report0(f'{train_step.NONFINITE_STAT}/Gmain', 0.0)
    collector.update()
    stats = collector.as_dict()
    assert stats[f'{train_step.NONFINITE_STAT}/Dmain']['num'] == 5
    assert train_logging.nonfinite_warnings(stats) == [
        'WARNING non-finite grads clamped in Dmain: 3 of 5 steps'
    ]
    training_stats.report0(f'{train_step.NONFINITE_STAT}/Dmain', 0.0)
    collector.update()
    assert train_logging.nonfinite_warnings(collector.as_dict()) == []
