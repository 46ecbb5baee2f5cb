#include "train/setup.h"

#include <filesystem>
#include <iostream>

#include "models/model_config.h"  // num_labels_of
#include "models/seq_cls_head.h"  // classifier_pad_id
#include "peft/cartridge.h"
#include "peft/clip.h"
#include "peft/layers.h"
#include "peft/lora.h"
#include "peft/seq2seq.h"
#include "peft/sparse_ft.h"
#include "train/audio_data.h"
#include "train/evaluate.h"
#include "tuners/lora/corda.h"
#include "tuners/lora/eva.h"
#include "tuners/lora/init_conversion.h"
#include "tuners/lora/lora_ga.h"
#include "util/atomic_file.h"
#include "util/cuda_backend.h"
#include "train/image_data.h"
#include "train/precision.h"
#include "util/json_file.h"  // strict_get

namespace fs = std::filesystem;

namespace peft {

namespace {

// "composition": adapters read from their folders, frozen, combined as the composition
// says; its own tensors train. A folder to start from (a checkpoint, init_adapter) holds
// a saved composition, whose tensors replace the fresh ones.
void adapters_composed(PeftModel& peft, const TrainConfig& cfg, const std::vector<std::string>& from) {
  nlohmann::ordered_json j = cfg.composition;
  const auto dirs = j.value("adapters", nlohmann::ordered_json());
  if (!dirs.is_object() || dirs.empty())
    throw std::runtime_error("composition: 'adapters' must map adapter names to their folders, e.g. {\"a\": \"adapters/a\"}");
  j["adapters"] = nlohmann::ordered_json::array();
  for (const auto& [name, _] : dirs.items()) j["adapters"].push_back(name);
  const auto comp = CompositionConfig::from_json(j, "composition");
  if (comp.train_adapters)
    throw std::runtime_error("composition: 'train_adapters' is not for peft train, which keeps the adapters frozen");
  for (const auto& [name, dir] : dirs.items())
    peft.load_adapter(strict_get<std::string>(dir, "composition: 'adapters' entry '" + name + "'"), name);
  if (from.empty()) return peft.set_composition(comp, cfg.seed);
  peft.load_composition(from.front());
  if (peft.composition()->kind != comp.kind || peft.composition()->adapters != comp.adapters)
    throw std::runtime_error(from.front() + ": its composition differs from the config's 'composition'");
}

}  // namespace

namespace {

// The data-driven inits' calibration (HF's preprocess_corda / preprocess_loraga with a
// run over a sample of the data), before the adapter exists, on the training file's first
// kCalibrationSamples examples: CorDA runs them one per forward (as HF's hook expects);
// LoRA-GA forward and backward in training batches, each batch's mean loss.
constexpr size_t kCalibrationSamples = 256;

// The first n examples of `data` in batches of `batch`, collated.
void for_batches(TrainSetup& s, const std::vector<Example>& data, size_t n, size_t batch,
                 const std::function<void(const Batch&)>& each) {
  for (size_t i = 0; i < n; i += batch) {
    std::vector<const Example*> xs;
    for (size_t k = i; k < std::min(n, i + batch); ++k) xs.push_back(&data[k]);
    each(collate(xs, s.pad_id, s.causal));
  }
}

void backward_mean_loss(TrainSetup& s, const Batch& b) {
  (batch_loss(*s.peft, b, s.model->device(), s.causal).sum / static_cast<double>(std::max<int64_t>(1, b.num_items)))
      .backward();
}

void calibrate_lora_init(TrainSetup& s, const TrainConfig& cfg, LoraConfig& lora) {
  const bool corda = lora.init_lora_weights == "corda";
  if (cfg.train_file.empty())
    throw std::runtime_error("init_lora_weights '" + lora.init_lora_weights + "' calibrates on train_file; none is set");
  const auto data = read_data(cfg.train_file, cfg.label_file, data_options(cfg, s));
  const size_t n = std::min(data.size(), kCalibrationSamples);
  std::cerr << (corda ? "CorDA: input covariances" : "LoRA-GA: weight gradients") << " of the targets over " << n
            << " training examples\n";
  const at::Device dev = s.model->device();
  const size_t batch = corda ? 1 : static_cast<size_t>(std::max<int64_t>(1, cfg.per_device_train_batch_size));
  s.peft->train(!corda);  // HF: the hooked model in eval mode; LoRA-GA's in training mode
  auto run = [&] {
    for_batches(s, data, n, batch, [&](const Batch& b) {
      if (!corda) {
        backward_mean_loss(s, b);
      } else if (as_seq2seq(*s.model)) {
        batch_loss(*s.peft, b, dev, s.causal);
      } else {
        ModelInputs in;
        if (b.pixel_values.defined()) in.pixel_values = b.pixel_values.to(dev);
        else in.input_ids = b.input_ids.to(dev);
        s.peft->forward(in);
      }
    });
  };
  auto stats = corda ? corda_covariances(*s.model, lora, run) : lora_ga_gradients(*s.model, lora, run);
  s.peft->train(false);
  lora.calibration = std::make_shared<const std::map<std::string, at::Tensor>>(std::move(stats));
}

// SPARSE_FT's gradient mask: LoRA-GA's estimate (each training batch's mean loss, forward
// and backward, only the targets' weights requiring grad) over the first
// calibration_samples examples.
void calibrate_sparse_mask(TrainSetup& s, const TrainConfig& cfg, SparseFtConfig& sparse) {
  if (cfg.train_file.empty()) throw std::runtime_error("SPARSE_FT mask_type 'gradient' calibrates on train_file; none is set");
  const auto data = read_data(cfg.train_file, cfg.label_file, data_options(cfg, s));
  const size_t n = std::min(data.size(), static_cast<size_t>(sparse.calibration_samples));
  std::cerr << "SPARSE_FT: weight gradients of the targets over " << n << " training examples\n";
  const size_t batch = static_cast<size_t>(std::max<int64_t>(1, cfg.per_device_train_batch_size));
  s.peft->train(true);
  auto grads = sparse_ft_gradients(*s.model, sparse, [&] { for_batches(s, data, n, batch, [&](const Batch& b) { backward_mean_loss(s, b); }); });
  s.peft->train(false);
  sparse.calibration = std::make_shared<const std::map<std::string, at::Tensor>>(std::move(grads));
}

// EVA's calibration (HF's initialize_lora_eva_weights with a dataloader over the training
// file in order, training-sized batches, cycled until the components converge): the PCA
// rows are the tokens with attention and, with use_label_mask, a label.
void calibrate_eva(TrainSetup& s, const TrainConfig& cfg, LoraConfig& lora) {
  if (cfg.train_file.empty()) throw std::runtime_error("init_lora_weights 'eva' calibrates on train_file; none is set");
  if (as_seq2seq(*s.model))
    throw std::runtime_error("init_lora_weights 'eva' is not supported on " + s.model->type_name() +
                             " (its token mask covers the encoder only, as in HF PEFT)");
  const auto data = read_data(cfg.train_file, cfg.label_file, data_options(cfg, s));
  const size_t batch = static_cast<size_t>(std::max<int64_t>(1, cfg.per_device_train_batch_size));
  EvaData d;
  d.num_batches = (data.size() + batch - 1) / batch;
  std::vector<Batch> batches(d.num_batches);
  auto batch_at = [&](size_t i) -> const Batch& {
    if (!batches[i].input_ids.defined()) {
      std::vector<const Example*> xs;
      for (size_t k = i * batch; k < std::min(data.size(), (i + 1) * batch); ++k) xs.push_back(&data[k]);
      batches[i] = collate(xs, s.pad_id, s.causal);
      if (!batches[i].input_ids.defined())
        throw std::runtime_error("init_lora_weights 'eva' calibrates on token inputs; " + cfg.train_file + " has none");
    }
    return batches[i];
  };
  d.token_mask = [&](size_t i) {
    const Batch& b = batch_at(i);
    auto mask = b.attention_mask.defined() ? b.attention_mask.to(at::kBool) : at::ones_like(b.input_ids, at::kBool);
    if (lora.eva.use_label_mask && b.labels.defined() && b.labels.sizes().equals(mask.sizes()))
      mask = mask.logical_and(b.labels != lora.eva.label_mask_value);
    return mask;
  };
  const at::Device dev = s.model->device();
  d.forward = [&](size_t i) { batch_loss(*s.peft, batch_at(i), dev, s.causal); };
  std::cerr << "EVA: incremental PCA of the targets' inputs over " << d.num_batches << " batches of " << batch
            << " training examples, cycled until converged\n";
  s.peft->train(false);  // HF: the model in eval mode
  apply_eva(*s.model, lora, eva_components(*s.model, lora, d));
}

}  // namespace

void save_trained(const PeftModel& peft, const std::string& dir, bool checkpoint,
                  const NamedTensors* initial_adapter) {
  if (peft.composition()) return peft.save_composition(dir, !checkpoint);
  peft.save_adapter(dir);
  if (checkpoint || !initial_adapter || initial_adapter->empty()) return;
  // As HF's save_pretrained(path_initial_model_for_weight_conversion): the trained change
  // relative to the original base, a LoRA of twice the rank.
  const auto* lora = dynamic_cast<const LoraConfig*>(&peft.config("default"));
  if (!lora) return;
  const fs::path cfg_path = fs::path(dir) / "adapter_config.json";
  std::unique_ptr<LoraConfig> converted;
  try {
    converted = plain_lora_config(*lora);
  } catch (const std::invalid_argument& e) {
    std::cerr << "warning: " << e.what() << "; " << dir << " holds the adapter as trained, for the residual base\n";
    return;
  }
  const auto written = read_json_file(cfg_path.string());
  auto plain = converted->to_json();
  if (written.contains("base_model_name_or_path") && written["base_model_name_or_path"].is_string())
    plain["base_model_name_or_path"] = written["base_model_name_or_path"].get<std::string>();
  save_safetensors((fs::path(dir) / "adapter_model.safetensors").string(),
                   lora_delta_from_init(peft.adapter_state_dict("default"), *initial_adapter), {{"format", "pt"}});
  write_json_atomic(cfg_path.string(), plain);
  std::cerr << "note: init_lora_weights '" << lora->init_lora_weights << "' trained against a residual base; "
            << dir << " holds the change as a plain LoRA of the original base (r " << lora->r << " -> "
            << 2 * lora->r << ")\n";
}

namespace {

// With precision=bf16 on a GPU, whether to build the model and its adapters on the host
// and move them once the frozen base is bf16: loading straight onto the GPU would hold the
// whole base there in fp32 first (30 GB for an 8B model whose run then needs 16). Not where
// setup runs the model on data (CorDA, LoRA-GA and EVA calibration, gradient masks), which
// stays on the GPU, nor with a composition (PeftModel::to does not move its tensors).
bool stage_on_host(const TrainConfig& cfg) {
  if (cfg.precision != "bf16" || cfg.device == "cpu" || !cfg.composition.is_null()) return false;
  const auto is = [&](const char* key, std::initializer_list<const char*> values) {
    const auto it = cfg.method.find(key);
    if (it == cfg.method.end() || !it->is_string()) return false;
    for (const char* v : values)
      if (*it == v) return true;
    return false;
  };
  return !cfg.method.is_object() || !(is("init_lora_weights", {"corda", "lora_ga", "eva"}) || is("mask_type", {"gradient"}));
}

}  // namespace

TrainSetup load_setup(const TrainConfig& cfg, const std::vector<std::string>& adapters, bool fresh_adapter) {
  TrainSetup s;
  LoadOptions lo;
  const bool staged = stage_on_host(cfg);
  if (staged) usable_device(cfg.device);  // fail before loading, as load_model does
  else lo.device = cfg.device;
  lo.architecture = cfg.architecture;
  lo.num_labels = cfg.num_labels;
  lo.labels = cfg.labels;
  lo.seed = cfg.seed;
  if (cfg.load_in_4bit)
    lo.load_in_4bit = Load4bit{cfg.quant_type, cfg.double_quant, cfg.blocksize, std::nullopt, cfg.llm_int8_skip_modules};
  if (!cfg.compute_dtype.empty()) lo.compute_dtype_4bit = cfg.compute_dtype == "bfloat16" ? at::kBFloat16 : at::kFloat;
  s.model = load_model(cfg.model, lo);
  const TaskKind task = s.model->task();
  if (task == TaskKind::kCausalLM) s.causal = true;
  else if (task == TaskKind::kSequenceClassification || task == TaskKind::kImageClassification ||
           task == TaskKind::kTokenClassification || as_contrastive(*s.model))
    s.causal = false;
  else throw std::runtime_error(s.model->type_name() + ": training supports causal LMs and sequence/token/image classifiers");
  const std::string tok_dir = cfg.tokenizer.empty() ? cfg.model : cfg.tokenizer;
  if (fs::exists(fs::path(tok_dir) / "tokenizer.json") || fs::is_regular_file(tok_dir)) {
    s.tokenizer = Tokenizer::from_file(tok_dir);
    if (auto pad = s.tokenizer->special_token("pad_token"))
      if (auto id = s.tokenizer->token_to_id(*pad)) s.pad_id = *id;
  }
  s.pad_id = classifier_pad_id(*s.model, s.pad_id);  // the padding the classifier recognizes
  s.peft = std::make_unique<PeftModel>(s.model);
  if (!cfg.composition.is_null()) adapters_composed(*s.peft, cfg, adapters);
  else for (size_t i = 0; i < adapters.size(); ++i) s.peft->load_adapter(adapters[i], i == 0 ? "default" : std::string("a") + std::to_string(i));
  if (fresh_adapter && adapters.empty() && cfg.composition.is_null()) {
    nlohmann::ordered_json m = cfg.method;
    if (!m.contains("peft_type")) m["peft_type"] = "LORA";
    if (!m.contains("task_type") && task != TaskKind::kImageClassification && !as_contrastive(*s.model))
      m["task_type"] = s.causal ? (as_seq2seq(*s.model) ? "SEQ_2_SEQ_LM" : "CAUSAL_LM") : task == TaskKind::kTokenClassification ? "TOKEN_CLS" : "SEQ_CLS";
    auto method = parse_user_adapter_config(m, "method");
    method->inference_mode = false;  // prompt encoders train through their reparameterization
    // The inits that need data before the adapter exists (CorDA, LoRA-GA, EVA).
    auto* lora = dynamic_cast<LoraConfig*>(method.get());
    if (lora && (lora->init_lora_weights == "corda" || lora->init_lora_weights == "lora_ga"))
      calibrate_lora_init(s, cfg, *lora);
    if (lora && lora->init_lora_weights == "eva") calibrate_eva(s, cfg, *lora);
    if (auto* sparse = dynamic_cast<SparseFtConfig*>(method.get()); sparse && sparse->mask_type == "gradient")
      calibrate_sparse_mask(s, cfg, *sparse);
    s.peft->add_adapter("default", *method, cfg.seed);
    if (!cfg.init_kv_prefix_text.empty()) {
      if (!s.tokenizer) throw std::runtime_error("init_kv_prefix_text needs a tokenizer (tokenizer.json); none in " + tok_dir);
      init_kv_prefix_from_text(*s.peft, "default", *s.tokenizer, cfg.init_kv_prefix_text);
    }
    if (lora && init_rewrites_base(lora->init_lora_weights))
      for (const auto& [k, t] : s.peft->adapter_state_dict("default")) s.initial_adapter.emplace_back(k, t.clone());
  }
  report_new_heads(*s.model, s.peft.get());
  if (as_contrastive(*s.model))  // visual prompts only: text prompts would move the pooled token
    for (const auto& name : s.peft->active_adapters())
      if (s.peft->input_adapter(name) && s.peft->config(name).peft_type() != "VPT")
        throw std::runtime_error(s.peft->config(name).peft_type() + " is not supported on " + s.model->type_name() +
                                 " (contrastive training takes VPT and layer adapters: LoRA, CLIP_ADAPTER, ...)");
  if (cfg.packing || cfg.padding_free) {
    const char* what = cfg.packing ? "packing" : "padding_free";
    if (!s.causal) throw std::runtime_error(std::string(what) + " is for causal LMs; " + cfg.model + " is a classifier");
    if (as_seq2seq(*s.model))
      throw std::runtime_error(std::string(what) + " is for decoder-only causal LMs; " + cfg.model + " is encoder-decoder");
    // Packed sequences are told apart by position ids; an input adapter rewrites a row as
    // one sequence (virtual tokens, prefixes, prompts attended by the whole row).
    for (const auto& name : s.peft->active_adapters())
      if (s.peft->input_adapter(name))
        throw std::runtime_error(std::string(what) + " cannot be used with " + s.peft->config(name).peft_type() +
                                 " (it acts on each row as one sequence, which packing splits into examples)");
  }
  if (cfg.precision == "bf16") store_frozen_weights(*s.model, at::kBFloat16);  // after the adapters: they decide
  if (staged) s.peft->to(at::Device(cfg.device));
  return s;
}

DataOptions data_options(const TrainConfig& cfg, const TrainSetup& s) {
  DataOptions o;
  o.format = cfg.format;
  o.max_length = cfg.max_length;
  o.packing = cfg.packing;
  o.completion_only_loss = cfg.completion_only_loss;
  o.last_turn_only = cfg.chat_loss_turns == "last";
  o.skip_bad_lines = cfg.on_bad_line == "skip";
  o.classification = !s.causal;
  o.token_classification = s.model->task() == TaskKind::kTokenClassification;
  o.label_all_tokens = cfg.label_all_tokens;
  o.tokenizer = s.tokenizer ? &*s.tokenizer : nullptr;
  o.seq2seq = as_seq2seq(*s.model) != nullptr;
  o.label2id = s.model->config().value("label2id", nlohmann::json::object());
  if (!s.causal) o.num_labels = num_labels_of(s.model->config(), cfg.model);
  // config.json's problem_type (checked); without one each line's label decides, as in transformers.
  if (!s.causal && !s.model->config().value("problem_type", nlohmann::json()).is_null())
    o.problem_type = problem_type_of(s.model->config(), o.num_labels, false);
  if (auto* emb = s.model->input_embeddings()) o.vocab_size = emb->num_embeddings;
  o.model_dir = cfg.model;
  if (auto* s2s = as_seq2seq(*s.model); s2s && s2s->reads_audio()) {  // Whisper: {"audio", "text"}
    o.audio = true;
    o.decoder_start_token_id = s2s->decoder_start_token_id();
    o.max_target_positions = s2s->max_target_positions();
  }
  if (as_contrastive(*s.model)) {  // CLIP: {"image", "text"} pairs, texts within the position embeddings
    o.contrastive = true;
    o.num_labels = 0;
    o.max_length = std::min(o.max_length, s.model->max_positions());
  }
  return o;
}

std::vector<Example> read_data(const std::string& file, const std::string& labels, const DataOptions& o) {
  if (o.audio) {
    if (!is_audio_jsonl(file))
      throw std::runtime_error(file + ": speech recognition (Whisper) trains on JSONL of {\"audio\": path, \"text\": \"...\"}");
    return load_audio_text_jsonl(file, o);
  }
  if (file.size() > 4 && file.compare(file.size() - 4, 4, ".npy") == 0)
    return load_image_examples(file, labels, o.num_labels);
  if (o.contrastive) {
    if (!is_image_jsonl(file))
      throw std::runtime_error(file + ": contrastive (CLIP) training reads JSONL of {\"image\": path, \"text\": \"...\"}");
    return load_image_text_jsonl(file, o);
  }
  if (std::filesystem::is_directory(file)) return load_image_folder(file, o);
  if (is_image_jsonl(file)) return load_image_jsonl(file, o);
  return load_examples(file, o);
}

}  // namespace peft
