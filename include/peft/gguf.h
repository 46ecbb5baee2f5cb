// GGUF, llama.cpp's model file: read (validated, through mmap), dequantize, write.
//
// Layout (all little-endian): magic "GGUF", u32 version (2 or 3), u64 tensor count,
// u64 metadata count; the metadata as (string key, u32 type, value); one info per tensor
// as (string name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset); padding to
// `general.alignment` (default 32); then the data section, where each tensor starts at
// its offset (a multiple of the alignment). A string is a u64 byte length and the
// bytes; an array is a u32 element type, a u64 count and the elements.
//
// Dims are in ggml order: dims[0] is the row length (the fastest-moving index), so the
// torch/numpy shape is dims reversed. Quantized types pack each row into blocks of
// type_block_size() elements stored in type_block_bytes() bytes.
//
// No LibTorch dependency: the fuzzer builds this alone.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace peft {

// Every error reading, converting or writing GGUF: one line naming the file and the
// key or tensor.
class GgufError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------- tensor types

// ggml's tensor types, numbered as in the file. Every id gguf-py knows is listed (so
// files holding them parse); dequantize() handles the ones can_dequantize() says.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21,
  IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28,
  IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

bool ggml_type_known(uint32_t id);
const char* ggml_type_name(GgmlType t);      // "Q4_K"; "?" for an unknown id
bool ggml_type_from_name(const std::string& name, GgmlType* out);
// Block geometry as gguf-py's GGML_QUANT_SIZES; GgufError for an unknown type.
int64_t type_block_size(GgmlType t);         // elements per block (1 for plain types)
int64_t type_block_bytes(GgmlType t);        // bytes per block
// Bytes holding n elements of one row; GgufError unless n is a multiple of the block size.
uint64_t row_bytes(GgmlType t, int64_t n);

// F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K.
bool can_dequantize(GgmlType t);
// Decodes n_elements (a multiple of the block size) from `src` into float32 at `dst`.
// The output is bit-identical to gguf-py's numpy `gguf.quants.dequantize`: every step
// is the same float32 operation in the same order. Throws GgufError for other types.
void dequantize(GgmlType t, const uint8_t* src, int64_t n_elements, float* dst);

// F32, F16, BF16, Q8_0.
bool can_quantize(GgmlType t);
// Encodes n_elements (a multiple of the block size) of float32 into
// row_bytes(t, n_elements) bytes at `dst`, byte-identical to `gguf.quants.quantize`:
// F16 and BF16 round to nearest even (BF16 quiets NaNs, as gguf-py does), Q8_0 rounds
// half away from zero; NaN and infinity come out as numpy gives them on x86.
void quantize(GgmlType t, const float* src, int64_t n_elements, uint8_t* dst);

// ---------------------------------------------------------------- metadata

// Metadata value types, numbered as in the file.
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

const char* gguf_type_name(GgufType t);  // "UINT32", ..., as gguf-py names them

