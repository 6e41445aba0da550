"""Functions run inside the ranks of tests/torch_utils/test_distributed.py (module level: `spawn` pickles them).

Also runnable as a script under torchrun: `torchrun --nproc_per_node 2 tests/_dist_worker.py OUT_DIR`.
"""

import json
import math
import os
import sys

import torch

if __name__ == '__main__':  # Run as a script by torchrun: make the repository importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnnlib import registry  # noqa: E402
from torch_utils import distributed, misc, training_stats  # noqa: E402


class TinyLinear(torch.nn.Linear):
    @misc.record_init_kwargs
    def __init__(self, in_features=2, out_features=2):
        super().__init__(in_features, out_features)


registry.register('test.TinyLinear', TinyLinear)


def _close(a, b):
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def check_collector(out_dir):
    """Every rank reports different values; the reduced statistics must be those of all values pooled."""
    info = distributed.get_info()
    assert info.world_size == 2 and info.device == torch.device('cpu') and info.backend == 'gloo'
    rank = info.rank
    training_stats.report('Loss/a', 100.0)  # before the collector exists: not counted
    collector = training_stats.Collector(regex='.*')
    only_loss = training_stats.Collector(regex='Loss/.*', keep_previous=False)
    training_stats.report('Loss/a', [1.0, 2.0, 3.0] if rank == 0 else torch.tensor([[4.0, 5.0]]))
    if rank == 1:
        training_stats.report('Only/rank1', torch.tensor(7.0))  # a name rank 0 never reports
    training_stats.report0('Main/x', 10.0 + rank)
    collector.update()
    only_loss.update()
    stats = collector.as_dict()
    assert sorted(stats) == ['Loss/a', 'Main/x', 'Only/rank1'], stats
    assert stats['Loss/a']['num'] == 5 and _close(stats['Loss/a']['mean'], 3.0)
    assert _close(stats['Loss/a']['std'], math.sqrt(2.0))
    assert stats['Only/rank1'] == dict(num=1, mean=7.0, std=0.0)
    assert stats['Main/x'] == dict(num=1, mean=10.0, std=0.0)
    assert only_loss.names() == ['Loss/a'] and _close(only_loss.mean('Loss/a'), 3.0)

    training_stats.report('Loss/a', float(rank))  # second tick: only the new values count
    collector.update()
    only_loss.update()
    assert collector.num('Loss/a') == 2 and _close(collector.mean('Loss/a'), 0.5)
    assert collector.mean('Only/rank1') == 7.0  # keep_previous: no report this tick, last value kept
    assert only_loss.names() == ['Loss/a']
    assert distributed.broadcast_object(dict(seed=rank + 5)) == dict(seed=5)
    with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
        json.dump(dict(stats=stats, tick2=collector.as_dict()), f)


def check_consistency():
    """misc.check_ddp_consistency passes for identical modules and raises on the rank that differs."""
    rank = distributed.get_rank()
    misc.set_seed(0)
    net = torch.nn.Linear(3, 3)
    misc.check_ddp_consistency(net)
    with torch.no_grad():
        net.bias[0] += rank  # the last tensor differs on rank 1 only, so rank 0 finishes its broadcasts
    misc.check_ddp_consistency(net, ignore_regex='bias')
    if rank == 0:
        misc.check_ddp_consistency(net)
    else:
        try:
            misc.check_ddp_consistency(net)
        except RuntimeError as err:
            assert '"bias" differs from rank 0' in str(err), err
        else:
            raise AssertionError('check_ddp_consistency accepted a bias that differs across ranks')
    distributed.barrier()


def check_rng_snapshot():
    """A snapshot holds every rank's RNG state; restoring it gives each rank its own stream back."""
    from test_train_fixtures import tiny_train_state

    from training.loop import snapshots

    rank = distributed.get_rank()
    misc.set_seed(1000 + rank)
    s = tiny_train_state(TinyLinear(), {}, rank=rank, world_size=2)
    data = snapshots.make_snapshot(s)
    assert data['rng']['world_size'] == 2 and len(data['rng']['states']) == 2
    expected = torch.rand(4)
    misc.set_seed(0)  # scramble
    snapshots.restore(s, data, 'test')
    assert torch.equal(torch.rand(4), expected)
    others = [None, None]
    torch.distributed.all_gather_object(others, expected)
    assert not torch.equal(others[0], others[1])  # the ranks' streams differ


def check_gradient_average():
    """reduce_gradients averages: two ranks, each on its half of a batch, get exactly the gradient of one
    process on the whole batch (a summed all-reduce would give twice that; ranks agreeing proves neither)."""
    from training.loop import train_step

    info = distributed.get_info()
    rank, dev = info.rank, info.device  # gloo on the CPU, or NCCL on cuda:<rank> (the gpu-marked twin)
    x = torch.arange(8 * 2, dtype=torch.float64, device=dev).reshape(8, 2) / 7 - 1  # the global batch
    target = torch.linspace(-1, 1, 8, dtype=torch.float64, device=dev).reshape(8, 1)
    net = torch.nn.Linear(2, 1).double().to(dev)
    torch.nn.init.constant_(net.weight, 0.3)
    torch.nn.init.constant_(net.bias, -0.2)
    (net(x) - target).square().mean().backward()
    whole = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    half = slice(4 * rank, 4 * rank + 4)  # this rank's share of the batch
    loss = (net(x[half]) - target[half]).square().mean()
    loss.backward()
    assert train_step.reduce_gradients(net, 2, loss.detach()) == (True, False)
    for p, g in zip(net.parameters(), whole):
        assert torch.allclose(p.grad.double(), g, rtol=1e-6, atol=1e-7), (p.grad, g)


def two_rank_checks(out_dir):
    check_collector(out_dir)
    check_consistency()
    check_rng_snapshot()
    check_gradient_average()


def fail_on_rank1():
    """Rank 1 raises while rank 0 waits in a barrier that would never complete."""
    if distributed.get_rank() == 1:
        raise ValueError('boom from rank 1')
    distributed.barrier()


def _main(out_dir):
    info = distributed.init(device='cpu')
    two_rank_checks(out_dir)
    distributed.print0(f'torchrun ok world_size={info.world_size}')
    distributed.shutdown()


if __name__ == '__main__':
    _main(sys.argv[1])
