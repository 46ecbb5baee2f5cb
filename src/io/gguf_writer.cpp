// Writing GGUF v3, laid out byte for byte as gguf-py's GGUFWriter lays it out.
#include <algorithm>
#include <cstring>
#include <limits>

#include "io/gguf_internal.h"
#include "peft/gguf.h"
#include "util/atomic_file.h"

namespace peft {
namespace {

constexpr uint32_t kVersion = 3;
constexpr size_t kMaxNameBytes = 63;  // ggml's GGML_MAX_NAME (64) counts the NUL

uint64_t pad_to(uint64_t n, uint64_t align) { return (n + align - 1) / align * align; }

void put_uint(std::string& out, uint64_t v, int width) {
  for (int i = 0; i < width; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_string(std::string& out, const std::string& s) {
  put_uint(out, s.size(), 8);
  out += s;
}

// An array's body: element type, count, elements (an inner array has no type tag of
// its own: the outer element type says ARRAY).
void put_array(std::string& out, const GgufValue& v) {
  put_uint(out, static_cast<uint32_t>(v.elem_type()), 4);
  put_uint(out, v.size(), 8);
  if (v.elem_type() == GgufType::STRING) {
    for (const auto& s : v.as_string_array()) put_string(out, s);
  } else if (v.elem_type() == GgufType::ARRAY) {
    for (const auto& item : v.as_array_of_arrays()) put_array(out, item);
  } else {
    for (uint64_t b : v.element_bits()) put_uint(out, b, gguf_type_width(v.elem_type()));
  }
}

void put_value(std::string& out, const GgufValue& v) {
  put_uint(out, static_cast<uint32_t>(v.type()), 4);
  if (v.type() == GgufType::STRING) put_string(out, v.as_string());
  else if (v.is_array()) put_array(out, v);
  else put_uint(out, v.bits(), gguf_type_width(v.type()));
}

}  // namespace

void GgufWriter::check_new(const std::string& name, const std::vector<int64_t>& dims, GgmlType type,
                           size_t n) const {
  const std::string ctx = "GgufWriter: tensor '" + name + "': ";
  if (name.empty() || name.size() > kMaxNameBytes || !gguf_valid_utf8(name))
    throw GgufError(ctx + "names must be 1 to " + std::to_string(kMaxNameBytes) +
                    " bytes of UTF-8 (llama.cpp's limit)");
  for (const auto& t : tensors_)
    if (t->info.name == name) throw GgufError(ctx + "added twice");
  if (!ggml_type_known(static_cast<uint32_t>(type))) throw GgufError(ctx + "unknown ggml type");
  if (dims.empty() || dims.size() > 4) throw GgufError(ctx + "needs 1 to 4 dims, got " + std::to_string(dims.size()));
  uint64_t numel = 1;
  for (int64_t d : dims) {
    if (d < 1) throw GgufError(ctx + "dims must be >= 1");
    if (numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / static_cast<uint64_t>(d))
      throw GgufError(ctx + "element count overflows");
    numel *= static_cast<uint64_t>(d);
  }
  if (dims[0] % type_block_size(type) != 0)
    throw GgufError(ctx + "row length " + std::to_string(dims[0]) + " is not a multiple of the " +
                    ggml_type_name(type) + " block size " + std::to_string(type_block_size(type)));
  const uint64_t want = numel / type_block_size(type) * type_block_bytes(type);
  if (n != want)
    throw GgufError(ctx + std::to_string(n) + " bytes given, " + ggml_type_name(type) + " dims need " +
                    std::to_string(want));
}

void GgufWriter::add_tensor(std::string name, std::vector<int64_t> dims, GgmlType type, std::vector<uint8_t> bytes) {
  check_new(name, dims, type, bytes.size());
  auto t = std::make_unique<Tensor>();
  t->owned = std::move(bytes);
  t->bytes = t->owned;
  t->info.name = std::move(name);
  t->info.dims = std::move(dims);
  t->info.type = type;
  tensors_.push_back(std::move(t));
}

void GgufWriter::add_tensor_view(std::string name, std::vector<int64_t> dims, GgmlType type,
                                 std::span<const uint8_t> bytes) {
  check_new(name, dims, type, bytes.size());
  auto t = std::make_unique<Tensor>();
  t->bytes = bytes;
  t->info.name = std::move(name);
  t->info.dims = std::move(dims);
  t->info.type = type;
  tensors_.push_back(std::move(t));
}

uint64_t GgufWriter::alignment() const {
  const GgufValue* a = metadata_.find("general.alignment");
  if (!a) return 32;
  if (a->type() != GgufType::U32 || a->bits() == 0 || (a->bits() & (a->bits() - 1)) != 0)
    throw GgufError("GgufWriter: general.alignment must be a UINT32 power of two");
  return a->bits();
}

std::string GgufWriter::header_bytes() const {
  std::string out = "GGUF";
  put_uint(out, kVersion, 4);
  put_uint(out, tensors_.size(), 8);
  put_uint(out, metadata_.size(), 8);
  for (const auto& [key, value] : metadata_.entries()) {
    if (!gguf_valid_utf8(key)) throw GgufError("GgufWriter: metadata key '" + key + "' is not valid UTF-8");
    put_string(out, key);
    put_value(out, value);
  }
  const uint64_t align = alignment();
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    put_string(out, t->info.name);
    put_uint(out, t->info.dims.size(), 4);
    for (int64_t d : t->info.dims) put_uint(out, static_cast<uint64_t>(d), 8);
    put_uint(out, static_cast<uint32_t>(t->info.type), 4);
    put_uint(out, offset, 8);
    offset += pad_to(t->bytes.size(), align);
  }
  out.resize(pad_to(out.size(), align), '\0');
  return out;
}

std::string GgufWriter::to_bytes() const {
  std::string out = header_bytes();
  const uint64_t align = alignment();
  for (const auto& t : tensors_) {
    out.append(reinterpret_cast<const char*>(t->bytes.data()), t->bytes.size());
    out.resize(out.size() + (pad_to(t->bytes.size(), align) - t->bytes.size()), '\0');
  }
  return out;
}

void GgufWriter::write(const std::string& path) const {
  const std::string header = header_bytes();
  const uint64_t align = alignment();
  static const char kZeros[4096] = {};
  try {
    AtomicFile f(path);
    f.write(header);
    for (const auto& t : tensors_) {
      f.write(t->bytes.data(), t->bytes.size());
      for (uint64_t pad = pad_to(t->bytes.size(), align) - t->bytes.size(); pad > 0;) {
        const uint64_t n = std::min<uint64_t>(pad, sizeof kZeros);
        f.write(kZeros, n);
        pad -= n;
      }
    }
    f.commit();
  } catch (const GgufError&) {
    throw;
  } catch (const std::runtime_error& e) {
    throw GgufError(e.what());  // AtomicFile's message already names the path
  }
}

}  // namespace peft
