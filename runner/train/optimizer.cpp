// The optimizer step's multi-tensor kernels, for runner/train/optimizer.rs: libtorch's fused
// AdamW (what transformers' Trainer uses by default with torch >= 2.8, `adamw_torch_fused`)
// and the `_foreach_` norm and scale of `torch.nn.utils.clip_grad_norm_`. Each updates a
// whole list of tensors in one call, where one operation per tensor would cost ~10 passes
// (CPU) or kernel launches (CUDA) per weight. tch binds no operation that takes a list of
// tensors to write, hence this file. Every function follows the shim's convention
// (../shim.h); tensors are borrowed tch tensors (`tch::Tensor::as_ptr()` is an `at::Tensor*`).

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "../shim.h"

#include <cstdint>
#include <vector>

namespace {

// Handles to `n` borrowed tensors: copies of the handles, not of the values, so in-place
// operations on the list change the caller's tensors.
std::vector<at::Tensor> list(const at::Tensor* const* tensors, int64_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int64_t i = 0; i < n; ++i) out.push_back(*tensors[i]);
  return out;
}

}  // namespace

extern "C" {

// torch.optim.AdamW's step with fused=True on `n` fp32 weights, their gradients and moments,
// all at the same `step` (fp32 scalar on their device, the step count after this step):
// `p ← p·(1 − lr·wd)`, the moments, then `p ← p − lr/(1 − β1ᵗ) · m / (√v/√(1 − β2ᵗ) + ε)`.
char* runner_fused_adamw(const at::Tensor* const* params, const at::Tensor* const* grads,
                         const at::Tensor* const* exp_avgs, const at::Tensor* const* exp_avg_sqs,
                         int64_t n, const at::Tensor* step, double lr, double beta1, double beta2,
                         double weight_decay, double eps) {
  return runner_shim::guarded("fused AdamW", [&] {
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> steps(n, *step);
    at::_fused_adamw_(list(params, n), list(grads, n), list(exp_avgs, n), list(exp_avg_sqs, n),
                      {}, steps, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false,
                      /*maximize=*/false);
  });
}

// *out = the L2 norm of `n` tensors taken together, in fp32 (clip_grad_norm_'s total norm:
// each tensor's norm, then the norm of those).
char* runner_total_norm(at::Tensor** out, const at::Tensor* const* tensors, int64_t n) {
  return runner_shim::guarded("gradient norm", [&] {
    at::NoGradGuard no_grad;
    auto norms = at::_foreach_norm(list(tensors, n), 2, at::kFloat);
    *out = new at::Tensor(at::linalg_vector_norm(at::stack(norms), 2));
  });
}

// Multiplies `n` tensors by `factor` in place.
char* runner_scale_(const at::Tensor* const* tensors, int64_t n, double factor) {
  return runner_shim::guarded("gradient scaling", [&] {
    at::NoGradGuard no_grad;
    at::_foreach_mul_(list(tensors, n), factor);
  });
}
}
