// QLoRA's 4-bit linear layer as bitsandbytes computes it, for runner/models/four_bit.rs.
//
// A weight is held as packed 4-bit codes plus one absmax per block (itself 8-bit with double
// quantisation). `x·Wᵀ` dequantises W into x's kind, multiplies, and keeps nothing of W for the
// backward pass but the packed codes: backward dequantises again, as bitsandbytes' MatMul4Bit
// does, so no dequantised copy of any weight outlives its multiply. tch cannot define autograd
// functions, hence this small C++ `torch::autograd::Function`.
//
// Dequantisation is bitsandbytes' (`dequantize_4bit`, `dequantize_blockwise`): each value is
// `code[q] · absmax[block]` in fp32, then cast. Every function follows the shim's convention
// (../shim.h).

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "../shim.h"

#include <algorithm>

extern "C" {
// Mirrors `FourBitRaw` in four_bit.rs. Tensors are borrowed; the nested ones are null without
// double quantisation.
struct Runner4bit {
  const at::Tensor* packed;         // uint8 [ceil(n/2)]: element 2i in the high nibble
  const at::Tensor* absmax;         // fp32 [blocks], or uint8 [blocks] when nested
  const at::Tensor* code;           // fp32 [16]: the 4-bit code book (NF4 or FP4)
  const at::Tensor* nested_absmax;  // fp32 [ceil(blocks/nested_block)]
  const at::Tensor* nested_code;    // fp32 [256]: bitsandbytes' dynamic 8-bit map
  const at::Tensor* offset;         // fp32 [1]: the mean subtracted before nesting
  int64_t block;
  int64_t nested_block;
  int64_t rows;
  int64_t cols;
};
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// `values[i] · absmax[i / block]` in fp32 for the first `n` values (`values` may hold more).
// `values` is a temporary of the caller's: scaled in place, to hold one fp32 copy, not two.
at::Tensor blockwise(const at::Tensor& values, const at::Tensor& absmax, int64_t block, int64_t n) {
  const int64_t padded = (n + block - 1) / block * block;
  auto v = values.reshape({-1}).slice(0, 0, n);
  if (padded != n) v = at::constant_pad_nd(v, {0, padded - n}, 0);
  return v.view({-1, block}).mul_(absmax.view({-1, 1})).reshape({-1}).slice(0, 0, n);
}

// Values per piece of a dequantisation: whole blocks, about 1M (4 MiB in fp32), so the fp32
// intermediates stay small and are reused by the allocator rather than grown per weight.
constexpr int64_t kPiece = 1 << 20;

struct State {
  at::Tensor packed, absmax, code, nested_absmax, nested_code, offset;
  int64_t block, nested_block, rows, cols;

  static State of(const Runner4bit& raw) {
    State s;
    s.packed = *raw.packed;
    s.absmax = *raw.absmax;
    s.code = *raw.code;
    if (raw.nested_absmax != nullptr) {
      s.nested_absmax = *raw.nested_absmax;
      s.nested_code = *raw.nested_code;
      s.offset = *raw.offset;
    }
    s.block = raw.block;
    s.nested_block = raw.nested_block;
    s.rows = raw.rows;
    s.cols = raw.cols;
    return s;
  }

  // The fp32 absmax of every block: dequantise_blockwise(absmax, state2) + offset when nested.
  at::Tensor scales() const {
    if (!nested_absmax.defined()) return absmax;
    auto values = nested_code.index_select(0, absmax.reshape({-1}).to(at::kInt));
    return blockwise(values, nested_absmax, nested_block, absmax.numel()) + offset;
  }

  // The weight in `kind`, piece by piece. `pairs` maps a byte to its two codes (high nibble
  // first), so one lookup per byte unpacks and decodes.
  at::Tensor dequantize(at::ScalarType kind) const {
    const int64_t n = rows * cols;
    auto byte = at::arange(256, packed.options().dtype(at::kInt));
    auto pairs = at::stack({code.index_select(0, byte.__rshift__(4)), code.index_select(0, byte.bitwise_and(15))}, 1);
    auto bytes = packed.reshape({-1});
    auto all_scales = scales();
    auto out = at::empty({n}, code.options().dtype(kind));
    const int64_t piece = std::max<int64_t>(1, kPiece / block) * block;  // even: blocks are
    for (int64_t start = 0; start < n; start += piece) {
      const int64_t len = std::min(piece, n - start);
      auto values = pairs.index_select(0, bytes.slice(0, start / 2, (start + len + 1) / 2).to(at::kInt));
      auto piece_scales = all_scales.slice(0, start / block, (start + len + block - 1) / block);
      out.slice(0, start, start + len).copy_(blockwise(values, piece_scales, block, len));
    }
    return out.view({rows, cols});
  }

  void save(AutogradContext* ctx) const {
    ctx->saved_data["packed"] = packed;
    ctx->saved_data["absmax"] = absmax;
    ctx->saved_data["code"] = code;
    ctx->saved_data["nested"] = nested_absmax.defined();
    if (nested_absmax.defined()) {
      ctx->saved_data["nested_absmax"] = nested_absmax;
      ctx->saved_data["nested_code"] = nested_code;
      ctx->saved_data["offset"] = offset;
    }
    ctx->saved_data["block"] = block;
    ctx->saved_data["nested_block"] = nested_block;
    ctx->saved_data["rows"] = rows;
    ctx->saved_data["cols"] = cols;
  }

  static State restore(AutogradContext* ctx) {
    auto& d = ctx->saved_data;
    State s;
    s.packed = d["packed"].toTensor();
    s.absmax = d["absmax"].toTensor();
    s.code = d["code"].toTensor();
    if (d["nested"].toBool()) {
      s.nested_absmax = d["nested_absmax"].toTensor();
      s.nested_code = d["nested_code"].toTensor();
      s.offset = d["offset"].toTensor();
    }
    s.block = d["block"].toInt();
    s.nested_block = d["nested_block"].toInt();
    s.rows = d["rows"].toInt();
    s.cols = d["cols"].toInt();
    return s;
  }
};

// y = x·Wᵀ with W dequantised into x's kind; backward gives x's gradient only (W is frozen).
struct MatMul4bit : public torch::autograd::Function<MatMul4bit> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const Runner4bit* raw) {
    auto state = State::of(*raw);
    state.save(ctx);
    return at::linear(x, state.dequantize(x.scalar_type()));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto& grad = grads[0];
    auto state = State::restore(ctx);
    return {grad.matmul(state.dequantize(grad.scalar_type())), at::Tensor()};
  }
};

}  // namespace

extern "C" {

// *out = the weight dequantised in fp32, shape [rows, cols].
char* runner_4bit_dequantize(at::Tensor** out, const Runner4bit* raw) {
  return runner_shim::guarded("dequantize", [&] {
    *out = new at::Tensor(State::of(*raw).dequantize(at::kFloat));
  });
}

// *out = x·Wᵀ, differentiable in x; the autograd graph keeps only the packed weight.
char* runner_4bit_linear(at::Tensor** out, const at::Tensor* x, const Runner4bit* raw) {
  return runner_shim::guarded("linear", [&] { *out = new at::Tensor(MatMul4bit::apply(*x, raw)); });
}
}
