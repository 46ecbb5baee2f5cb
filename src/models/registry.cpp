// Which C++ model class a config.json asks for.
#include <ATen/ATen.h>

#include <functional>

#include "models/bart.h"
#include "models/bert.h"
#include "models/bloom.h"
#include "models/clip.h"
#include "models/cohere.h"
#include "models/deberta.h"
#include "models/deberta_v2.h"
#include "models/dinov2.h"
#include "models/distilbert.h"
#include "models/falcon.h"
#include "models/gemma.h"
#include "models/gpt2.h"
#include "models/gpt_bigcode.h"
#include "models/gpt_neo.h"
#include "models/gpt_neox.h"
#include "models/gptj.h"
#include "models/llama.h"
#include "models/modernbert.h"
#include "models/moe.h"
#include "models/olmo2.h"
#include "models/opt.h"
#include "models/phi.h"
#include "models/phi3.h"
#include "models/stablelm.h"
#include "models/starcoder2.h"
#include "models/t5.h"
#include "models/vit.h"
#include "models/whisper.h"
#include "peft/layers.h"
#include "util/json_file.h"

namespace peft {

namespace {
using Factory = std::function<std::shared_ptr<Model>(const nlohmann::json&, const std::string&)>;

const std::map<std::string, Factory>& factories() {
  static const std::map<std::string, Factory> f = {
      {"LlamaForCausalLM", [](auto& j, auto& w) { return std::make_shared<LlamaForCausalLM>(j, "Llama", w); }},
      {"MistralForCausalLM", [](auto& j, auto& w) { return std::make_shared<LlamaForCausalLM>(j, "Mistral", w); }},
      {"Qwen2ForCausalLM", [](auto& j, auto& w) { return std::make_shared<LlamaForCausalLM>(j, "Qwen2", w); }},
      {"GraniteForCausalLM", [](auto& j, auto& w) { return std::make_shared<LlamaForCausalLM>(j, "Granite", w); }},
      {"Qwen3ForCausalLM", [](auto& j, auto& w) { return std::make_shared<LlamaForCausalLM>(j, "Qwen3", w); }},
      {"SmolLM3ForCausalLM", [](auto& j, auto& w) { return std::make_shared<LlamaForCausalLM>(j, "SmolLM3", w); }},
      {"GemmaForCausalLM", [](auto& j, auto& w) { return std::make_shared<GemmaForCausalLM>(j, "Gemma", w); }},
      {"Gemma2ForCausalLM", [](auto& j, auto& w) { return std::make_shared<GemmaForCausalLM>(j, "Gemma2", w); }},
      {"Gemma3ForCausalLM", [](auto& j, auto& w) { return std::make_shared<GemmaForCausalLM>(j, "Gemma3", w); }},
      {"LlamaForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<LlamaForSequenceClassification>(j, "Llama", w); }},
      {"MistralForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<LlamaForSequenceClassification>(j, "Mistral", w); }},
      {"Qwen2ForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<LlamaForSequenceClassification>(j, "Qwen2", w); }},
      {"Qwen3ForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<LlamaForSequenceClassification>(j, "Qwen3", w); }},
      {"SmolLM3ForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<LlamaForSequenceClassification>(j, "SmolLM3", w); }},
      {"PhiForCausalLM", [](auto& j, auto& w) { return std::make_shared<PhiForCausalLM>(j, w); }},
      {"CohereForCausalLM", [](auto& j, auto& w) { return std::make_shared<CohereForCausalLM>(j, w); }},
      {"Cohere2ForCausalLM", [](auto& j, auto& w) { return std::make_shared<CohereForCausalLM>(j, w, "Cohere2"); }},
      {"GPTNeoForCausalLM", [](auto& j, auto& w) { return std::make_shared<GPTNeoForCausalLM>(j, w); }},
      {"GPTNeoForSequenceClassification", make_gpt_neo_classifier},
      {"OPTForSequenceClassification", make_opt_classifier},
      {"GPTNeoXForSequenceClassification", make_gpt_neox_classifier},
      {"BloomForSequenceClassification", make_bloom_classifier},
      {"FalconForSequenceClassification", make_falcon_classifier},
      {"PhiForSequenceClassification", make_phi_classifier},
      {"Starcoder2ForSequenceClassification", make_starcoder2_classifier},
      {"Olmo2ForSequenceClassification", make_olmo2_classifier},
      {"GPTJForSequenceClassification", make_gptj_classifier},
      {"GPTBigCodeForSequenceClassification", make_gpt_bigcode_classifier},
      {"StableLmForSequenceClassification", make_stablelm_classifier},
      {"GemmaForSequenceClassification", [](auto& j, auto& w) { return make_gemma_classifier(j, "Gemma", w); }},
      {"Gemma2ForSequenceClassification", [](auto& j, auto& w) { return make_gemma_classifier(j, "Gemma2", w); }},
      {"Phi3ForCausalLM", [](auto& j, auto& w) { return std::make_shared<Phi3ForCausalLM>(j, w); }},
      {"MixtralForCausalLM", [](auto& j, auto& w) { return std::make_shared<MoeForCausalLM>(j, "Mixtral", w); }},
      {"Qwen3MoeForCausalLM", [](auto& j, auto& w) { return std::make_shared<MoeForCausalLM>(j, "Qwen3Moe", w); }},
      {"Qwen2MoeForCausalLM", [](auto& j, auto& w) { return std::make_shared<MoeForCausalLM>(j, "Qwen2Moe", w); }},
      {"GPT2LMHeadModel", [](auto& j, auto& w) { return std::make_shared<GPT2LMHeadModel>(j, w); }},
      {"GPTNeoXForCausalLM", [](auto& j, auto& w) { return std::make_shared<GPTNeoXForCausalLM>(j, w); }},
      {"BloomForCausalLM", [](auto& j, auto& w) { return std::make_shared<BloomForCausalLM>(j, w); }},
      {"FalconForCausalLM", [](auto& j, auto& w) { return std::make_shared<FalconForCausalLM>(j, w); }},
      {"Olmo2ForCausalLM", [](auto& j, auto& w) { return std::make_shared<Olmo2ForCausalLM>(j, w); }},
      {"Starcoder2ForCausalLM", [](auto& j, auto& w) { return std::make_shared<Starcoder2ForCausalLM>(j, w); }},
      {"GPTBigCodeForCausalLM", [](auto& j, auto& w) { return std::make_shared<GPTBigCodeForCausalLM>(j, w); }},
      {"GPTJForCausalLM", [](auto& j, auto& w) { return std::make_shared<GPTJForCausalLM>(j, w); }},
      {"StableLmForCausalLM", [](auto& j, auto& w) { return std::make_shared<StableLmForCausalLM>(j, w); }},
      {"OPTForCausalLM", [](auto& j, auto& w) { return std::make_shared<OPTForCausalLM>(j, w); }},
      {"BertModel", [](auto& j, auto& w) { return std::make_shared<BertModel>(j, w); }},
      {"BertForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<BertForSequenceClassification>(j, w); }},
      {"RobertaModel", [](auto& j, auto& w) { return std::make_shared<RobertaModel>(j, w); }},
      {"RobertaForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<RobertaForSequenceClassification>(j, w); }},
      {"XLMRobertaModel", [](auto& j, auto& w) { return std::make_shared<XLMRobertaModel>(j, w); }},
      {"XLMRobertaForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<XLMRobertaForSequenceClassification>(j, w); }},
      {"BertForTokenClassification",
       [](auto& j, auto& w) { return std::make_shared<BertForTokenClassification>(j, "Bert", w); }},
      {"RobertaForTokenClassification",
       [](auto& j, auto& w) { return std::make_shared<BertForTokenClassification>(j, "Roberta", w); }},
      {"ElectraModel", [](auto& j, auto& w) { return std::make_shared<ElectraModel>(j, w); }},
      {"ElectraForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<ElectraForSequenceClassification>(j, w); }},
      {"ElectraForTokenClassification",
       [](auto& j, auto& w) { return std::make_shared<BertForTokenClassification>(j, "Electra", w); }},
      {"DebertaV2Model", [](auto& j, auto& w) { return std::make_shared<DebertaV2Model>(j, w); }},
      {"DebertaV2ForSequenceClassification", [](auto& j, auto& w) { return make_deberta_classifier(j, w, 2, false); }},
      {"DebertaV2ForTokenClassification", [](auto& j, auto& w) { return make_deberta_classifier(j, w, 2, true); }},
      {"DebertaModel", [](auto& j, auto& w) { return std::make_shared<DebertaModel>(j, w); }},
      {"DebertaForSequenceClassification", [](auto& j, auto& w) { return make_deberta_classifier(j, w, 1, false); }},
      {"DebertaForTokenClassification", [](auto& j, auto& w) { return make_deberta_classifier(j, w, 1, true); }},
      {"ModernBertModel", [](auto& j, auto& w) { return std::make_shared<ModernBertModel>(j, w); }},
      {"ModernBertForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<ModernBertForClassification>(j, w, false); }},
      {"ModernBertForTokenClassification",
       [](auto& j, auto& w) { return std::make_shared<ModernBertForClassification>(j, w, true); }},
      {"DistilBertModel", [](auto& j, auto& w) { return std::make_shared<DistilBertModel>(j, w); }},
      {"DistilBertForSequenceClassification",
       [](auto& j, auto& w) { return std::make_shared<DistilBertForSequenceClassification>(j, w); }},
      {"ViTModel", [](auto& j, auto& w) { return std::make_shared<ViTModel>(j, w); }},
      {"ViTForImageClassification",
       [](auto& j, auto& w) { return std::make_shared<ViTForImageClassification>(j, w); }},
      {"Dinov2Model", [](auto& j, auto& w) { return std::make_shared<Dinov2Model>(j, w); }},
      {"Dinov2ForImageClassification",
       [](auto& j, auto& w) { return std::make_shared<Dinov2ForImageClassification>(j, w); }},
      {"CLIPModel", [](auto& j, auto& w) { return std::make_shared<ClipModel>(j, w); }},
      {"CLIPTextModelWithProjection",
       [](auto& j, auto& w) { return std::make_shared<ClipTextModelWithProjection>(j, w); }},
      {"CLIPVisionModelWithProjection",
       [](auto& j, auto& w) { return std::make_shared<ClipVisionModelWithProjection>(j, w); }},
      {"T5ForConditionalGeneration",
       [](auto& j, auto& w) { return std::make_shared<T5ForConditionalGeneration>(j, w); }},
      {"MT5ForConditionalGeneration",
       [](auto& j, auto& w) { return std::make_shared<T5ForConditionalGeneration>(j, w, "MT5"); }},
      {"BartForConditionalGeneration",
       [](auto& j, auto& w) { return std::make_shared<BartForConditionalGeneration>(j, w); }},
      {"MBartForConditionalGeneration",
       [](auto& j, auto& w) { return std::make_shared<BartForConditionalGeneration>(j, w, "MBart"); }},
      {"M2M100ForConditionalGeneration",
       [](auto& j, auto& w) { return std::make_shared<BartForConditionalGeneration>(j, w, "M2M100"); }},
      {"MarianMTModel", [](auto& j, auto& w) { return std::make_shared<BartForConditionalGeneration>(j, w, "Marian"); }},
      {"PegasusForConditionalGeneration",
       [](auto& j, auto& w) { return std::make_shared<BartForConditionalGeneration>(j, w, "Pegasus"); }},
      {"WhisperForConditionalGeneration",
       [](auto& j, auto& w) { return std::make_shared<WhisperForConditionalGeneration>(j, w); }},
  };
  return f;
}

// Used when config.json has no "architectures": the model_type's usual head.
const std::map<std::string, std::string> kDefaultArch = {
    {"llama", "LlamaForCausalLM"},
    {"mistral", "MistralForCausalLM"},
    {"qwen2", "Qwen2ForCausalLM"},
    {"qwen3", "Qwen3ForCausalLM"},
    {"granite", "GraniteForCausalLM"},
    {"smollm3", "SmolLM3ForCausalLM"},
    {"gemma", "GemmaForCausalLM"},
    {"gemma2", "Gemma2ForCausalLM"},
    {"gemma3_text", "Gemma3ForCausalLM"},
    {"phi", "PhiForCausalLM"},
    {"phi3", "Phi3ForCausalLM"},
    {"olmo2", "Olmo2ForCausalLM"},
    {"starcoder2", "Starcoder2ForCausalLM"},
    {"stablelm", "StableLmForCausalLM"},
    {"gpt2", "GPT2LMHeadModel"},
    {"gptj", "GPTJForCausalLM"},
    {"gpt_bigcode", "GPTBigCodeForCausalLM"},
    {"gpt_neox", "GPTNeoXForCausalLM"},
    {"gpt_neo", "GPTNeoForCausalLM"},
    {"cohere", "CohereForCausalLM"},
    {"cohere2", "Cohere2ForCausalLM"},
    {"opt", "OPTForCausalLM"},
    {"bloom", "BloomForCausalLM"},
    {"falcon", "FalconForCausalLM"},
    {"mixtral", "MixtralForCausalLM"},
    {"qwen2_moe", "Qwen2MoeForCausalLM"},
    {"qwen3_moe", "Qwen3MoeForCausalLM"},
    {"bert", "BertModel"},
    {"roberta", "RobertaModel"},
    {"xlm-roberta", "XLMRobertaModel"},
    {"distilbert", "DistilBertModel"},
    {"deberta-v2", "DebertaV2Model"},
    {"deberta", "DebertaModel"},
    {"electra", "ElectraModel"},
    {"modernbert", "ModernBertModel"},
    {"vit", "ViTModel"},
    {"dinov2", "Dinov2Model"},
    {"clip", "CLIPModel"},
    {"t5", "T5ForConditionalGeneration"},
    {"mt5", "MT5ForConditionalGeneration"},
    {"whisper", "WhisperForConditionalGeneration"},
    {"bart", "BartForConditionalGeneration"},
    {"mbart", "MBartForConditionalGeneration"},
    {"m2m_100", "M2M100ForConditionalGeneration"},
    {"marian", "MarianMTModel"},
    {"pegasus", "PegasusForConditionalGeneration"},
};
}  // namespace

const char* task_kind_name(TaskKind k) {
  switch (k) {
    case TaskKind::kCausalLM: return "causal-lm";
    case TaskKind::kSequenceClassification: return "sequence-classification";
    case TaskKind::kImageClassification: return "image-classification";
    case TaskKind::kEncoder: return "encoder";
    case TaskKind::kTokenClassification: return "token-classification";
  }
  return "?";
}

// Inputs a model would index out of range with: one clear error instead of a torch one.
void Model::check_inputs(const ModelInputs& in) {
  if (in.input_ids.defined()) {
    const auto& ids = in.input_ids;
    if (ids.dim() != 2 || ids.scalar_type() != at::kLong)
      throw std::invalid_argument("input_ids must be a [batch, seq] int64 tensor, got " + c10::str(ids.sizes()) + " " +
                                  c10::toString(ids.scalar_type()));
    if (auto* emb = input_embeddings(); emb && ids.numel() > 0) {
      const auto [lo, hi] = at::aminmax(ids);
      const int64_t low = lo.item<int64_t>(), high = hi.item<int64_t>();
      if (low < 0 || high >= emb->num_embeddings)
        throw std::invalid_argument("token id " + std::to_string(low < 0 ? low : high) + " is out of range: " +
                                    type_name() + " has a vocabulary of " + std::to_string(emb->num_embeddings));
    }
  }
  if (in.attention_mask.defined() && in.attention_mask.dim() != 2)
    throw std::invalid_argument("attention_mask must be [batch, past + seq], got " + c10::str(in.attention_mask.sizes()));
  if (const int64_t max = max_positions(); max > 0 && (in.input_ids.defined() || in.inputs_embeds.defined())) {
    const int64_t past = in.cache ? in.cache->length() : 0;
    if (past + in.seq_len() > max)
      throw std::invalid_argument(type_name() + " takes at most " + std::to_string(max) + " positions; got " +
                                  std::to_string(past + in.seq_len()) + " (truncate the input, e.g. max_length)");
  }
}

ModelOutputs Model::forward(const ModelInputs& in) {
  check_inputs(in);
  if (!input_adapter) return run(in);
  ModelInputs adapted = in;
  const int64_t virtual_positions = input_adapter->prepare(*this, adapted);
  check_inputs(adapted);  // virtual tokens count against the position limit too
  ModelOutputs out = run(adapted);
  if (virtual_positions > 0) {
    // Sequence-shaped outputs get the caller's positions back; pooled ones are as they are.
    auto strip = [&](at::Tensor& t) {
      if (t.defined() && t.dim() == 3) t = t.narrow(1, virtual_positions, t.size(1) - virtual_positions);
    };
    strip(out.last_hidden_state);
    if (task() == TaskKind::kCausalLM || task() == TaskKind::kTokenClassification) strip(out.logits);
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
  // A 4-bit weight (the only uint8 parameter: packed codes, two per byte) counts twice its
  // bytes, as transformers' num_parameters() counts bnb's Params4bit.
  for (const auto& [_, t] : named_parameters()) n += t.scalar_type() == at::kByte ? 2 * t.numel() : t.numel();
  return n;
}

std::shared_ptr<Model> build_model(const nlohmann::json& config, const std::string& where) {
  if (!config.is_object()) throw std::runtime_error(where + ": not a JSON object");
  std::string arch;
  if (config.contains("architectures") && config["architectures"].is_array() && !config["architectures"].empty()) {
    if (!config["architectures"][0].is_string()) throw std::runtime_error(where + ": 'architectures' must list names");
    arch = config["architectures"][0].get<std::string>();
  } else if (config.contains("model_type") && config["model_type"].is_string()) {
    auto it = kDefaultArch.find(config["model_type"].get<std::string>());
    if (it != kDefaultArch.end()) arch = it->second;
  }
  auto it = factories().find(arch);
  if (it == factories().end()) {
    std::string known;
    for (const auto& [k, _] : factories()) known += (known.empty() ? "" : ", ") + k;
    throw std::runtime_error(where + ": unsupported architecture '" +
                             (arch.empty() ? quote_json(config.value("model_type", nlohmann::json("?"))) : arch) +
                             "' (supported: " + known + ")");
  }
  return it->second(config, where);
}

}  // namespace peft
