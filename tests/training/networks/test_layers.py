"""training/networks/layers.py: shapes, equalized-lr scaling, modulated conv identities, Fourier features."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.networks import layers


def test_fully_connected_equalized_lr():
    torch.manual_seed(0)
    fc = layers.FullyConnectedLayer(8, 5, lr_multiplier=0.01, bias_init=0.5)
    # Stored at N(0, 1) / lr_multiplier, applied times lr_multiplier / sqrt(fan_in).
    assert fc.weight.std().item() == pytest.approx(100, rel=0.35)
    assert torch.allclose(fc.bias, torch.full([5], 50.0))
    x = torch.randn([3, 8])
    expected = x @ (fc.weight * 0.01 / math.sqrt(8)).t() + fc.bias * 0.01
    torch.testing.assert_close(fc(x), expected)
    lrelu = layers.FullyConnectedLayer(8, 5, activation='lrelu')
    pre = x @ (lrelu.weight / math.sqrt(8)).t()
    torch.testing.assert_close(lrelu(x), F.leaky_relu(pre, 0.2) * math.sqrt(2))
    with pytest.raises(AssertionError):
        fc(torch.zeros([3, 7]))
    with pytest.raises(ValueError, match='activation'):
        layers.FullyConnectedLayer(8, 5, activation='lreLU')


def test_conv2d_layer_shapes_gain_and_clamp():
    torch.manual_seed(0)
    x = torch.randn([2, 4, 8, 8])
    assert layers.Conv2dLayer(4, 6, 3)(x).shape == (2, 6, 8, 8)
    assert layers.Conv2dLayer(4, 6, 3, up=2)(x).shape == (2, 6, 16, 16)
    assert layers.Conv2dLayer(4, 6, 3, down=2)(x).shape == (2, 6, 4, 4)
    assert layers.Conv2dLayer(4, 6, 1, bias=False, down=2)(x).shape == (2, 6, 4, 4)
    conv = layers.Conv2dLayer(4, 6, 3, activation='lrelu', conv_clamp=0.25)
    with torch.no_grad():
        conv.bias.copy_(torch.linspace(-1, 1, 6))
    pre = F.conv2d(x, conv.weight / math.sqrt(4 * 9), conv.bias, padding=1)
    expected = (F.leaky_relu(pre, 0.2) * math.sqrt(2) * 0.5).clamp(-0.125, 0.125)
    torch.testing.assert_close(conv(x, gain=0.5), expected)


def test_conv2d_layer_channels_last_and_frozen():
    conv = layers.Conv2dLayer(4, 6, 3, channels_last=True, trainable=False)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert len(list(conv.parameters())) == 0 and 'weight' in dict(conv.named_buffers())
    assert conv(torch.randn([1, 4, 5, 5])).shape == (1, 6, 5, 5)


def test_fourier_features():
    ff = layers.FourierFeatures(3, 4, min_freq=1.0, max_freq=8.0)
    assert ff.out_features == 24
    torch.testing.assert_close(ff.freqs, torch.tensor([1.0, 2.0, 4.0, 8.0]))
    x = torch.rand([5, 3])
    y = ff(x)
    assert y.shape == (5, 24)
    angle = 2 * math.pi * x[2, 1] * 4.0  # coordinate 1, frequency index 2
    assert y[2, 1 * 4 + 2].item() == pytest.approx(math.sin(angle), abs=1e-5)
    assert y[2, 12 + 1 * 4 + 2].item() == pytest.approx(math.cos(angle), abs=1e-5)
    ffi = layers.FourierFeatures(2, 3, include_input=True)
    assert ffi(torch.rand([7, 6, 2])).shape == (7, 6, 14) and ffi.out_features == 14
    torch.testing.assert_close(ffi.freqs, torch.tensor([1.0, 2.0, 4.0]))
    with pytest.raises(ValueError, match='max_freq'):
        layers.FourierFeatures(2, 3, min_freq=4, max_freq=2)
    with pytest.raises(AssertionError):
        ff(torch.rand([5, 2]))


def test_r1_through_layers_is_unchanged_by_no_weight_gradients():
    """R1's second backward reaches every weight of a tiny D with the first backward's weight grads off."""
    from torch_utils.ops import conv2d_gradfix

    torch.manual_seed(0)
    D = torch.nn.Sequential(
        layers.Conv2dLayer(3, 4, 3, activation='lrelu', conv_clamp=256),
        layers.Conv2dLayer(4, 4, 3, activation='lrelu', down=2),
        torch.nn.Flatten(),
        layers.FullyConnectedLayer(4 * 4 * 4, 1),
    ).double()
    real = torch.randn([2, 3, 8, 8], dtype=torch.float64, requires_grad=True)

    def r1_grads(disable):
        with conv2d_gradfix.no_weight_gradients(disable):
            (g,) = torch.autograd.grad(D(real).sum(), real, create_graph=True)
        return torch.autograd.grad(g.square().sum(), list(D.parameters()), allow_unused=True)

    with_ctx, without = r1_grads(True), r1_grads(False)
    for a, b in zip(with_ctx, without):
        if b is None:  # The last layer's bias does not affect d D / d real.
            assert a is None
            continue
        torch.testing.assert_close(a, b)
    assert sum(a is not None for a in with_ctx) >= 5