// One metadata value: a number, a bool, a string, or an array of one element type
// (arrays may hold arrays). Numbers keep their exact bits and type, so a value read from
// one file is written to another unchanged.
class GgufValue {
 public:
  GgufValue() = default;
  static GgufValue u8(uint8_t v) { return number(GgufType::U8, v); }
  static GgufValue i8(int8_t v) { return number(GgufType::I8, static_cast<uint8_t>(v)); }
  static GgufValue u16(uint16_t v) { return number(GgufType::U16, v); }
  static GgufValue i16(int16_t v) { return number(GgufType::I16, static_cast<uint16_t>(v)); }
  static GgufValue u32(uint32_t v) { return number(GgufType::U32, v); }
  static GgufValue i32(int32_t v) { return number(GgufType::I32, static_cast<uint32_t>(v)); }
  static GgufValue u64(uint64_t v) { return number(GgufType::U64, v); }
  static GgufValue i64(int64_t v) { return number(GgufType::I64, static_cast<uint64_t>(v)); }
  static GgufValue f32(float v);
  static GgufValue f64(double v);
  static GgufValue boolean(bool v) { return number(GgufType::BOOL, v ? 1 : 0); }
  static GgufValue string(std::string v);
  // An array of numbers or bools of `elem` type, each given as it would be to the
  // scalar constructor of that type (floats as double, cast to float for F32).
  static GgufValue int_array(GgufType elem, const std::vector<int64_t>& v);
  static GgufValue float_array(GgufType elem, const std::vector<double>& v);
  static GgufValue bool_array(const std::vector<bool>& v);
  static GgufValue string_array(std::vector<std::string> v);
  // Nested arrays: every item must be an array (of any element type).
  static GgufValue array_of_arrays(std::vector<GgufValue> items);
  // A number or bool from its raw bits (the little-endian value, zero-extended), and
  // an array of them: the reader's constructors, also the way to a UINT64 array.
  static GgufValue number(GgufType t, uint64_t bits);
  static GgufValue number_array(GgufType elem, std::vector<uint64_t> bits);

  GgufType type() const { return type_; }
  GgufType elem_type() const { return elem_; }  // ARRAY only
  bool is_array() const { return type_ == GgufType::ARRAY; }
  bool is_integer() const;                      // the eight integer types (not BOOL)
  bool is_float() const { return type_ == GgufType::F32 || type_ == GgufType::F64; }
  size_t size() const;                          // element count of an array

  // Scalar reads. Each throws std::invalid_argument on a value of another kind;
  // GgufMetadata's getters turn that into a GgufError naming the file and key.
  int64_t as_int() const;    // any integer type; U64 above INT64_MAX throws
  uint64_t as_uint() const;  // any integer type; negative throws
  double as_float() const;   // F32 (widened exactly) or F64
  bool as_bool() const;
  const std::string& as_string() const;
  uint64_t bits() const { return bits_; }       // numbers: raw bits, zero-extended

  // Array reads, same rules per element.
  std::vector<int64_t> as_int_array() const;
  std::vector<double> as_float_array() const;
  std::vector<bool> as_bool_array() const;
  const std::vector<std::string>& as_string_array() const;
  const std::vector<GgufValue>& as_array_of_arrays() const;
  const std::vector<uint64_t>& element_bits() const { return elems_; }  // number arrays

  bool operator==(const GgufValue& o) const = default;

 private:
  GgufType type_ = GgufType::U32;
  GgufType elem_ = GgufType::U8;
  uint64_t bits_ = 0;
  std::string str_;
  std::vector<uint64_t> elems_;       // arrays of numbers or bools, as bits
  std::vector<std::string> strs_;     // arrays of strings
  std::vector<GgufValue> arrays_;     // arrays of arrays
};

// Metadata in file order with lookup by key. `where` (the file) prefixes errors.
class GgufMetadata {
 public:
  explicit GgufMetadata(std::string where = "gguf") : where_(std::move(where)) {}

  void add(std::string key, GgufValue v);  // throws GgufError on a duplicate key
  void set(std::string key, GgufValue v);  // replaces in place, or appends
  bool erase(const std::string& key);

  bool contains(const std::string& key) const { return index_.count(key) > 0; }
  const GgufValue* find(const std::string& key) const;
  const GgufValue& at(const std::string& key) const;  // GgufError if missing

  // Typed getters: GgufError naming the file and key if missing or of another type.
  uint32_t get_u32(const std::string& key) const;     // exactly UINT32
  int64_t get_int(const std::string& key) const;      // any integer type
  double get_float(const std::string& key) const;     // FLOAT32 or FLOAT64
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<std::string>& get_string_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;
  std::vector<double> get_float_array(const std::string& key) const;

  const std::vector<std::pair<std::string, GgufValue>>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  const std::string& where() const { return where_; }

 private:
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;

