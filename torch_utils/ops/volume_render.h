// Declarations shared by volume_render.cpp (bindings) and volume_render.cu (kernels).
#pragma once
#include <torch/extension.h>

#include <vector>

std::vector<torch::Tensor> composite_forward(torch::Tensor colors, torch::Tensor sigmas, torch::Tensor deltas,
                                             torch::Tensor t);
std::vector<torch::Tensor> composite_backward(torch::Tensor colors, torch::Tensor sigmas, torch::Tensor deltas,
                                              torch::Tensor t, torch::Tensor weights, torch::Tensor g_color,
                                              torch::Tensor g_depth, torch::Tensor g_opacity, torch::Tensor g_weights);
