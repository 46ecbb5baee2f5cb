// Where VB-LoRA goes and what it shares (HF PEFT's VBLoRAModel): the targets, one bank per
// adapter drawn before its first layer, one VBLoRALayer each; and the adapter file's form
// (_get_adapter_state_dict / _remap_adapter_state_dict_for_load).
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <map>
#include <stdexcept>

#include "peft/layers.h"
#include "peft/vblora.h"
#include "tuners/config_fields.h"
#include "tuners/file_tensors.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

namespace {

const std::string kBankKey = "base_model.vblora_vector_bank";
const std::string kLayerBank = ".vblora_vector_bank";
const std::string kIndices = "_topk_indices";
const std::string kWeights = "_topk_weights";

// TRANSFORMERS_MODELS_TO_VBLORA_TARGET_MODULES_MAPPING: LoRA's table with more modules for
// encoder-decoders and without the types HF gives VB-LoRA no default for.
DefaultTargets vblora_default_targets() {
  auto table = lora_default_targets({
      {"t5", {"q", "k", "v", "o", "wi", "wo"}},
      {"mt5", {"q", "k", "v", "o", "wi_0", "wi_1", "wo"}},
      {"bart", {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}},
      {"opt", {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"}},
      {"deberta-v2", {"query_proj", "key_proj", "value_proj", "dense"}},
  });
  static const std::set<std::string> kNone = {"blip-2", "xlm-roberta", "electra", "layoutlm", "chatglm", "mpt",
                                              "RefinedWebModel", "RefinedWeb", "falcon", "btlm", "codegen",
                                              "mistral", "mixtral", "stablelm", "phi", "rwkv", "rwkv7"};
  std::erase_if(table, [](const auto& e) { return kNone.count(e.first) > 0; });
  return table;
}

bool ends_with(const std::string& s, const std::string& tail) { return s.size() >= tail.size() && s.ends_with(tail); }

}  // namespace

at::ScalarType vblora_index_dtype(int64_t num_vectors) {
  if (num_vectors < (int64_t{1} << 8)) return at::kByte;
  if (num_vectors < (int64_t{1} << 15)) return at::kShort;
  if (num_vectors < (int64_t{1} << 31)) return at::kInt;
  return at::kLong;
}

void VBLoRAConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "VBLORA", vblora_default_targets());
}

NamedModules VBLoRAConfig::layer_targets(Model& model) const {
  bank_ = std::make_shared<VBLoRABank>();  // drawn by the first make_layer_adapter
  return find_targets(model, targets, task_type);
}

std::shared_ptr<LayerAdapter> VBLoRAConfig::make_layer_adapter(const std::string& path, Module& m,
                                                              at::Generator& gen) const {
  auto* host = &linear_host("VBLORA", path, m, LinearHost::kLinearOrConv1D);
  if (!bank_) throw std::logic_error("VBLORA: no vector bank for '" + path + "' (layer_targets makes it)");
  for (const auto& [what, n] : {std::pair{"in_features", host->input_dim()}, {"out_features", host->output_dim()}})
    if (n % vector_length != 0)
      throw std::invalid_argument("VBLORA: '" + path + "' has " + what + " " + std::to_string(n) +
                                  ", not divisible by vector_length " + std::to_string(vector_length));
  if (!bank_->vectors.defined())
    bank_->vectors = at::empty({num_vectors, vector_length}, at::TensorOptions(at::kFloat))
                         .uniform_(-init_vector_bank_bound, init_vector_bank_bound, gen);
  auto a = std::make_shared<VBLoRALayer>(host, bank_, r, num_vectors, vector_length, topk, vblora_dropout);
  a->logits_A.normal_(0.0, init_logits_std, gen);
  a->logits_B.normal_(0.0, init_logits_std, gen);
  a->to(host->weight_tensor()->device());
  return a;
}

std::vector<std::string> VBLoRAConfig::trained_base_parameters(Model& model, const std::set<std::string>& adapted) const {
  return bias_parameters(model, bias, ".vblora_", adapted);
}

