import random

import numpy as np
import pytest
import torch

from torch_utils import misc


def test_assert_shape():
    x = torch.zeros(2, 3, 4)
    misc.assert_shape(x, [2, None, 4])
    with pytest.raises(AssertionError, match='dimension 1'):
        misc.assert_shape(x, [2, 5, 4])
    with pytest.raises(AssertionError, match='number of dimensions'):
        misc.assert_shape(x, [2, 3])


def test_rng_state_round_trip():
    misc.set_seed(123)
    state = misc.get_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))
    misc.set_seed(999)
    misc.set_rng_state(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])


def _draws():
    """Draws from every stream the state covers, the Gaussian caches included."""
    return (
        [random.random(), random.gauss(0, 1), random.gauss(0, 1)],
        np.concatenate([np.random.rand(3), [np.random.standard_normal()]]).tolist(),
        torch.cat([torch.rand(3), torch.randn(3)]).tolist(),
    )


def test_rng_state_is_plain_data(tmp_path):
    misc.set_seed(123)
    random.gauss(0, 1), np.random.standard_normal()  # leave a cached Gaussian in python and numpy
    path = tmp_path / 'rng.pt'
    torch.save(misc.get_rng_state(), path)
    expected = _draws()
    misc.set_seed(999)  # move every stream elsewhere
    assert _draws() != expected
    misc.set_rng_state(torch.load(path, weights_only=True))
    assert _draws() == expected


def test_requires_grad_restores_flags():
    net = torch.nn.Linear(2, 2)
    net.bias.requires_grad_(False)
    with misc.requires_grad(net, True):
        assert net.weight.requires_grad and net.bias.requires_grad
    assert net.weight.requires_grad and not net.bias.requires_grad


def test_record_init_kwargs():
    class Net(torch.nn.Module):
        @misc.record_init_kwargs
        def __init__(self, width, depth=2, **extra):
            super().__init__()

    net = Net(8, extra_flag=True)
    assert net.init_kwargs == dict(width=8, depth=2, extra_flag=True)
