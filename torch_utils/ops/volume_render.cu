// CUDA twin of torch_utils/ops/volume_render.py:_composite_ref (alpha compositing along rays).
// One thread per ray walks its S samples front to back (forward) and back to front (backward).
// Layout: colors [R, S, C], sigmas/deltas/t/weights [R, S], color [R, C], depth_sum/opacity [R], all contiguous.

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "volume_render.h"

template <typename scalar_t>
__global__ void composite_forward_kernel(const scalar_t* __restrict__ colors, const scalar_t* __restrict__ sigmas,
                                         const scalar_t* __restrict__ deltas, const scalar_t* __restrict__ t,
                                         scalar_t* __restrict__ color, scalar_t* __restrict__ depth_sum,
                                         scalar_t* __restrict__ opacity, scalar_t* __restrict__ weights,
                                         int64_t R, int S, int C) {
    int64_t ray = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (ray >= R) return;
    const int64_t base = ray * S;
    for (int c = 0; c < C; c++) color[ray * C + c] = 0;
    scalar_t tau_before = 0, depth = 0, total = 0;
    for (int i = 0; i < S; i++) {
        const scalar_t tau = sigmas[base + i] * deltas[base + i];
        const scalar_t w = exp(-tau_before) * -expm1(-tau);  // T_i * alpha_i
        weights[base + i] = w;
        for (int c = 0; c < C; c++) color[ray * C + c] += w * colors[(base + i) * C + c];
        depth += w * t[base + i];
        total += w;
        tau_before += tau;
    }
    depth_sum[ray] = depth;
    opacity[ray] = total;
}

// With G_i = dL/dw_i (through color, depth, opacity and the weights output) and w_i = T_i - T_{i+1}:
//   dL/dtau_k = G_k T_{k+1} - sum_{i>k} G_i w_i,   dL/dsigma_k = dL/dtau_k delta_k,   dL/ddelta_k = dL/dtau_k sigma_k.
template <typename scalar_t>
__global__ void composite_backward_kernel(
    const scalar_t* __restrict__ colors, const scalar_t* __restrict__ sigmas, const scalar_t* __restrict__ deltas,
    const scalar_t* __restrict__ t, const scalar_t* __restrict__ weights, const scalar_t* __restrict__ g_color,
    const scalar_t* __restrict__ g_depth, const scalar_t* __restrict__ g_opacity, const scalar_t* __restrict__ g_weights,
    scalar_t* __restrict__ d_colors, scalar_t* __restrict__ d_sigmas, scalar_t* __restrict__ d_deltas,
    scalar_t* __restrict__ d_t, int64_t R, int S, int C) {
    int64_t ray = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (ray >= R) return;
    const int64_t base = ray * S;
    scalar_t tau_total = 0;
    for (int i = 0; i < S; i++) tau_total += sigmas[base + i] * deltas[base + i];
    scalar_t suffix = 0;              // sum_{i>k} G_i w_i
    scalar_t tau_through = tau_total;  // sum_{j<=k} tau_j, walked backwards
    for (int k = S - 1; k >= 0; k--) {
        const scalar_t w = weights[base + k];
        scalar_t G = g_opacity[ray] + g_depth[ray] * t[base + k] + g_weights[base + k];
        for (int c = 0; c < C; c++) {
            G += g_color[ray * C + c] * colors[(base + k) * C + c];
            d_colors[(base + k) * C + c] = g_color[ray * C + c] * w;
        }
        d_t[base + k] = g_depth[ray] * w;
        const scalar_t T_next = exp(-tau_through);  // T_{k+1}
        const scalar_t d_tau = G * T_next - suffix;
        d_sigmas[base + k] = d_tau * deltas[base + k];
        d_deltas[base + k] = d_tau * sigmas[base + k];
        suffix += G * w;
        tau_through -= sigmas[base + k] * deltas[base + k];
    }
}

static int num_blocks(int64_t R, int threads) { return (int)((R + threads - 1) / threads); }

std::vector<torch::Tensor> composite_forward(torch::Tensor colors, torch::Tensor sigmas, torch::Tensor deltas,
                                             torch::Tensor t) {
    const at::cuda::OptionalCUDAGuard guard(device_of(colors));
    const int64_t R = sigmas.size(0);
    const int S = (int)sigmas.size(1), C = (int)colors.size(2);
    auto color = torch::empty({R, C}, colors.options());
    auto depth_sum = torch::empty({R}, colors.options());
    auto opacity = torch::empty({R}, colors.options());
    auto weights = torch::empty({R, S}, colors.options());
    const int threads = 128;
    AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "composite_forward", [&] {
        composite_forward_kernel<scalar_t><<<num_blocks(R, threads), threads, 0, at::cuda::getCurrentCUDAStream()>>>(
            colors.data_ptr<scalar_t>(), sigmas.data_ptr<scalar_t>(), deltas.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(),
            color.data_ptr<scalar_t>(), depth_sum.data_ptr<scalar_t>(), opacity.data_ptr<scalar_t>(),
            weights.data_ptr<scalar_t>(), R, S, C);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {color, depth_sum, opacity, weights};
}

std::vector<torch::Tensor> composite_backward(torch::Tensor colors, torch::Tensor sigmas, torch::Tensor deltas,
                                              torch::Tensor t, torch::Tensor weights, torch::Tensor g_color,
                                              torch::Tensor g_depth, torch::Tensor g_opacity, torch::Tensor g_weights) {
    const at::cuda::OptionalCUDAGuard guard(device_of(colors));
    const int64_t R = sigmas.size(0);
    const int S = (int)sigmas.size(1), C = (int)colors.size(2);
    auto d_colors = torch::empty_like(colors);
    auto d_sigmas = torch::empty_like(sigmas);
    auto d_deltas = torch::empty_like(deltas);
    auto d_t = torch::empty_like(t);
    const int threads = 128;
    AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "composite_backward", [&] {
        composite_backward_kernel<scalar_t><<<num_blocks(R, threads), threads, 0, at::cuda::getCurrentCUDAStream()>>>(
            colors.data_ptr<scalar_t>(), sigmas.data_ptr<scalar_t>(), deltas.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(),
            weights.data_ptr<scalar_t>(), g_color.data_ptr<scalar_t>(), g_depth.data_ptr<scalar_t>(),
            g_opacity.data_ptr<scalar_t>(), g_weights.data_ptr<scalar_t>(), d_colors.data_ptr<scalar_t>(),
            d_sigmas.data_ptr<scalar_t>(), d_deltas.data_ptr<scalar_t>(), d_t.data_ptr<scalar_t>(), R, S, C);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return {d_colors, d_sigmas, d_deltas, d_t};
}
