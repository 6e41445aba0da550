// bias_act CUDA twin: argument checks and the Python binding (the kernels are in bias_act.cu).
#include <torch/extension.h>

#include "bias_act.h"

namespace {

BiasActParams make_params(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act, double alpha,
                          double gain, double clamp) {
    TORCH_CHECK(x.is_cuda() && x.is_contiguous(), "bias_act: x must be a contiguous CUDA tensor");
    TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
    TORCH_CHECK(act >= 1 && act <= 9, "bias_act: unknown activation id ", act);
    BiasActParams p;
    p.size = x.numel();
    p.has_bias = b.numel() > 0;
    if (p.has_bias) {
        TORCH_CHECK(b.is_cuda() && b.is_contiguous() && b.dim() == 1 && b.size(0) == x.size(dim),
                    "bias_act: b must be a contiguous CUDA tensor of shape [x.shape[dim]]");
        TORCH_CHECK(b.scalar_type() == x.scalar_type() && b.device() == x.device(),
                    "bias_act: b must have the dtype and device of x");
    }
    p.channels = p.has_bias ? x.size(dim) : 1;
    p.inner = 1;
    for (int64_t d = dim + 1; d < x.dim(); ++d) p.inner *= x.size(d);
    p.act = (int)act;
    p.alpha = alpha;
    p.gain = gain;
    p.clamp = clamp;
    return p;
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act, double alpha, double gain,
                   double clamp) {
    BiasActParams p = make_params(x, b, dim, act, alpha, gain, clamp);
    at::Tensor y = at::empty_like(x);
    bias_act_forward_cuda(x, b, y, p);
    return y;
}

at::Tensor backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& b, int64_t dim, int64_t act,
                    double alpha, double gain, double clamp) {
    BiasActParams p = make_params(x, b, dim, act, alpha, gain, clamp);
    TORCH_CHECK(dy.sizes() == x.sizes() && dy.is_contiguous() && dy.scalar_type() == x.scalar_type(),
                "bias_act: dy must be contiguous with the shape and dtype of x");
    at::Tensor dx = at::empty_like(x);
    bias_act_backward_cuda(dy, x, b, dx, p);
    return dx;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &forward, "y = clamp(act(x + b) * gain)");
    m.def("backward", &backward, "dx of bias_act given dy");
}
