// Whisper's short-form generation (transformers' WhisperGenerationMixin.generate without
// timestamps): the decoder prompt from generation_config.json, language detection, token
// suppression, then greedy or sampled decoding with the encoder-decoder cache.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <stdexcept>

#include "generate_rows.h"
#include "models/whisper.h"
#include "peft/seq2seq.h"
#include "peft/whisper.h"
#include "util/json_file.h"

namespace peft {

namespace {

std::vector<int64_t> id_list(const nlohmann::json& j, const char* key, const std::string& where) {
  std::vector<int64_t> out;
  if (!j.contains(key) || j[key].is_null()) return out;
  if (j[key].is_number_integer()) return {j[key].get<int64_t>()};
  if (!j[key].is_array()) throw std::runtime_error(where + ": '" + key + "' must be a list of token ids");
  for (const auto& v : j[key]) {
    if (!v.is_number_integer()) throw std::runtime_error(where + ": '" + key + "' must be a list of token ids");
    out.push_back(v.get<int64_t>());
  }
  return out;
}

std::map<std::string, int64_t> id_map(const nlohmann::json& j, const char* key, const std::string& where) {
  std::map<std::string, int64_t> out;
  if (!j.contains(key) || j[key].is_null()) return out;
  if (!j[key].is_object()) throw std::runtime_error(where + ": '" + key + "' must map names to token ids");
  for (const auto& [k, v] : j[key].items()) {
    if (!v.is_number_integer()) throw std::runtime_error(where + ": '" + key + "." + k + "' must be a token id");
    out[k] = v.get<int64_t>();
  }
  return out;
}

WhisperForConditionalGeneration& whisper_of(Model& model) {
  auto* w = dynamic_cast<WhisperForConditionalGeneration*>(&model);
  if (!w) throw std::invalid_argument(model.type_name() + " is not a Whisper model");
  return *w;
}

// detect_language: the likeliest language token after decoder_start alone, per row.
std::vector<int64_t> detect_language(WhisperForConditionalGeneration& model, const at::Tensor& features,
                                     const WhisperGenerationConfig& w) {
  Seq2SeqInputs in;
  in.input_features = features;
  in.decoder_input_ids =
      at::full({features.size(0), 1}, w.decoder_start_token_id, at::TensorOptions(at::kLong).device(model.device()));
  const auto logits = model.forward_seq2seq(in).logits.select(1, -1).to(at::kFloat).cpu();
  auto lang_mask = at::ones({logits.size(-1)}, at::kBool);
  for (const auto& [_, id] : w.lang_to_id) lang_mask[id] = false;
  const auto ids = logits.masked_fill(lang_mask, -std::numeric_limits<float>::infinity()).argmax(-1);
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
}

}  // namespace

WhisperGenerationConfig WhisperGenerationConfig::from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) throw std::runtime_error(where + ": not a JSON object");
  WhisperGenerationConfig c;
  auto integer = [&](const char* key, int64_t fallback) {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    if (!j[key].is_number_integer()) throw std::runtime_error(where + ": '" + key + "' must be a token id");
    return j[key].get<int64_t>();
  };
  c.decoder_start_token_id = integer("decoder_start_token_id", 50257);
  c.eos_token_ids = id_list(j, "eos_token_id", where);
  c.pad_token_id = integer("pad_token_id", c.eos_token_ids.empty() ? 0 : c.eos_token_ids.front());
  if (j.contains("no_timestamps_token_id") && !j["no_timestamps_token_id"].is_null())
    c.no_timestamps_token_id = integer("no_timestamps_token_id", 0);
  c.suppress_tokens = id_list(j, "suppress_tokens", where);
  c.begin_suppress_tokens = id_list(j, "begin_suppress_tokens", where);
  c.lang_to_id = id_map(j, "lang_to_id", where);
  c.task_to_id = id_map(j, "task_to_id", where);
  if (j.contains("forced_decoder_ids") && !j["forced_decoder_ids"].is_null()) {
    const auto& f = j["forced_decoder_ids"];
    const std::string bad = where + ": 'forced_decoder_ids' must be a list of [position, token id or null] pairs";
    if (!f.is_array()) throw std::runtime_error(bad);
    for (const auto& p : f) {
      if (!p.is_array() || p.size() != 2 || !p[0].is_number_integer() || !(p[1].is_null() || p[1].is_number_integer()))
        throw std::runtime_error(bad);
      c.forced_decoder_ids.emplace_back(p[0].get<int64_t>(),
                                        p[1].is_null() ? std::nullopt : std::optional<int64_t>(p[1].get<int64_t>()));
    }
  }
  for (const char* key : {"language", "task"})
    if (j.contains(key) && !j[key].is_null()) {
      if (!j[key].is_string()) throw std::runtime_error(where + ": '" + key + "' must be a string");
      (std::string(key) == "language" ? c.language : c.task) = j[key].get<std::string>();
    }
  return c;
}

WhisperGenerationConfig WhisperGenerationConfig::load(const std::string& model_dir) {
  namespace fs = std::filesystem;
  fs::path p = fs::path(model_dir) / "generation_config.json";
  if (!fs::exists(p)) p = fs::path(model_dir) / "config.json";
  return from_json(read_json_file(p.string()), p.string());
}

