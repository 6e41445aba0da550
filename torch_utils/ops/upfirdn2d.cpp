// upfirdn2d CUDA twin: argument checks and the Python binding (the kernel is in upfirdn2d.cu).
#include <torch/extension.h>

#include "upfirdn2d.h"

namespace {

at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y, int64_t down_x,
                     int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 4, "upfirdn2d: x must be a CUDA tensor [N, C, H, W]");
    TORCH_CHECK(f.is_cuda() && f.dim() == 2 && f.scalar_type() == at::kFloat && f.device() == x.device(),
                "upfirdn2d: f must be a 2D float32 tensor on the device of x");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: factors must be >= 1");
    at::Tensor xc = x.contiguous();
    at::Tensor fc = f.contiguous();
    UpFirDn2dParams p;
    p.batch = x.size(0) * x.size(1);
    p.in_h = (int)x.size(2);
    p.in_w = (int)x.size(3);
    p.up_x = (int)up_x;
    p.up_y = (int)up_y;
    p.down_x = (int)down_x;
    p.down_y = (int)down_y;
    p.pad_x0 = (int)pad_x0;
    p.pad_y0 = (int)pad_y0;
    p.filter_h = (int)f.size(0);
    p.filter_w = (int)f.size(1);
    p.out_h = (int)((p.in_h * up_y + pad_y0 + pad_y1 - p.filter_h) / down_y + 1);
    p.out_w = (int)((p.in_w * up_x + pad_x0 + pad_x1 - p.filter_w) / down_x + 1);
    TORCH_CHECK(p.out_h >= 1 && p.out_w >= 1, "upfirdn2d: empty output; increase padding or the input size");
    at::Tensor out = at::empty({x.size(0), x.size(1), p.out_h, p.out_w}, x.options());
    upfirdn2d_cuda(xc, fc, out, p);
    return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "upsample, correlate with f, downsample (per channel)");
}
