// bias_act CUDA kernels: one thread per element, math in float (double for double inputs).
#include <ATen/cuda/CUDAContext.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>

#include "bias_act.h"

namespace {

template <typename T>
__device__ __forceinline__ T sigmoid_of(T v) { return T(1) / (T(1) + exp(-v)); }

// Forward value of each activation (torch semantics: softplus is linear above 20, SELU constants).
template <typename T>
__device__ __forceinline__ T act_value(int act, T v, T alpha) {
    const T selu_scale = T(1.0507009873554805), selu_alpha = T(1.6732632423543772);
    switch (act) {
        case 2: return v > T(0) ? v : T(0);
        case 3: return v > T(0) ? v : v * alpha;
        case 4: return tanh(v);
        case 5: return sigmoid_of(v);
        case 6: return v > T(0) ? v : exp(v) - T(1);
        case 7: return v > T(0) ? selu_scale * v : selu_scale * selu_alpha * (exp(v) - T(1));
        case 8: return v > T(20) ? v : log1p(exp(v));
        case 9: return v * sigmoid_of(v);
        default: return v;
    }
}

// Derivative d act / d v (matching torch's backward at the kinks: relu'(0) = 0, lrelu'(0) = alpha).
template <typename T>
__device__ __forceinline__ T act_grad(int act, T v, T alpha) {
    const T selu_scale = T(1.0507009873554805), selu_alpha = T(1.6732632423543772);
    switch (act) {
        case 2: return v > T(0) ? T(1) : T(0);
        case 3: return v > T(0) ? T(1) : alpha;
        case 4: { T t = tanh(v); return T(1) - t * t; }
        case 5: { T s = sigmoid_of(v); return s * (T(1) - s); }
        case 6: return v > T(0) ? T(1) : exp(v);
        case 7: return v > T(0) ? selu_scale : selu_scale * selu_alpha * exp(v);
        case 8: return v > T(20) ? T(1) : sigmoid_of(v);
        case 9: { T s = sigmoid_of(v); return s * (T(1) + v * (T(1) - s)); }
        default: return T(1);
    }
}

template <typename scalar_t>
__global__ void bias_act_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                const scalar_t* __restrict__ dy, scalar_t* __restrict__ out, BiasActParams p,
                                bool backward) {
    using T = at::opmath_type<scalar_t>;
    int64_t stride = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.size; i += stride) {
        T v = (T)x[i];
        if (p.has_bias) v += (T)b[(i / p.inner) % p.channels];
        T y = act_value<T>(p.act, v, (T)p.alpha) * (T)p.gain;
        bool clamped = p.clamp >= 0.0 && (y > (T)p.clamp || y < -(T)p.clamp);
        if (!backward) {
            out[i] = (scalar_t)(clamped ? (y > T(0) ? (T)p.clamp : -(T)p.clamp) : y);
        } else {
            out[i] = (scalar_t)(clamped ? T(0) : (T)dy[i] * (T)p.gain * act_grad<T>(p.act, v, (T)p.alpha));
        }
    }
}

void launch(const at::Tensor& x, const at::Tensor& b, const at::Tensor* dy, at::Tensor& out,
            const BiasActParams& p) {
    if (p.size == 0) return;
    const at::cuda::OptionalCUDAGuard guard(x.device());
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((p.size + threads - 1) / threads, 65535 * 8);
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bias_act_kernel", [&] {
        bias_act_kernel<scalar_t><<<blocks, threads, 0, stream>>>(
            x.data_ptr<scalar_t>(), p.has_bias ? b.data_ptr<scalar_t>() : nullptr,
            dy ? dy->data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), p, dy != nullptr);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void bias_act_forward_cuda(const at::Tensor& x, const at::Tensor& b, at::Tensor& y, const BiasActParams& p) {
    launch(x, b, nullptr, y, p);
}

void bias_act_backward_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& b, at::Tensor& dx,
                            const BiasActParams& p) {
    launch(x, b, &dy, dx, p);
}
