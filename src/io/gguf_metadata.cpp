// GGUF metadata values and the ordered key -> value map.
#include <cstring>
#include <limits>

#include "io/gguf_internal.h"
#include "peft/gguf.h"

namespace peft {

int gguf_type_width(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::BOOL: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    case GgufType::STRING: case GgufType::ARRAY: return 0;
  }
  return 0;
}

namespace {

int width(GgufType t) { return gguf_type_width(t); }

bool is_signed(GgufType t) {
  return t == GgufType::I8 || t == GgufType::I16 || t == GgufType::I32 || t == GgufType::I64;
}

bool is_integer_type(GgufType t) {
  return width(t) > 0 && t != GgufType::BOOL && t != GgufType::F32 && t != GgufType::F64;
}

uint64_t mask(GgufType t, uint64_t bits) {
  const int w = width(t);
  return w == 8 ? bits : bits & ((uint64_t{1} << (8 * w)) - 1);
}

[[noreturn]] void wrong(const char* want, const std::string& got) {
  throw std::invalid_argument(std::string("expected ") + want + ", found " + got);
}

[[noreturn]] void wrong(const char* want, GgufType got) { wrong(want, gguf_type_name(got)); }

// "UINT32", or "ARRAY of STRING" for an array.
std::string kind(GgufType type, GgufType elem) {
  if (type != GgufType::ARRAY) return gguf_type_name(type);
  return std::string("ARRAY of ") + gguf_type_name(elem);
}

// The value of integer `bits` of type t, sign-extended for signed types.
int64_t to_int(GgufType t, uint64_t bits) {
  if (!is_integer_type(t)) wrong("an integer", t);
  if (!is_signed(t)) {
    if (bits > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw std::invalid_argument("UINT64 value " + std::to_string(bits) + " does not fit in int64");
    return static_cast<int64_t>(bits);
  }
  const int shift = 64 - 8 * width(t);
  return static_cast<int64_t>(bits << shift) >> shift;
}

double to_float(GgufType t, uint64_t bits) {
  if (t == GgufType::F32) {
    const uint32_t b = static_cast<uint32_t>(bits);
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
  if (t == GgufType::F64) {
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  }
  wrong("FLOAT32 or FLOAT64", t);
}

uint64_t float_bits(GgufType t, double v) {
  if (t == GgufType::F32) {
    const float f = static_cast<float>(v);
    uint32_t b;
    std::memcpy(&b, &f, 4);
    return b;
  }
  if (t != GgufType::F64) wrong("FLOAT32 or FLOAT64", t);
  uint64_t b;
  std::memcpy(&b, &v, 8);
  return b;
}

// Reads `key` with `read`, turning a wrong-type error into a GgufError naming the file.
template <class Read>
decltype(auto) typed(const GgufMetadata& m, const std::string& key, Read read) {
  try {
    return read(m.at(key));
  } catch (const std::invalid_argument& e) {
    throw GgufError(m.where() + ": metadata key '" + key + "': " + e.what());
  }
}

}  // namespace

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "UINT8";
    case GgufType::I8: return "INT8";
    case GgufType::U16: return "UINT16";
    case GgufType::I16: return "INT16";
    case GgufType::U32: return "UINT32";
    case GgufType::I32: return "INT32";
    case GgufType::F32: return "FLOAT32";
    case GgufType::BOOL: return "BOOL";
    case GgufType::STRING: return "STRING";
    case GgufType::ARRAY: return "ARRAY";
    case GgufType::U64: return "UINT64";
    case GgufType::I64: return "INT64";
    case GgufType::F64: return "FLOAT64";
  }
  return "?";
}

// ---------------------------------------------------------------- GgufValue

GgufValue GgufValue::number(GgufType t, uint64_t bits) {
  if (width(t) == 0) throw std::invalid_argument(std::string(gguf_type_name(t)) + " is not a number type");
  GgufValue v;
  v.type_ = t;
  v.bits_ = mask(t, bits);
  return v;
}

GgufValue GgufValue::f32(float v) { return number(GgufType::F32, float_bits(GgufType::F32, v)); }
GgufValue GgufValue::f64(double v) { return number(GgufType::F64, float_bits(GgufType::F64, v)); }

GgufValue GgufValue::string(std::string s) {
  GgufValue v;
  v.type_ = GgufType::STRING;
  v.str_ = std::move(s);
  return v;
}

GgufValue GgufValue::int_array(GgufType elem, const std::vector<int64_t>& values) {
  if (!is_integer_type(elem)) wrong("an integer element type", elem);
  GgufValue v;
  v.type_ = GgufType::ARRAY;
  v.elem_ = elem;
  v.elems_.reserve(values.size());
  for (int64_t x : values) v.elems_.push_back(mask(elem, static_cast<uint64_t>(x)));
  return v;
}

GgufValue GgufValue::number_array(GgufType elem, std::vector<uint64_t> bits) {
  if (width(elem) == 0) wrong("a number element type", elem);
  for (uint64_t& b : bits) b = mask(elem, b);
  GgufValue v;
  v.type_ = GgufType::ARRAY;
  v.elem_ = elem;
  v.elems_ = std::move(bits);
  return v;
}

GgufValue GgufValue::float_array(GgufType elem, const std::vector<double>& values) {
  GgufValue v;
  v.type_ = GgufType::ARRAY;
  v.elem_ = elem;
  v.elems_.reserve(values.size());
  for (double x : values) v.elems_.push_back(float_bits(elem, x));
  return v;
}

GgufValue GgufValue::bool_array(const std::vector<bool>& values) {
  GgufValue v;
  v.type_ = GgufType::ARRAY;
  v.elem_ = GgufType::BOOL;
  for (bool b : values) v.elems_.push_back(b ? 1 : 0);
  return v;
}

