// HF PEFT's peft/utils/merge_utils.py, op for op: the ways add_weighted_adapter merges a
// list of task tensors (LoRA A or B matrices, or delta weights) into one. Each function
// calls the same ATen ops in the same order as the Python, so results are bit-identical
// to HF's on the same LibTorch; the DARE masks come from the default CPU generator, as
// torch.bernoulli without a generator does.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace peft::merge_utils {

// sum_i weights[i] * tensors[i]; weights is a float tensor with one entry per tensor.
at::Tensor task_arithmetic(const std::vector<at::Tensor>& tensors, const at::Tensor& weights);
// Keeps the int(density * numel) largest magnitudes of each tensor, then task arithmetic.
at::Tensor magnitude_prune(const std::vector<at::Tensor>& tensors, const at::Tensor& weights, double density);
// TIES: magnitude pruning, a majority sign per entry ("total" or "frequency"), and the mean
// of the weighted entries that agree with it.
at::Tensor ties(const std::vector<at::Tensor>& tensors, const at::Tensor& weights, double density,
                const std::string& majority_sign_method);
// DARE: random Bernoulli(density) masks rescaled by 1/density, then task arithmetic / TIES.
at::Tensor dare_linear(const std::vector<at::Tensor>& tensors, const at::Tensor& weights, double density);
at::Tensor dare_ties(const std::vector<at::Tensor>& tensors, const at::Tensor& weights, double density,
                     const std::string& majority_sign_method);

}  // namespace peft::merge_utils