void VBLoRAConfig::to_file_tensors(std::vector<std::pair<std::string, at::Tensor>>& tensors) const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  at::Tensor bank;
  for (auto& [key, t] : tensors) {
    if (ends_with(key, kLayerBank)) {  // every layer's view of the one bank
      if (!bank.defined()) bank = t;
      continue;
    }
    const bool logits = ends_with(key, ".vblora_logits_A") || ends_with(key, ".vblora_logits_B");
    if (!logits || !save_only_topk_weights) {
      out.emplace_back(key, t);
      continue;
    }
    // The logits as their top-k indices and the first k-1 softmax weights (the last is
    // one minus their sum).
    auto [top, index] = t.detach().topk(topk);
    out.emplace_back(key + kIndices, index.to(vblora_index_dtype(num_vectors)));
    out.emplace_back(key + kWeights, at::softmax(top, -1).narrow(-1, 0, topk - 1).contiguous());
  }
  if (bank.defined()) out.emplace_back(kBankKey, bank);
  tensors = std::move(out);
}

void VBLoRAConfig::from_file_tensors(std::vector<std::pair<std::string, at::Tensor>>& tensors) const {
  std::map<std::string, at::Tensor> by_key(tensors.begin(), tensors.end());
  std::vector<std::pair<std::string, at::Tensor>> out;
  at::Tensor bank;
  if (auto it = by_key.find(kBankKey); it != by_key.end()) bank = it->second;
  std::set<std::string> layers;  // paths (with prefix) of the layers the file has logits for
  for (auto& [key, t] : tensors) {
    if (key == kBankKey || ends_with(key, kWeights)) continue;
    if (!ends_with(key, kIndices)) {
      if (ends_with(key, ".vblora_logits_A")) layers.insert(key.substr(0, key.rfind('.')));
      out.emplace_back(key, t);
      continue;
    }
    // save_only_topk_weights: logits that are log(weight) at the saved indices, -inf elsewhere.
    const std::string logits_key = key.substr(0, key.size() - kIndices.size());
    auto w = by_key.find(logits_key + kWeights);
    if (w == by_key.end()) throw std::runtime_error("'" + key + "' has no '" + logits_key + kWeights + "' beside it");
    const auto index = t.to(at::kLong);
    if (index.sizes().vec() != [&] { auto s = w->second.sizes().vec(); s.back() += 1; return s; }())
      throw std::runtime_error("'" + key + "' has shape " + c10::str(index.sizes()) + " but '" + logits_key + kWeights +
                               "' has " + c10::str(w->second.sizes()));
    if (index.numel() > 0 && (index.min().item<int64_t>() < 0 || index.max().item<int64_t>() >= num_vectors))
      throw std::runtime_error("'" + key + "' indexes outside the bank's " + std::to_string(num_vectors) + " vectors");
    const auto weights = at::cat({w->second, 1 - w->second.sum(-1, /*keepdim=*/true)}, -1);
    auto shape = index.sizes().vec();
    shape.back() = num_vectors;
    auto logits = at::full(shape, -std::numeric_limits<float>::infinity(), at::TensorOptions(at::kFloat))
                      .scatter(-1, index, at::log(weights).to(at::kFloat));
    if (ends_with(logits_key, ".vblora_logits_A")) layers.insert(logits_key.substr(0, logits_key.rfind('.')));
    out.emplace_back(logits_key, logits);
  }
  if (!layers.empty() && !bank.defined())
    throw std::runtime_error("no '" + kBankKey + "' (the vector bank every VB-LoRA layer shares)");
  for (const auto& layer : layers) out.emplace_back(layer + kLayerBank, bank);
  tensors = std::move(out);
}

namespace {
[[maybe_unused]] const bool kVBLoRAFileReader =
    register_file_tensors_reader("VBLORA", [](const AdapterConfig& c, FileTensors& tensors) {
      static_cast<const VBLoRAConfig&>(c).from_file_tensors(tensors);
    });
}  // namespace

}  // namespace peft
