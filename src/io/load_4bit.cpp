#include "io/load_4bit.h"

#include <ATen/ATen.h>

#include <regex>
#include <set>
#include <stdexcept>

#include "io/checkpoint_reader.h"
#include "peft/layers.h"
#include "quant/linear_4bit.h"

namespace peft {

namespace {

using quant::QuantType;

QuantType parse_quant_type(const std::string& name, const std::string& where) {
  if (name == "nf4") return QuantType::kNF4;
  if (name == "fp4") return QuantType::kFP4;
  throw std::runtime_error(where + ": unknown 4-bit quant type '" + name + "' (nf4 or fp4)");
}

at::ScalarType parse_compute_dtype(const std::string& name, const std::string& where) {
  if (name == "float32" || name == "fp32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16") return at::kHalf;
  throw std::runtime_error(where + ": unknown compute dtype '" + name + "' (float32, bfloat16 or float16)");
}

std::string dtype_name(at::ScalarType t) {
  return t == at::kBFloat16 ? "bfloat16" : t == at::kHalf ? "float16" : "float32";
}

// transformers' should_convert_module: a pattern names a module when, as a regex, it
// matches the name from its start up to a module boundary ("layer.1" names "layer.1.attn",
// not "layer.11"), or when the name ends with it.
bool named_in(const std::string& module, const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) {
    if (module.size() >= p.size() && module.compare(module.size() - p.size(), p.size(), p) == 0) return true;
    const std::regex re(p);  // checked by check_skip_modules
    for (size_t end = 0; end <= module.size(); ++end) {
      const bool boundary = end == module.size() || module[end] == '.' || (end > 0 && module[end - 1] == '.');
      if (boundary && std::regex_match(module.begin(), module.begin() + static_cast<std::ptrdiff_t>(end), re))
        return true;
    }
  }
  return false;
}

void check_skip_modules(const std::vector<std::string>& patterns, const std::string& where) {
  for (const auto& p : patterns) {
    if (p.empty() || p.size() > 1000) throw std::runtime_error(where + ": an empty or over-long module pattern");
    try {
      std::regex re(p);
    } catch (const std::regex_error&) {
      throw std::runtime_error(where + ": '" + p + "' is not a valid regular expression");
    }
  }
}

// transformers' get_keys_to_not_convert, by weight name: the output head, tied weights and
// the module of the last parameter stay full precision unless llm_int8_skip_modules is set.
std::set<std::string> default_full_precision(Model& model) {
  std::set<std::string> keep;
  for (const auto& t : model.tied_parameter_names()) keep.insert(t);
  const auto params = model.named_parameters();
  if (!params.empty()) keep.insert(params.back().first);
  if (AdaptableLayer* head = model.output_layer())
    for (auto& [name, m] : model.named_modules())
      if (m == head) keep.insert(name.empty() ? "weight" : name + ".weight");
  return keep;
}

}  // namespace

