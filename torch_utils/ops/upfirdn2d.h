// upfirdn2d CUDA twin: shared declarations between the host binding (upfirdn2d.cpp) and the kernel (upfirdn2d.cu).
#pragma once
#include <ATen/ATen.h>

struct UpFirDn2dParams {
    int64_t batch;           // N * C (each channel is filtered independently).
    int in_h, in_w;          // Input size.
    int out_h, out_w;        // Output size.
    int up_x, up_y;          // Upsampling factors.
    int down_x, down_y;      // Downsampling factors.
    int pad_x0, pad_y0;      // Leading padding (negative = crop); trailing padding only sets out_h/out_w.
    int filter_h, filter_w;  // Filter size.
};

// out[b, oy, ox] = sum_{ty, tx} up(x)[b, oy * down_y + ty - pad_y0, ox * down_x + tx - pad_x0] * f[ty, tx]
// (a correlation with f: the host flips f for a convolution and folds the gain into it).
void upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f, at::Tensor& out, const UpFirDn2dParams& p);
