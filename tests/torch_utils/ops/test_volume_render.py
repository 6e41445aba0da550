"""The volume_render op's CUDA twin: falls back to `ref` off-GPU; matches `ref` in values and gradients on a GPU."""

import pytest
import torch

from torch_utils.ops import volume_render


def _inputs(device, dtype=torch.float32, shape=(3, 50)):
    torch.manual_seed(0)
    colors = torch.randn(*shape, 24, 3, device=device, dtype=dtype)
    sigmas = torch.rand(*shape, 24, device=device, dtype=dtype) * 5
    deltas = torch.rand(*shape, 24, device=device, dtype=dtype) * 0.1
    deltas[..., -1] = volume_render.INFINITE_DELTA
    t = torch.cumsum(deltas.clamp_max(1), dim=-1)
    return [v.requires_grad_() for v in (colors, sigmas, deltas, t)]


def test_cuda_impl_on_cpu_falls_back_to_ref_with_a_warning():
    inputs = _inputs('cpu')
    with pytest.warns(RuntimeWarning, match='volume_render'):
        out = volume_render.composite(*inputs, impl='cuda')
    for a, b in zip(out, volume_render.composite(*inputs)):
        assert torch.equal(a, b)


@pytest.mark.gpu
def test_cuda_matches_ref_values_and_gradients():
    inputs = _inputs('cuda', torch.float64)
    outs_ref = volume_render.composite(*inputs, impl='ref')
    outs_cuda = volume_render.composite(*inputs, impl='cuda')
    for a, b in zip(outs_ref, outs_cuda):
        assert torch.allclose(a, b, atol=1e-10)
    grads_out = [torch.randn_like(o) for o in outs_ref]
    g_ref = torch.autograd.grad(outs_ref, inputs, grads_out)
    g_cuda = torch.autograd.grad(outs_cuda, inputs, grads_out)
    for a, b in zip(g_ref, g_cuda):
        assert torch.allclose(a, b, atol=1e-8)
    assert torch.autograd.gradcheck(
        lambda *x: volume_render.composite(*x, impl='cuda'), _inputs('cuda', torch.float64, (2, 3))
    )
