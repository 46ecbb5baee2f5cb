// Which C++ model class a config.json asks for.
#include <ATen/ATen.h>

#include <functional>

#include "models/bert.h"
#include "models/gpt2.h"
#include "models/llama.h"
#include "models/vit.h"

namespace peft {

namespace {
using Factory = std::function<std::shared_ptr<Model>(const nlohmann::json&, const std::string&)>;

const std::map<std::string, Factory>& factories() {
  static const std::map<std::string, Factory> f = {
      {"LlamaForCausalLM", [](auto& j, auto& w) { return std::make_shared<LlamaForCausalLM>(j, "Llama", w); }},
      {"MistralForCausalLM", [](auto& j, auto& w) { return std::make_shared<LlamaForCausalLM>(j, "Mistral", w); }},
      {"Qwen2ForCausalLM", [](auto& j, auto& w) { return std::make_shared<LlamaForCausalLM>(j, "Qwen2", w); }},
      {"GPT2LMHeadModel", [](auto& j, auto& w) { return std::make_shared<GPT2LMHeadModel>(j, w); }},
      {"BertModel", [](auto& j, auto& w) { return std::make_shared<BertModel>(j, w); }},
      {"BertForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<BertForSequenceClassification>(j, w); }},
      {"ViTModel", [](auto& j, auto& w) { return std::make_shared<ViTModel>(j, w); }},
      {"ViTForImageClassification",
       [](auto& j, auto& w) { return std::make_shared<ViTForImageClassification>(j, w); }},
  };
  return f;
}

// Used when config.json has no "architectures": the model_type's usual head.
const std::map<std::string, std::string> kDefaultArch = {
    {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"},
    {"gpt2", "GPT2LMHeadModel"},   {"bert", "BertModel"},             {"vit", "ViTModel"},
};
}  // namespace

const char* task_kind_name(TaskKind k) {
  switch (k) {
    case TaskKind::kCausalLM: return "causal-lm";
    case TaskKind::kSequenceClassification: return "sequence-classification";
    case TaskKind::kImageClassification: return "image-classification";
    case TaskKind::kEncoder: return "encoder";
  }
  return "?";
}

ModelOutputs Model::forward(const ModelInputs& in) {
  if (!input_adapter) return run(in);
  ModelInputs adapted = in;
  const int64_t virtual_positions = input_adapter->prepare(*this, adapted);
  ModelOutputs out = run(adapted);
  if (virtual_positions > 0) {
    // Sequence-shaped outputs get the caller's positions back; pooled ones are as they are.
    auto strip = [&](at::Tensor& t) {
      if (t.defined() && t.dim() == 3) t = t.narrow(1, virtual_positions, t.size(1) - virtual_positions);
    };
    strip(out.last_hidden_state);
    if (task() == TaskKind::kCausalLM) strip(out.logits);
  }
  return out;
}

std::vector<at::Tensor*> InputAdapter::trainable_slots() {
  std::vector<at::Tensor*> out;
  visit_slots([&](const std::string&, ParamSlot& s) { out.push_back(s.tensor); });
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> InputAdapter::saved_tensors() {
  std::vector<std::pair<std::string, at::Tensor>> out;
  visit_slots([&](const std::string& name, ParamSlot& s) { out.emplace_back(name, *s.tensor); });
  return out;
}

int64_t Model::num_parameters() const {
  int64_t n = 0;
  for (const auto& [_, t] : named_parameters()) n += t.numel();
  return n;
}

std::shared_ptr<Model> build_model(const nlohmann::json& config, const std::string& where) {
  if (!config.is_object()) throw std::runtime_error(where + ": not a JSON object");
  std::string arch;
  if (config.contains("architectures") && config["architectures"].is_array() && !config["architectures"].empty())
    arch = config["architectures"][0].get<std::string>();
  else if (config.contains("model_type")) {
    auto it = kDefaultArch.find(config["model_type"].get<std::string>());
    if (it != kDefaultArch.end()) arch = it->second;
  }
  auto it = factories().find(arch);
  if (it == factories().end()) {
    std::string known;
    for (const auto& [k, _] : factories()) known += (known.empty() ? "" : ", ") + k;
    throw std::runtime_error(where + ": unsupported architecture '" +
                             (arch.empty() ? config.value("model_type", std::string("?")) : arch) +
                             "' (supported: " + known + ")");
  }
  return it->second(config, where);
}

}  // namespace peft
