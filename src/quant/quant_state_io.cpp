// QuantState4bit <-> the safetensors entries bitsandbytes writes (QuantState.as_dict(
// packed=True)): four tensors and a uint8 tensor holding json.dumps of the rest.
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

#include "quant/quant_internal.h"

namespace peft::quant {

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value < 0 ? "-inf" : "inf";
  // Shortest round-trip digits, as Python's repr picks them; then Python's layout:
  // positional for -4 < decimal exponent <= 16 (with ".0" when integral), else d.ddde+XX.
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  std::string s(buf, res.ptr);
  std::string sign;
  if (s[0] == '-') sign = "-", s.erase(0, 1);
  const size_t e_pos = s.find('e');
  const int exp10 = std::stoi(s.substr(e_pos + 1));
  std::string digits = s.substr(0, e_pos);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  const int ndigits = static_cast<int>(digits.size());
  const int decpt = exp10 + 1;  // value = 0.DIGITS * 10^decpt
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) return sign + "0." + std::string(-decpt, '0') + digits;
    if (decpt >= ndigits) return sign + digits + std::string(decpt - ndigits, '0') + ".0";
    return sign + digits.substr(0, decpt) + "." + digits.substr(decpt);
  }
  std::string mant = digits.substr(0, 1) + (ndigits > 1 ? "." + digits.substr(1) : "");
  const int e = std::abs(exp10);
  return sign + mant + "e" + (exp10 < 0 ? "-" : "+") + (e < 10 ? "0" : "") + std::to_string(e);
}