GgufValue GgufValue::string_array(std::vector<std::string> values) {
  GgufValue v;
  v.type_ = GgufType::ARRAY;
  v.elem_ = GgufType::STRING;
  v.strs_ = std::move(values);
  return v;
}

GgufValue GgufValue::array_of_arrays(std::vector<GgufValue> items) {
  for (const auto& item : items)
    if (!item.is_array()) wrong("ARRAY items", item.type());
  GgufValue v;
  v.type_ = GgufType::ARRAY;
  v.elem_ = GgufType::ARRAY;
  v.arrays_ = std::move(items);
  return v;
}

bool GgufValue::is_integer() const { return is_integer_type(type_); }

size_t GgufValue::size() const {
  if (!is_array()) return 0;
  if (elem_ == GgufType::STRING) return strs_.size();
  if (elem_ == GgufType::ARRAY) return arrays_.size();
  return elems_.size();
}

int64_t GgufValue::as_int() const { return to_int(type_, bits_); }

uint64_t GgufValue::as_uint() const {
  if (!is_integer()) wrong("an integer", type_);
  if (type_ == GgufType::U64) return bits_;
  const int64_t v = to_int(type_, bits_);
  if (v < 0) throw std::invalid_argument("negative value " + std::to_string(v));
  return static_cast<uint64_t>(v);
}

double GgufValue::as_float() const { return to_float(type_, bits_); }

bool GgufValue::as_bool() const {
  if (type_ != GgufType::BOOL) wrong("BOOL", type_);
  return bits_ != 0;
}

const std::string& GgufValue::as_string() const {
  if (type_ != GgufType::STRING) wrong("STRING", type_);
  return str_;
}

std::vector<int64_t> GgufValue::as_int_array() const {
  if (!is_array() || !is_integer_type(elem_)) wrong("an integer ARRAY", kind(type_, elem_));
  std::vector<int64_t> out;
  out.reserve(elems_.size());
  for (uint64_t b : elems_) out.push_back(to_int(elem_, b));
  return out;
}

std::vector<double> GgufValue::as_float_array() const {
  if (!is_array() || (elem_ != GgufType::F32 && elem_ != GgufType::F64))
    wrong("a FLOAT32 or FLOAT64 ARRAY", kind(type_, elem_));
  std::vector<double> out;
  out.reserve(elems_.size());
  for (uint64_t b : elems_) out.push_back(to_float(elem_, b));
  return out;
}

std::vector<bool> GgufValue::as_bool_array() const {
  if (!is_array() || elem_ != GgufType::BOOL) wrong("a BOOL ARRAY", kind(type_, elem_));
  std::vector<bool> out;
  for (uint64_t b : elems_) out.push_back(b != 0);
  return out;
}

const std::vector<std::string>& GgufValue::as_string_array() const {
  if (!is_array() || elem_ != GgufType::STRING) wrong("a STRING ARRAY", kind(type_, elem_));
  return strs_;
}

const std::vector<GgufValue>& GgufValue::as_array_of_arrays() const {
  if (!is_array() || elem_ != GgufType::ARRAY) wrong("an ARRAY of ARRAYs", kind(type_, elem_));
  return arrays_;
}

// ---------------------------------------------------------------- GgufMetadata

void GgufMetadata::fail(const std::string& key, const std::string& what) const {
  throw GgufError(where_ + ": metadata key '" + key + "': " + what);
}

void GgufMetadata::add(std::string key, GgufValue v) {
  if (index_.count(key)) fail(key, "appears twice");
  index_.emplace(key, entries_.size());
  entries_.emplace_back(std::move(key), std::move(v));
}

void GgufMetadata::set(std::string key, GgufValue v) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    entries_[it->second].second = std::move(v);
    return;
  }
  add(std::move(key), std::move(v));
}

bool GgufMetadata::erase(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  entries_.erase(entries_.begin() + static_cast<ptrdiff_t>(it->second));
  index_.clear();
  for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].first, i);
  return true;
}

const GgufValue* GgufMetadata::find(const std::string& key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &entries_[it->second].second;
}

const GgufValue& GgufMetadata::at(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(key, "missing");
  return *v;
}

uint32_t GgufMetadata::get_u32(const std::string& key) const {
  const GgufValue& v = at(key);
  if (v.type() != GgufType::U32) fail(key, std::string("expected UINT32, found ") + gguf_type_name(v.type()));
  return static_cast<uint32_t>(v.bits());
}

int64_t GgufMetadata::get_int(const std::string& key) const {
  return typed(*this, key, [](const GgufValue& v) { return v.as_int(); });
}

double GgufMetadata::get_float(const std::string& key) const {
  return typed(*this, key, [](const GgufValue& v) { return v.as_float(); });
}

bool GgufMetadata::get_bool(const std::string& key) const {
  return typed(*this, key, [](const GgufValue& v) { return v.as_bool(); });
}

const std::string& GgufMetadata::get_string(const std::string& key) const {
  return typed(*this, key, [](const GgufValue& v) -> const std::string& { return v.as_string(); });
}

const std::vector<std::string>& GgufMetadata::get_string_array(const std::string& key) const {
  return typed(*this, key,
               [](const GgufValue& v) -> const std::vector<std::string>& { return v.as_string_array(); });
}

std::vector<int64_t> GgufMetadata::get_int_array(const std::string& key) const {
  return typed(*this, key, [](const GgufValue& v) { return v.as_int_array(); });
}

std::vector<double> GgufMetadata::get_float_array(const std::string& key) const {
  return typed(*this, key, [](const GgufValue& v) { return v.as_float_array(); });
}

}  // namespace peft