std::optional<Load4bit> plan_4bit(const nlohmann::json& config, const LoadOptions& opts, const std::string& where) {
  std::optional<Load4bit> plan = opts.load_in_4bit;
  const auto qc = config.find("quantization_config");
  if (qc != config.end() && !qc->is_null()) {
    const std::string ctx = where + ": quantization_config";
    if (!qc->is_object()) throw std::runtime_error(ctx + " is not an object");
    // Typed reads that name the key (never nlohmann's bare type_error).
    auto str = [&](const char* key, const char* def) {
      const auto it = qc->find(key);
      if (it == qc->end() || it->is_null()) return std::string(def);
      if (!it->is_string()) throw std::runtime_error(ctx + "." + key + ": expected a string, got " + it->dump());
      return it->get<std::string>();
    };
    auto flag = [&](const char* key) {
      const auto it = qc->find(key);
      if (it == qc->end() || it->is_null()) return false;
      if (!it->is_boolean()) throw std::runtime_error(ctx + "." + key + ": expected true or false, got " + it->dump());
      return it->get<bool>();
    };
    const std::string method = str("quant_method", "bitsandbytes");
    if (method != "bitsandbytes")
      throw std::runtime_error(ctx + ".quant_method: '" + method + "' is not supported (bitsandbytes 4-bit only)");
    if (flag("load_in_8bit"))
      throw std::runtime_error(ctx + ".load_in_8bit: 8-bit bitsandbytes checkpoints are not supported (4-bit only)");
    if (flag("load_in_4bit")) {
      Load4bit stored;
      stored.quant_type = str("bnb_4bit_quant_type", "fp4");
      parse_quant_type(stored.quant_type, ctx + ".bnb_4bit_quant_type");
      stored.double_quant = flag("bnb_4bit_use_double_quant");
      if (auto c = qc->find("bnb_4bit_compute_dtype"); c != qc->end() && c->is_string())
        stored.compute_dtype = parse_compute_dtype(c->get<std::string>(), ctx + ".bnb_4bit_compute_dtype");
      if (auto m = qc->find("llm_int8_skip_modules"); m != qc->end() && !m->is_null()) {
        if (!m->is_array()) throw std::runtime_error(ctx + ".llm_int8_skip_modules: expected a list of module names");
        for (const auto& p : *m) {
          if (!p.is_string())
            throw std::runtime_error(ctx + ".llm_int8_skip_modules: expected module names, got " + p.dump());
          stored.skip_modules.push_back(p.get<std::string>());
        }
      }
      if (plan && plan->compute_dtype) stored.compute_dtype = plan->compute_dtype;
      plan = stored;
    }
  }
  if (!plan) return plan;
  if (opts.compute_dtype_4bit) plan->compute_dtype = opts.compute_dtype_4bit;
  parse_quant_type(plan->quant_type, where);
  if (!quant::valid_blocksize(plan->blocksize))
    throw std::runtime_error(where + ": 4-bit blocksize " + std::to_string(plan->blocksize) +
                             " is not a power of two in 32..4096");
  if (!plan->compute_dtype) plan->compute_dtype = at::kFloat;
  check_skip_modules(plan->skip_modules, where + ": llm_int8_skip_modules");
  return plan;
}

std::map<std::string, Linear*> layers_to_quantize(Model& model, const Load4bit& plan) {
  // Tied weights always stay full precision: a 4-bit copy could not stay tied.
  std::set<std::string> keep;
  if (plan.skip_modules.empty()) keep = default_full_precision(model);
  for (const auto& t : model.tied_parameter_names()) keep.insert(t);
  std::map<std::string, Linear*> out;
  for (auto& [name, m] : model.named_modules()) {
    auto* linear = dynamic_cast<Linear*>(m);
    if (!linear || named_in(name, plan.skip_modules)) continue;
    const std::string weight = name.empty() ? "weight" : name + ".weight";
    if (keep.count(weight)) continue;
    out[weight] = linear;
  }
  return out;
}