namespace {

[[noreturn]] void fail(const std::string& key, const std::string& what) { throw std::runtime_error(key + ": " + what); }

// json.dumps' float: repr, with NaN / Infinity for the non-finite.
std::string json_float(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v < 0 ? "-Infinity" : "Infinity";
  return python_float_repr(v);
}

// json.dumps(dict) with bnb's key order and json's default ", " / ": " separators.
std::string pack_json(const QuantState4bit& s) {
  std::string shape = "[";
  for (size_t i = 0; i < s.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(s.shape[i]);
  shape += "]";
  std::string j = std::string("{\"quant_type\": \"") + quant_type_name(s.type) + "\", \"blocksize\": " +
                  std::to_string(s.blocksize) + ", \"dtype\": \"" + detail::dtype_name(s.dtype) +
                  "\", \"shape\": " + shape;
  if (s.nested) {
    j += ", \"nested_blocksize\": " + std::to_string(s.nested_blocksize) +
         ", \"nested_dtype\": \"float32\", \"nested_offset\": " + json_float(static_cast<double>(s.offset));
  }
  return j + "}";
}

at::Tensor bytes_tensor(const std::string& s) {
  at::Tensor t = at::empty({static_cast<int64_t>(s.size())}, at::kByte);
  std::copy(s.begin(), s.end(), t.data_ptr<uint8_t>());
  return t;
}

}  // namespace

std::map<std::string, at::Tensor> quant_state_to_tensors(const QuantState4bit& state, const std::string& weight_key) {
  validate(state, weight_key);
  std::map<std::string, at::Tensor> out;
  auto cpu = [](const at::Tensor& t) { return t.to(at::kCPU).contiguous(); };
  out[weight_key + ".absmax"] = cpu(state.absmax);
  out[weight_key + ".quant_map"] = cpu(state.code);
  if (state.nested) {
    out[weight_key + ".nested_absmax"] = cpu(state.nested_absmax);
    out[weight_key + ".nested_quant_map"] = cpu(state.nested_code);
  }
  out[weight_key + ".quant_state.bitsandbytes__" + quant_type_name(state.type)] = bytes_tensor(pack_json(state));
  return out;
}

namespace {

using nlohmann::json;

// The packed quant_state entry: exactly one of the two bnb key names.
std::pair<std::string, at::Tensor> find_packed(const TensorLookup& get, const std::string& wk, QuantType& key_type) {
  const std::string nf4 = wk + ".quant_state.bitsandbytes__nf4", fp4 = wk + ".quant_state.bitsandbytes__fp4";
  at::Tensor a = get(nf4), b = get(fp4);
  if (a.defined() && b.defined()) fail(nf4, "both " + nf4 + " and " + fp4 + " are present");
  if (!a.defined() && !b.defined()) fail(nf4, "missing (nor is there " + fp4 + ")");
  key_type = a.defined() ? QuantType::kNF4 : QuantType::kFP4;
  return a.defined() ? std::make_pair(nf4, a) : std::make_pair(fp4, b);
}

json parse_packed(const std::string& key, const at::Tensor& t) {
  if (t.scalar_type() != at::kByte || t.dim() != 1) fail(key, "expected a 1-d uint8 tensor of JSON bytes");
  const at::Tensor c = t.to(at::kCPU).contiguous();
  const std::string text(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), static_cast<size_t>(c.numel()));
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail(key, "not valid JSON");
  if (!j.is_object()) fail(key, "JSON is not an object");
  static const std::vector<std::string> known = {"quant_type", "blocksize",        "dtype",        "shape",
                                                 "nested_blocksize", "nested_dtype", "nested_offset"};
  for (const auto& item : j.items()) {
    if (std::find(known.begin(), known.end(), item.key()) == known.end()) fail(key, "unexpected field '" + item.key() + "'");
  }
  return j;
}

const json& field(const json& j, const std::string& key, const char* name) {
  if (!j.contains(name)) fail(key, std::string("missing field '") + name + "'");
  return j.at(name);
}

int64_t int_field(const json& j, const std::string& key, const char* name) {
  const json& v = field(j, key, name);
  if (!v.is_number_integer()) fail(key, std::string("field '") + name + "' is not an integer");
  return v.get<int64_t>();
}

std::string str_field(const json& j, const std::string& key, const char* name) {
  const json& v = field(j, key, name);
  if (!v.is_string()) fail(key, std::string("field '") + name + "' is not a string");
  return v.get<std::string>();
}

at::ScalarType parse_dtype(const std::string& key, const std::string& name) {
  if (name == "float32") return at::kFloat;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  fail(key, "dtype '" + name + "' is not float32, bfloat16 or float16");
}

std::vector<int64_t> parse_shape(const json& j, const std::string& key) {
  const json& v = field(j, key, "shape");
  if (!v.is_array()) fail(key, "field 'shape' is not a list");
  std::vector<int64_t> shape;
  for (const json& d : v) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) fail(key, "field 'shape' holds a non-dimension");
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

// nested_* JSON fields and tensors come all together or not at all.
void read_nested(const TensorLookup& get, const std::string& wk, const std::string& key, const json& j,
                 QuantState4bit& s) {
  s.nested_absmax = get(wk + ".nested_absmax");
  s.nested_code = get(wk + ".nested_quant_map");
  const bool any = s.nested_absmax.defined() || s.nested_code.defined() || j.contains("nested_blocksize") ||
                   j.contains("nested_dtype") || j.contains("nested_offset");
  if (!any) return;
  s.nested = true;
  if (!s.nested_absmax.defined()) fail(wk + ".nested_absmax", "missing (the quant state is double-quantized)");
  if (!s.nested_code.defined()) fail(wk + ".nested_quant_map", "missing (the quant state is double-quantized)");
  s.nested_blocksize = int_field(j, key, "nested_blocksize");
  if (str_field(j, key, "nested_dtype") != "float32") fail(key, "nested_dtype is not float32");
  const json& off = field(j, key, "nested_offset");
  if (!off.is_number()) fail(key, "field 'nested_offset' is not a number");
  s.offset = static_cast<float>(off.get<double>());  // bnb: torch.tensor(float(...)), fp32
}

}  // namespace

QuantState4bit quant_state_from_tensors(const TensorLookup& get, const std::string& wk) {
  QuantType key_type;
  const auto [key, packed] = find_packed(get, wk, key_type);
  const json j = parse_packed(key, packed);
  QuantState4bit s;
  const std::string type = str_field(j, key, "quant_type");
  if (type != "nf4" && type != "fp4") fail(key, "unknown quant type '" + type + "' (expected nf4 or fp4)");
  s.type = type == "nf4" ? QuantType::kNF4 : QuantType::kFP4;
  if (s.type != key_type) fail(key, "quant_type '" + type + "' does not match the key's suffix");
  s.blocksize = int_field(j, key, "blocksize");
  s.dtype = parse_dtype(key, str_field(j, key, "dtype"));
  s.shape = parse_shape(j, key);
  s.absmax = get(wk + ".absmax");
  s.code = get(wk + ".quant_map");
  read_nested(get, wk, key, j, s);
  validate(s, wk);
  if (at::Tensor weight = get(wk); weight.defined()) check_packed(weight, s, wk);
  return s;
}

QuantState4bit quant_state_from_tensors(const std::map<std::string, at::Tensor>& tensors, const std::string& wk) {
  return quant_state_from_tensors(
      [&](const std::string& k) {
        auto it = tensors.find(k);
        return it == tensors.end() ? at::Tensor() : it->second;
      },
      wk);
}

}  // namespace peft::quant