std::vector<std::vector<int64_t>> whisper_prompts(Model& model, const at::Tensor& input_features,
                                                  const WhisperGenerationConfig& w) {
  auto& whisper = whisper_of(model);
  std::vector<std::optional<int64_t>> init = {w.decoder_start_token_id};
  // The legacy forced_decoder_ids count only without language and task, and only as a
  // run of positions 1, 2, ...
  if (w.language.empty() && w.task.empty() && !w.forced_decoder_ids.empty() && w.forced_decoder_ids[0].first == 1) {
    for (size_t i = 0; i < w.forced_decoder_ids.size(); ++i) {
      if (w.forced_decoder_ids[i].first != static_cast<int64_t>(i) + 1)
        throw std::invalid_argument("forced_decoder_ids must give positions 1, 2, ... in order");
      init.push_back(w.forced_decoder_ids[i].second);
    }
  }
  const bool language_undefined = init.size() <= 1 || !init[1].has_value();
  std::vector<int64_t> languages;
  if (!w.language.empty()) {
    const std::string token = w.language.rfind("<|", 0) == 0 ? w.language : "<|" + w.language + "|>";
    auto it = w.lang_to_id.find(token);
    if (it == w.lang_to_id.end())
      throw std::invalid_argument("language '" + w.language + "' is not in the generation config's lang_to_id");
    languages.assign(input_features.size(0), it->second);
  } else if (!w.lang_to_id.empty() && language_undefined) {
    c10::InferenceMode guard;
    languages = detect_language(whisper, input_features, w);
  }
  std::vector<std::vector<int64_t>> rows;
  for (int64_t b = 0; b < input_features.size(0); ++b) {
    auto row = init;
    if (!languages.empty()) {
      if (row.size() > 1) row[1] = languages[b];
      else row.push_back(languages[b]);
    }
    auto has_task = [&] {
      return std::any_of(row.begin(), row.end(), [&](const auto& t) {
        return t && std::any_of(w.task_to_id.begin(), w.task_to_id.end(), [&](const auto& kv) { return kv.second == *t; });
      });
    };
    if (!w.task.empty()) {
      auto it = w.task_to_id.find(w.task);
      if (it == w.task_to_id.end())
        throw std::invalid_argument("task '" + w.task + "' is not in the generation config's task_to_id");
      row.push_back(it->second);
    } else if (!w.language.empty() && w.task_to_id.count("transcribe") && !has_task()) {
      row.push_back(w.task_to_id.at("transcribe"));
    }
    if (w.no_timestamps_token_id && !(row.back() && *row.back() == *w.no_timestamps_token_id))
      row.push_back(*w.no_timestamps_token_id);
    std::vector<int64_t> ids;
    for (const auto& t : row)
      if (t) ids.push_back(*t);
    rows.push_back(std::move(ids));
  }
  return rows;
}

std::vector<std::vector<int64_t>> generate_whisper(Model& model, const at::Tensor& input_features,
                                                   const WhisperGenerationConfig& w, const GenerationConfig& cfg) {
  auto& whisper = whisper_of(model);
  GenerationConfig gen_cfg = cfg;
  gen_cfg.eos_token_ids = w.eos_token_ids;
  gen_cfg.pad_token_id = w.pad_token_id;
  gen_cfg.validate();
  const auto prompts = whisper_prompts(model, input_features, w);
  if (prompts.empty()) return {};
  const int64_t vocab = whisper.whisper_config().vocab_size, limit = whisper.whisper_config().max_target_positions;
  const int64_t len = static_cast<int64_t>(prompts[0].size());
  if (len + gen_cfg.max_new_tokens > limit)
    throw std::invalid_argument("the decoder prompt (" + std::to_string(len) + " tokens) and max_new_tokens (" +
                                std::to_string(gen_cfg.max_new_tokens) + ") exceed max_target_positions " +
                                std::to_string(limit));
  auto suppress_mask = [&](const std::vector<int64_t>& ids) {
    auto m = at::zeros({vocab}, at::kBool);
    for (int64_t id : ids)
      if (id >= 0 && id < vocab) m[id] = true;  // transformers ignores ids past the vocabulary too
    return m;
  };
  const auto always = suppress_mask(w.suppress_tokens), at_begin = suppress_mask(w.begin_suppress_tokens);
  c10::InferenceMode guard;
  GeneratedRows rows(prompts, gen_cfg);
  const at::Device device = model.device();
  auto ids = at::empty({rows.rows(), len}, at::kLong);
  for (int64_t b = 0; b < rows.rows(); ++b) ids[b].copy_(at::tensor(prompts[b], at::kLong));
  Seq2SeqCache cache;
  Seq2SeqInputs in;
  in.input_features = input_features;
  in.decoder_input_ids = ids.to(device);
  in.cache = &cache;
  auto gen = at::detail::createCPUGenerator(gen_cfg.seed);
  for (int64_t step = 0; step < gen_cfg.max_new_tokens; ++step) {
    const auto o = whisper.forward_seq2seq(in);
    if (!in.encoder_hidden_states.defined()) {
      in.encoder_hidden_states = o.encoder_last_hidden_state;
      in.input_features = at::Tensor();
    }
    const auto hidden = step == 0 ? always | at_begin : always;
    auto logits = o.logits.select(1, -1).to(at::kFloat).cpu().masked_fill(hidden, -std::numeric_limits<float>::infinity());
    at::Tensor next = next_tokens(logits, gen_cfg, gen);
    if (rows.append(next)) break;
    in.decoder_input_ids = next.to(device).unsqueeze(1);
  }
  return rows.take();
}

}  // namespace peft
