// 4-bit blockwise quantization (QLoRA's NF4 and FP4), byte-compatible with bitsandbytes
// 0.50.2: the same packed codes, absmax, double-quantized statistics and dequantized values
// as its CPU path, and the same safetensors keys as bnb.nn.Linear4bit / transformers save.
//
// Layout (bnb's): the weight is flattened row-major and cut into blocks of `blocksize`
// elements (the last one may be short); each block is scaled by its absolute maximum and
// every element replaced by the index of the nearest of 16 code values. Two indices share
// a byte, the first element in the high nibble; an odd element count pads the last low
// nibble with the code of 0. The packed tensor is uint8 [ceil(numel / 2), 1].
//
// Double quantization (bnb's compress_statistics) stores the fp32 absmax as uint8 codes of
// bnb's 8-bit dynamic map: offset = mean(absmax), then (absmax - offset) quantized in
// blocks of 256 with their own fp32 absmax (nested_absmax).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace peft::quant {

enum class QuantType { kNF4, kFP4 };

const char* quant_type_name(QuantType type);  // "nf4" / "fp4", as bnb spells them

// bnb accepts these blocksizes for 4-bit quantization (powers of two, 32..4096).
bool valid_blocksize(int64_t blocksize);
constexpr int64_t kNestedBlocksize = 256;

// bnb's code tables, fp32: NF4's 16 normal quantiles and FP4's e2m1 values / 12 (its
// quant_map), and the 256-entry signed dynamic map used for the nested absmax.
const std::vector<float>& code_table(QuantType type);
const std::vector<float>& dynamic_map();

// What dequantization needs besides the packed codes (bnb's QuantState).
struct QuantState4bit {
  QuantType type = QuantType::kNF4;
  int64_t blocksize = 64;
  std::vector<int64_t> shape;         // the weight's shape
  at::ScalarType dtype = at::kFloat;  // the weight's dtype: fp32, bf16 or fp16
  at::Tensor absmax;                  // [blocks] fp32; uint8 codes when nested
  at::Tensor code;                    // [16] fp32, code_table(type) (saved as quant_map)
  bool nested = false;
  at::Tensor nested_absmax;           // [ceil(blocks / nested_blocksize)] fp32
  at::Tensor nested_code;             // [256] fp32, dynamic_map() unless read from a file
  int64_t nested_blocksize = kNestedBlocksize;
  float offset = 0.0f;                // added to the dequantized nested absmax

  int64_t numel() const;
  int64_t blocks() const { return (numel() + blocksize - 1) / blocksize; }
  // Dimension 0 of the shape and the product of the others (1 for a 1-d shape).
  int64_t rows() const;
  int64_t cols() const;
};

// Throws std::runtime_error ("<where>: ...") unless the state is self-consistent: a valid
// blocksize and dtype, absmax / nested tensors of the right dtype and length, code equal
// to the type's table.
void validate(const QuantState4bit& state, const std::string& where = "quant_state");
// Validates the state, then throws unless `packed` holds ceil(numel / 2) bytes (uint8, or
// another dtype bnb's quant_storage may give, whose bytes are read as they lie).
void check_packed(const at::Tensor& packed, const QuantState4bit& state, const std::string& where);

struct Quantized4bit {
  at::Tensor packed;  // uint8 [ceil(numel / 2), 1]
  QuantState4bit state;
};

// Quantizes `w` (fp32, bf16 or fp16, any shape, any device: the work is done on the CPU
// and the results moved back) as bnb.functional.quantize_4bit(w, blocksize=blocksize,
// compress_statistics=double_quant, quant_type=...).
Quantized4bit quantize_4bit(const at::Tensor& w, QuantType type, int64_t blocksize = 64,
                            bool double_quant = false);

// The fp32 scale of every block: state.absmax itself, or the nested absmax dequantized as
// bnb does (nested_code[q] * nested_absmax[i / 256] + offset). A layer computes it once.
at::Tensor dequantize_absmax(const QuantState4bit& state);

// The whole weight, shape state.shape, in `out_dtype` (fp32, bf16 or fp16; by default the
// weight's own dtype), equal bit for bit to bnb's reference dequantization: the fp32
// product code[q] * scale rounded once to out_dtype.
at::Tensor dequantize_4bit(const at::Tensor& packed, const QuantState4bit& state);
at::Tensor dequantize_4bit(const at::Tensor& packed, const QuantState4bit& state,
                           at::ScalarType out_dtype);

// Rows [row0, row1) of the weight seen as [rows(), cols()] (elements row0 * cols ..
// row1 * cols of the flat weight; tiles may start and end mid-block and mid-byte), written
// to `out`: a contiguous CPU tensor of (row1 - row0) * cols elements, fp32, bf16 or fp16.
// `scales` is dequantize_absmax(state). Values equal those of dequantize_4bit.
void dequantize_4bit_rows(const at::Tensor& packed, const QuantState4bit& state,
                          const at::Tensor& scales, int64_t row0, int64_t row1,
                          const at::Tensor& out);

// bnb's safetensors keys for the weight named `weight_key` (e.g.
// "model.layers.0.mlp.up_proj.weight"), as QuantState.as_dict(packed=True) and
// Linear4bit's state dict give them: <weight_key>.absmax, .quant_map, .nested_absmax,
// .nested_quant_map and .quant_state.bitsandbytes__<nf4|fp4> (uint8 bytes of the JSON
// bnb writes, byte for byte). The packed weight itself stays under `weight_key`.
std::map<std::string, at::Tensor> quant_state_to_tensors(const QuantState4bit& state,
                                                         const std::string& weight_key);

// The reverse. `get` returns the tensor stored under a key, or an undefined tensor when
// there is none. Validates everything and throws std::runtime_error with one line naming
// the offending key: missing or unparseable quant_state JSON, unknown quant type,
// blocksize out of range, wrong dtypes or shapes, absmax length not ceil(numel /
// blocksize), nested sizes that do not match; and, when `weight_key` itself is present,
// a packed weight of the wrong size.
using TensorLookup = std::function<at::Tensor(const std::string& key)>;
QuantState4bit quant_state_from_tensors(const TensorLookup& get, const std::string& weight_key);
QuantState4bit quant_state_from_tensors(const std::map<std::string, at::Tensor>& tensors,
                                        const std::string& weight_key);

// Python's repr() of a double (what json.dumps writes for a float), e.g. 2.592968702316284,
// 1e-05, 1e+16, 0.0: the shortest digits that read back to the same value.
std::string python_float_repr(double value);

}  // namespace peft::quant
