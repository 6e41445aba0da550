// bias_act CUDA twin: shared declarations between the host binding (bias_act.cpp) and the kernels (bias_act.cu).
// The activation ids match `cuda_idx` in bias_act.py.
#pragma once
#include <ATen/ATen.h>

struct BiasActParams {
    int64_t size;      // Number of elements of x.
    int64_t channels;  // x.shape[dim] (length of b), or 1 without bias.
    int64_t inner;     // prod(x.shape[dim + 1:]): stride of dim in the contiguous x.
    int act;           // Activation id (1 linear .. 9 swish).
    double alpha;      // Shape parameter (lrelu slope).
    double gain;       // Output gain.
    double clamp;      // Clamp level, or -1 for none.
    bool has_bias;
};

// y = clamp(act(x + b) * gain).
void bias_act_forward_cuda(const at::Tensor& x, const at::Tensor& b, at::Tensor& y, const BiasActParams& p);
// dx = dy * gain * act'(x + b), zero where the clamp was active.
void bias_act_backward_cuda(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& b, at::Tensor& dx,
                            const BiasActParams& p);