  std::string where_;
  std::vector<std::pair<std::string, GgufValue>> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// ---------------------------------------------------------------- reading

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the row length
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;        // from the start of the data section
  int64_t n_elements = 0;
  uint64_t n_bytes = 0;

  std::vector<int64_t> shape() const { return {dims.rbegin(), dims.rend()}; }  // torch order
  int64_t n_rows() const { return dims.empty() ? 0 : n_elements / dims[0]; }
};

struct GgufHeader {
  uint32_t version = 3;
  GgufMetadata metadata;
  std::vector<GgufTensorInfo> tensors;  // in file order
  uint64_t alignment = 32;
  uint64_t data_start = 0;              // file offset of the data section
};

// Parses and validates a whole file image of `size` bytes: every count and length is
// checked against the bytes left before anything is allocated, sizes are computed
// without overflow, every tensor's bytes lie inside the file, aligned and apart from
// the others. `where` names the file in error messages. Throws GgufError.
GgufHeader parse_gguf(const uint8_t* bytes, size_t size, const std::string& where);

// A GGUF file mapped read-only (no copy); tensor data stays valid while it lives.
class GgufFile {
 public:
  explicit GgufFile(const std::string& path);  // regular files only
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  const GgufHeader& header() const { return header_; }
  const GgufMetadata& metadata() const { return header_.metadata; }
  const std::vector<GgufTensorInfo>& tensors() const { return header_.tensors; }

  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  const GgufTensorInfo& info(const std::string& name) const;  // GgufError if absent
  // The tensor's bytes as stored (n_bytes of them).
  std::span<const uint8_t> data(const GgufTensorInfo& t) const;
  std::span<const uint8_t> data(const std::string& name) const { return data(info(name)); }
  // The whole tensor as float32, row-major in torch order (shape()).
  std::vector<float> dequantize(const std::string& name) const;

 private:
  std::string path_;
  const uint8_t* bytes_ = nullptr;
  size_t size_ = 0;
  GgufHeader header_;
  std::unordered_map<std::string, size_t> index_;
};

// ---------------------------------------------------------------- writing

// Collects metadata and tensors, then writes a GGUF v3 file laid out as gguf-py's
// GGUFWriter does (same padding, tensors in the order added), so equal contents give
// byte-identical files. The alignment is `general.alignment` if set (a UINT32 power of
// two), else 32.
class GgufWriter {
 public:
  GgufMetadata& metadata() { return metadata_; }
  const GgufMetadata& metadata() const { return metadata_; }

  // Names are 1 to 63 bytes of UTF-8 (llama.cpp's limit) and unique; dims in ggml
  // order (1 to 4, each >= 1, dims[0] a multiple of the block size); `bytes` must be
  // exactly the size they imply. add_tensor takes the bytes; add_tensor_view keeps
  // only the span, which must stay valid until write(). GgufError otherwise.
  void add_tensor(std::string name, std::vector<int64_t> dims, GgmlType type, std::vector<uint8_t> bytes);
  void add_tensor_view(std::string name, std::vector<int64_t> dims, GgmlType type,
                       std::span<const uint8_t> bytes);
  size_t tensor_count() const { return tensors_.size(); }

  // Writes durably (temporary file, fsync, rename); throws GgufError naming the path.
  void write(const std::string& path) const;
  // The same file in memory (tests, the fuzzer).
  std::string to_bytes() const;

 private:
  struct Tensor {
    GgufTensorInfo info;
    std::vector<uint8_t> owned;
    std::span<const uint8_t> bytes;
  };
  void check_new(const std::string& name, const std::vector<int64_t>& dims, GgmlType type, size_t n) const;
  uint64_t alignment() const;
  std::string header_bytes() const;  // everything before the data section, padded

  GgufMetadata metadata_{"GgufWriter"};
  std::vector<std::unique_ptr<Tensor>> tensors_;  // stable addresses for owned bytes
};

}  // namespace peft
