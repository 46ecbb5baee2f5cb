// QuantState4bit's geometry and the consistency checks every entry point runs.
#include <ATen/ATen.h>

#include <stdexcept>

#include "quant/quant_internal.h"

namespace peft::quant {

int64_t QuantState4bit::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t QuantState4bit::rows() const { return shape.empty() ? 1 : shape[0]; }

int64_t QuantState4bit::cols() const {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

namespace {

[[noreturn]] void fail(const std::string& key, const std::string& what) { throw std::runtime_error(key + ": " + what); }

std::string n_str(int64_t v) { return std::to_string(v); }

// A 1-d-or-more tensor of `numel` elements of `dtype`, or an error naming `key`.
void expect_tensor(const at::Tensor& t, const std::string& key, at::ScalarType dtype, int64_t numel,
                   const std::string& why) {
  if (!t.defined()) fail(key, "missing");
  if (t.scalar_type() != dtype) {
    fail(key, std::string("dtype ") + c10::toString(t.scalar_type()) + ", expected " + c10::toString(dtype));
  }
  if (t.numel() != numel) fail(key, n_str(t.numel()) + " elements, expected " + why);
}

void validate_geometry(const QuantState4bit& s, const std::string& qs_key) {
  if (!valid_blocksize(s.blocksize)) {
    fail(qs_key, "blocksize " + n_str(s.blocksize) + " is not one of 32, 64, 128, 256, 512, 1024, 2048, 4096");
  }
  if (!detail::supported_dtype(s.dtype)) {
    fail(qs_key, std::string("dtype ") + c10::toString(s.dtype) + " is not float32, bfloat16 or float16");
  }
  for (int64_t d : s.shape) {
    if (d < 0) fail(qs_key, "negative dimension in shape");
  }
}

void validate_code(const at::Tensor& code, QuantType type, const std::string& key) {
  expect_tensor(code, key, at::kFloat, 16, "16 (the " + std::string(quant_type_name(type)) + " table)");
  const at::Tensor c = code.to(at::kCPU).contiguous();
  const std::vector<float>& table = code_table(type);
  for (int i = 0; i < 16; ++i) {
    if (!(c.data_ptr<float>()[i] == table[i])) {
      fail(key, std::string("is not bitsandbytes' ") + quant_type_name(type) + " table (entry " + std::to_string(i) +
                    ")");
    }
  }
}

}  // namespace

void validate(const QuantState4bit& s, const std::string& where) {
  const std::string qs_key = where + ".quant_state.bitsandbytes__" + quant_type_name(s.type);
  validate_geometry(s, qs_key);
  validate_code(s.code, s.type, where + ".quant_map");
  const int64_t blocks = s.blocks();
  const std::string why = "ceil(" + n_str(s.numel()) + " / " + n_str(s.blocksize) + ") = " + n_str(blocks);
  if (!s.nested) {
    expect_tensor(s.absmax, where + ".absmax", at::kFloat, blocks, why);
    return;
  }
  expect_tensor(s.absmax, where + ".absmax", at::kByte, blocks, why + " (uint8 with double quantization)");
  if (s.nested_blocksize <= 0) fail(qs_key, "nested_blocksize " + n_str(s.nested_blocksize) + " is not positive");
  const int64_t nested_blocks = (blocks + s.nested_blocksize - 1) / s.nested_blocksize;
  expect_tensor(s.nested_absmax, where + ".nested_absmax", at::kFloat, nested_blocks,
                "ceil(" + n_str(blocks) + " / " + n_str(s.nested_blocksize) + ") = " + n_str(nested_blocks));
  expect_tensor(s.nested_code, where + ".nested_quant_map", at::kFloat, 256, "256");
}

void check_packed(const at::Tensor& packed, const QuantState4bit& state, const std::string& where) {
  validate(state, where);
  if (!packed.defined()) fail(where, "missing packed 4-bit weight");
  const int64_t want = (state.numel() + 1) / 2;
  const int64_t bytes = packed.numel() * static_cast<int64_t>(packed.element_size());
  if (bytes != want) {
    fail(where, "packed weight holds " + n_str(bytes) + " bytes, expected ceil(" + n_str(state.numel()) +
                    " / 2) = " + n_str(want));
  }
}

}  // namespace peft::quant
