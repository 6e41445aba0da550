// upfirdn2d CUDA kernel: one thread per output pixel; it visits only the filter taps that land on
// non-zero (input) samples of the virtual zero-inserted, padded image.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>

#include "upfirdn2d.h"

namespace {

__device__ __forceinline__ int positive_mod(int a, int m) { return ((a % m) + m) % m; }

template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const float* __restrict__ f,
                                 scalar_t* __restrict__ out, UpFirDn2dParams p) {
    using T = at::opmath_type<scalar_t>;
    const int64_t total = p.batch * p.out_h * p.out_w;
    const int64_t stride = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const int ox = (int)(i % p.out_w);
        const int oy = (int)((i / p.out_w) % p.out_h);
        const int64_t b = i / ((int64_t)p.out_w * p.out_h);
        const int uy0 = oy * p.down_y - p.pad_y0;  // Up-space row under filter tap 0.
        const int ux0 = ox * p.down_x - p.pad_x0;
        const scalar_t* xb = x + b * p.in_h * p.in_w;
        T acc = T(0);
        for (int ty = positive_mod(-uy0, p.up_y); ty < p.filter_h; ty += p.up_y) {
            const int iy = (uy0 + ty) / p.up_y;  // Exact: uy0 + ty is a multiple of up_y.
            if (iy < 0 || iy >= p.in_h) continue;
            for (int tx = positive_mod(-ux0, p.up_x); tx < p.filter_w; tx += p.up_x) {
                const int ix = (ux0 + tx) / p.up_x;
                if (ix < 0 || ix >= p.in_w) continue;
                acc += (T)xb[iy * p.in_w + ix] * (T)f[ty * p.filter_w + tx];
            }
        }
        out[i] = (scalar_t)acc;
    }
}

}  // namespace

void upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, at::Tensor& out, const UpFirDn2dParams& p) {
    const int64_t total = p.batch * p.out_h * p.out_w;
    if (total == 0) return;
    const at::cuda::OptionalCUDAGuard guard(x.device());
    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 65535 * 8);
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upfirdn2d_kernel", [&] {
        upfirdn2d_kernel<scalar_t><<<blocks, threads, 0, stream>>>(x.data_ptr<scalar_t>(), f.data_ptr<float>(),
                                                                   out.data_ptr<scalar_t>(), p);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
}