bool is_quant_state_key(const std::string& key) {
  for (const char* s : {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"}) {
    const std::string suffix(s);
    if (key.size() > suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0) return true;
  }
  return key.find(".quant_state.bitsandbytes__") != std::string::npos;
}

void load_linear_4bit(const CheckpointReader& ck, const std::set<std::string>& keys, const std::string& key,
                      Linear& layer, const Load4bit& plan, std::optional<at::ScalarType> dtype) {
  const std::vector<int64_t> want{layer.out_features, layer.in_features};
  const bool stored = keys.count(key + ".quant_state.bitsandbytes__nf4") || keys.count(key + ".quant_state.bitsandbytes__fp4");
  quant::Quantized4bit q;
  if (stored) {
    const quant::TensorLookup get = [&](const std::string& k) { return keys.count(k) ? ck.get(k) : at::Tensor(); };
    try {
      q.state = quant::quant_state_from_tensors(get, key);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(ck.file_of(key) + ": " + e.what());  // the message names the key
    }
    if (q.state.shape != want)
      throw std::runtime_error(ck.file_of(key) + ": 4-bit tensor '" + key + "' has shape " +
                               c10::str(at::IntArrayRef(q.state.shape)) + " but the config implies " +
                               c10::str(at::IntArrayRef(want)));
    q.packed = ck.get(key);
  } else {
    const auto shape = ck.shape(key);
    if (shape != want)
      throw std::runtime_error(ck.file_of(key) + ": tensor '" + key + "' has shape " +
                               c10::str(at::IntArrayRef(shape)) + " but the config implies " +
                               c10::str(at::IntArrayRef(want)));
    at::Tensor dense = ck.get(key);
    if (dtype) dense = dense.to(*dtype);
    if (dense.scalar_type() != at::kFloat && dense.scalar_type() != at::kBFloat16 && dense.scalar_type() != at::kHalf)
      dense = dense.to(at::kFloat);
    q = quant::quantize_4bit(dense, parse_quant_type(plan.quant_type, ck.describe()), plan.blocksize, plan.double_quant);
  }
  layer.weight = q.packed;
  layer.weight_4bit = std::make_shared<const quant::Weight4bit>(std::move(q.state), plan.compute_dtype.value_or(at::kFloat));
}

std::map<std::string, Linear*> layers_4bit(Model& model) {
  std::map<std::string, Linear*> out;
  for (auto& [name, m] : model.named_modules())
    if (auto* linear = dynamic_cast<Linear*>(m); linear && linear->weight_4bit)
      out[name.empty() ? "weight" : name + ".weight"] = linear;
  return out;
}

int64_t dequantize_4bit_weights(Model& model, at::ScalarType dtype) {
  const auto layers = layers_4bit(model);
  for (auto& [name, linear] : layers) {
    linear->weight = linear->dense_weight().to(dtype);
    linear->weight_4bit.reset();
  }
  return static_cast<int64_t>(layers.size());
}

void append_4bit_tensors(Linear& layer, const std::string& key, NamedTensors& out) {
  out.emplace_back(key, layer.weight.contiguous());
  for (auto& [k, t] : quant::quant_state_to_tensors(layer.weight_4bit->state, key)) out.emplace_back(k, t);
}

nlohmann::json quantization_config(Model& model) {
  const auto four_bit = layers_4bit(model);
  if (four_bit.empty()) return nullptr;
  // The full-precision Linear layers, named as in the checkpoint; listed as
  // llm_int8_skip_modules unless they are exactly transformers' default choice.
  const auto defaults = default_full_precision(model);
  std::vector<std::string> dense;
  bool default_choice = true;
  for (auto& [name, m] : model.named_modules()) {
    const std::string weight = name.empty() ? "weight" : name + ".weight";
    if (!dynamic_cast<Linear*>(m) || four_bit.count(weight)) continue;
    default_choice = default_choice && defaults.count(weight);
    std::string key = model.checkpoint_key_for_name(weight);
    dense.push_back(key.substr(0, key.size() - std::string(".weight").size()));
  }
  const auto& w = *four_bit.begin()->second->weight_4bit;
  // The keys transformers' BitsAndBytesConfig.to_dict() writes for a 4-bit model.
  return {{"quant_method", "bitsandbytes"},
          {"load_in_4bit", true},
          {"load_in_8bit", false},
          {"_load_in_4bit", true},
          {"_load_in_8bit", false},
          {"bnb_4bit_quant_type", quant::quant_type_name(w.state.type)},
          {"bnb_4bit_use_double_quant", w.state.nested},
          {"bnb_4bit_compute_dtype", dtype_name(w.compute_dtype)},
          {"bnb_4bit_quant_storage", "uint8"},
          {"llm_int8_threshold", 6.0},
          {"llm_int8_skip_modules", default_choice ? nlohmann::json(nullptr) : nlohmann::json(dense)},
          {"llm_int8_enable_fp32_cpu_offload", false},
          {"llm_int8_has_fp16_weight", false}};
}

}  // namespace peft
