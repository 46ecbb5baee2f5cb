// What both GGUF exporters need: safetensors through mmap, the converters' tensor types,
// and the name and size label gguf-py's Metadata derives.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "io/gguf_export_internal.h"

namespace fs = std::filesystem;

namespace peft {

const char* gguf_export_type_name(GgufExportType t) {
  switch (t) {
    case GgufExportType::F32: return "f32";
    case GgufExportType::F16: return "f16";
    case GgufExportType::BF16: return "bf16";
    case GgufExportType::Q8_0: return "q8_0";
  }
  return "?";
}

bool gguf_export_type_from_name(const std::string& name, GgufExportType* out) {
  for (auto t : {GgufExportType::F32, GgufExportType::F16, GgufExportType::BF16, GgufExportType::Q8_0})
    if (name == gguf_export_type_name(t)) {
      *out = t;
      return true;
    }
  return false;
}

namespace gguf_export {

void fail(const std::string& where, const std::string& what) { throw GgufError(where + ": " + what); }

Json read_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open: " + std::string(std::strerror(errno)));
  try {
    return Json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(path, std::string("not valid JSON: ") + e.what());
  }
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------- safetensors

StFile::StFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 8) {
    ::close(fd);
    fail(path, "not a safetensors file (too short or not a regular file)");
  }
  size_ = static_cast<size_t>(st.st_size);
  void* addr = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);
  if (addr == MAP_FAILED) fail(path, std::string("mmap failed: ") + std::strerror(err));
  bytes_ = static_cast<const uint8_t*>(addr);
  try {
    header_ = parse_safetensors_header(bytes_, size_, path);
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(bytes_), size_);
    throw;
  }
}

StFile::~StFile() { ::munmap(const_cast<uint8_t*>(bytes_), size_); }

std::vector<float> StFile::to_float(const StTensorInfo& t) const {
  const int64_t n = numel(t.shape);
  const uint8_t* p = bytes_ + header_.data_start + t.begin;
  std::vector<float> out(static_cast<size_t>(n));
  switch (t.dtype) {
    case StDType::F32: std::memcpy(out.data(), p, out.size() * 4); break;
    case StDType::F16: dequantize(GgmlType::F16, p, n, out.data()); break;   // exact widening
    case StDType::BF16: dequantize(GgmlType::BF16, p, n, out.data()); break;
    default:
      fail(path_, "tensor '" + t.name + "' is " + dtype_name(t.dtype) + "; only F32, F16 and BF16 can be exported");
  }
  return out;
}

// ---------------------------------------------------------------- tensor types

GgmlType matrix_type(GgufExportType t, int64_t row_len, bool* fell_back) {
  *fell_back = false;
  switch (t) {
    case GgufExportType::F32: return GgmlType::F32;
    case GgufExportType::F16: return GgmlType::F16;
    case GgufExportType::BF16: return GgmlType::BF16;
    case GgufExportType::Q8_0:
      if (row_len % type_block_size(GgmlType::Q8_0) == 0) return GgmlType::Q8_0;
      *fell_back = true;  // gguf-py raises QuantError; prepare_tensors falls back to F16
      return GgmlType::F16;
  }
  return GgmlType::F32;
}

uint32_t file_type(GgufExportType t) {
  switch (t) {
    case GgufExportType::F32: return 0;
    case GgufExportType::F16: return 1;
    case GgufExportType::BF16: return 32;
    case GgufExportType::Q8_0: return 7;
  }
  return 0;
}

void add_float_tensor(GgufWriter& w, const std::string& name, const std::vector<int64_t>& shape, GgmlType type,
                      const std::vector<float>& data) {
  const int64_t row_len = shape.back();
  const int64_t rows = static_cast<int64_t>(data.size()) / row_len;
  std::vector<uint8_t> bytes(row_bytes(type, row_len) * static_cast<size_t>(rows));
  quantize(type, data.data(), static_cast<int64_t>(data.size()), bytes.data());
  w.add_tensor(name, {shape.rbegin(), shape.rend()}, type, std::move(bytes));
}

// ---------------------------------------------------------------- general.name, size_label

namespace {

bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Python's str.islower(): some cased character and none upper case.
bool all_lower(const std::string& w) {
  bool cased = false;
  for (char c : w) {
    if (is_upper(c)) return false;
    cased |= is_lower(c);
  }
  return cased;
}

// `^(v\d+(?:\.\d+)*|\d.*)$`: a version or anything starting with a digit.
bool version_like(const std::string& w) {
  if (!w.empty() && is_digit(w[0])) return true;
  if (w.size() < 2 || w[0] != 'v') return false;
  bool digit_run = false;
  for (size_t i = 1; i < w.size(); ++i) {
    if (is_digit(w[i])) digit_run = true;
    else if (w[i] == '.' && digit_run) digit_run = false;
    else return false;
  }
  return digit_run;
}

// Python's str.title(): a letter after a non-letter is upper case, others lower case.
std::string title(const std::string& w) {
  std::string out = w;
  bool prev_cased = false;
  for (char& c : out) {
    const bool cased = is_upper(c) || is_lower(c);
    if (cased) c = static_cast<char>(prev_cased ? std::tolower(c) : std::toupper(c));
    prev_cased = cased;
  }
  return out;
}

}  // namespace

std::string folder_title(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(dir), ec);
  if (ec) p = fs::absolute(dir).lexically_normal();
  std::string id = p.filename().string();
  if (id.empty()) id = p.parent_path().filename().string();
  if (id.find(' ') != std::string::npos) return id;  // "a human sentence": kept as is
  std::string out, word;
  auto flush = [&] {
    if (word.empty()) return;
    if (!out.empty()) out += ' ';
    out += all_lower(word) && !version_like(word) ? title(word) : word;
    word.clear();
  };
  for (char c : id) {
    if (c == '-' || std::isspace(static_cast<unsigned char>(c))) flush();
    else word += c;
  }
  flush();
  return out;
}

std::string size_label(uint64_t n) {
  const double x = static_cast<double>(n);
  double scaled;
  char suffix;
  if (x > 1e12) scaled = x * 1e-12, suffix = 'T';
  else if (x > 1e9) scaled = x * 1e-9, suffix = 'B';
  else if (x > 1e6) scaled = x * 1e-6, suffix = 'M';
  else scaled = x * 1e-3, suffix = 'K';
  // fix = max(2 - len(str(round(scaled)).lstrip('0')), 0); Python rounds half to even.
  std::string digits = std::to_string(static_cast<long long>(std::nearbyint(scaled)));
  digits.erase(0, digits.find_first_not_of('0') == std::string::npos ? digits.size() : digits.find_first_not_of('0'));
  const int fix = std::max(2 - static_cast<int>(digits.size()), 0);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f%c", fix, scaled, suffix);
  return buf;
}

}  // namespace gguf_export
}  // namespace peft
