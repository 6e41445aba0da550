// Python bindings of the volume_render CUDA twin (see volume_render.cu), with input checks.
#include "volume_render.h"

static void check(const torch::Tensor& x, const char* name, int ndim) {
    TORCH_CHECK(x.is_cuda(), "volume_render: ", name, " must be a CUDA tensor");
    TORCH_CHECK(x.is_contiguous(), "volume_render: ", name, " must be contiguous");
    TORCH_CHECK(x.dim() == ndim, "volume_render: ", name, " must have ", ndim, " dimensions");
}

static std::vector<torch::Tensor> forward(torch::Tensor colors, torch::Tensor sigmas, torch::Tensor deltas,
                                          torch::Tensor t) {
    check(colors, "colors", 3);
    check(sigmas, "sigmas", 2);
    check(deltas, "deltas", 2);
    check(t, "t", 2);
    return composite_forward(colors, sigmas, deltas, t);
}

static std::vector<torch::Tensor> backward(torch::Tensor colors, torch::Tensor sigmas, torch::Tensor deltas,
                                           torch::Tensor t, torch::Tensor weights, torch::Tensor g_color,
                                           torch::Tensor g_depth, torch::Tensor g_opacity, torch::Tensor g_weights) {
    check(weights, "weights", 2);
    check(g_color, "g_color", 2);
    check(g_depth, "g_depth", 1);
    check(g_opacity, "g_opacity", 1);
    check(g_weights, "g_weights", 2);
    return composite_backward(colors, sigmas, deltas, t, weights, g_color, g_depth, g_opacity, g_weights);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("forward", &forward, "volume_render composite forward (CUDA)");
    m.def("backward", &backward, "volume_render composite backward (CUDA)");
}
