// A model folder's generation defaults, read as transformers' from_pretrained reads them.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "peft/generate.h"
#include "peft/layers.h"
#include "peft/seq2seq.h"
#include "util/json_file.h"

namespace peft {

namespace {

// A list of token ids ([1, 2]).
std::vector<int64_t> ids_array(const nlohmann::json& v, const std::string& where) {
  if (!v.is_array()) throw std::runtime_error(where + " must be a list of token ids, got " + quote_json(v));
  std::vector<int64_t> ids;
  for (const auto& x : v) ids.push_back(strict_get<int64_t>(x, where));
  return ids;
}

// An id or a list of ids (eos_token_id, forced_eos_token_id); null: none.
std::vector<int64_t> id_list(const nlohmann::json& v, const std::string& where) {
  if (v.is_null()) return {};
  if (!v.is_array()) return {strict_get<int64_t>(v, where)};
  return ids_array(v, where);
}

// A list of token-id lists ([[1], [2, 3]]).
std::vector<std::vector<int64_t>> id_lists(const nlohmann::json& v, const std::string& where) {
  if (!v.is_array()) throw std::runtime_error(where + " must be a list of token-id lists, got " + quote_json(v));
  std::vector<std::vector<int64_t>> out;
  for (const auto& x : v) out.push_back(ids_array(x, where));
  return out;
}

// transformers' sequence_bias: a list of [[token ids], bias] pairs.
std::vector<std::pair<std::vector<int64_t>, double>> sequence_biases(const nlohmann::json& v, const std::string& where) {
  if (!v.is_array()) throw std::runtime_error(where + " must be a list of [[token ids], bias] pairs");
  std::vector<std::pair<std::vector<int64_t>, double>> out;
  for (const auto& x : v) {
    if (!x.is_array() || x.size() != 2)
      throw std::runtime_error(where + " must be a list of [[token ids], bias] pairs, got " + quote_json(x));
    out.emplace_back(ids_array(x[0], where), strict_get<double>(x[1], where));
  }
  return out;
}

// Keys of generation_config.json that change what transformers' generate() produces but
// are not applied here, with the value at which they change nothing.
bool changes_output(const std::string& key, const nlohmann::json& v) {
  if (v.is_null()) return false;
  if (key == "do_sample" || key == "renormalize_logits" || key == "token_healing") return v == true;
  if (key == "encoder_repetition_penalty" || key == "guidance_scale") return v != 1 && v != 1.0;
  if (key == "num_beam_groups") return v.is_number() && v > 1;
  if (key == "encoder_no_repeat_ngram_size" || key == "diversity_penalty" || key == "penalty_alpha")
    return v.is_number() && v != 0;
  // Sampling filters after min-p (transformers applies them when it samples).
  if (key == "typical_p") return v.is_number() && v < 1;
  if (key == "epsilon_cutoff" || key == "eta_cutoff") return v.is_number() && v > 0 && v < 1;
  if (key == "top_h") return true;
  return key == "exponential_decay_length_penalty" || key == "stop_strings" || key == "watermarking_config" ||
         key == "constraints" || key == "force_words_ids" || key == "dola_layers" || key == "max_time";
}


GenerationConfig::EarlyStopping early_stopping_of(const nlohmann::json& e, const std::string& where) {
  if (e.is_string() && e.get<std::string>() == "never") return GenerationConfig::EarlyStopping::kNever;
  if (!e.is_boolean()) throw std::runtime_error(where + " must be true, false or \"never\", got " + quote_json(e));
  return e.get<bool>() ? GenerationConfig::EarlyStopping::kFinished : GenerationConfig::EarlyStopping::kHeuristic;
}

// The generation keys applied here, by their name in generation_config.json and in
// transformers' generate(**kwargs), each with how it is read into a GenerationConfig.
// max_length is apart: what it means depends on the model.
struct GenerationKey {
  const char* name;
  enum Source { kAnyConfig, kGenerationConfig, kSampling, kCallOnly } source;
  void (*read)(const nlohmann::json& v, GenerationConfig& g, const std::string& where);
};

constexpr GenerationKey kGenerationKeys[] = {
    // config.json's generation keys count too (transformers 5 drops the rest from it).
    {"eos_token_id", GenerationKey::kAnyConfig,
     [](const auto& v, auto& g, const auto& w) { g.eos_token_ids = id_list(v, w); }},
    {"forced_bos_token_id", GenerationKey::kAnyConfig,
     [](const auto& v, auto& g, const auto& w) { g.forced_bos_token_id = strict_get<int64_t>(v, w); }},
    {"forced_eos_token_id", GenerationKey::kAnyConfig,
     [](const auto& v, auto& g, const auto& w) { g.forced_eos_token_ids = id_list(v, w); }},
    {"max_new_tokens", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.max_new_tokens = strict_get<int64_t>(v, w); }},
    {"num_beams", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.num_beams = strict_get<int64_t>(v, w); }},
    {"num_return_sequences", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.num_return_sequences = strict_get<int64_t>(v, w); }},
    {"length_penalty", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.length_penalty = strict_get<double>(v, w); }},
    {"early_stopping", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.early_stopping = early_stopping_of(v, w); }},
    {"no_repeat_ngram_size", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.no_repeat_ngram_size = strict_get<int64_t>(v, w); }},
    {"min_length", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.min_length = strict_get<int64_t>(v, w); }},
    {"min_new_tokens", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.min_new_tokens = strict_get<int64_t>(v, w); }},
    {"repetition_penalty", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.repetition_penalty = strict_get<double>(v, w); }},
    {"bad_words_ids", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.bad_words_ids = id_lists(v, w); }},
    {"sequence_bias", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.sequence_bias = sequence_biases(v, w); }},
    {"suppress_tokens", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.suppress_tokens = ids_array(v, w); }},
    {"begin_suppress_tokens", GenerationKey::kGenerationConfig,
     [](const auto& v, auto& g, const auto& w) { g.begin_suppress_tokens = ids_array(v, w); }},
    // Read from a file only within sampling's range (see read_sampling).
    {"temperature", GenerationKey::kSampling,
     [](const auto& v, auto& g, const auto& w) { g.temperature = strict_get<double>(v, w); }},
    {"top_k", GenerationKey::kSampling, [](const auto& v, auto& g, const auto& w) { g.top_k = strict_get<int64_t>(v, w); }},
    {"top_p", GenerationKey::kSampling, [](const auto& v, auto& g, const auto& w) { g.top_p = strict_get<double>(v, w); }},
    {"min_p", GenerationKey::kSampling, [](const auto& v, auto& g, const auto& w) { g.min_p = strict_get<double>(v, w); }},
    // The caller's choices: a file's do_sample is not applied (decoding stays deterministic
    // unless asked), and its pad_token_id changes nothing returned.
    {"do_sample", GenerationKey::kCallOnly,
     [](const auto& v, auto& g, const auto& w) { g.do_sample = strict_get<bool>(v, w); }},
    {"seed", GenerationKey::kCallOnly, [](const auto& v, auto& g, const auto& w) { g.seed = strict_get<uint64_t>(v, w); }},
    {"pad_token_id", GenerationKey::kCallOnly,
     [](const auto& v, auto& g, const auto& w) { g.pad_token_id = strict_get<int64_t>(v, w); }},
};

// The sampling settings, used when the caller samples. A value out of sampling's range
// (configs of greedy models hold temperature 0 or top_p 0, which transformers only warns
// about) keeps transformers' default and is listed in `not_applied`.
void read_sampling(const nlohmann::json& j, GenerationConfig& g, const std::function<std::string(const char*)>& where,
                   std::vector<std::string>* not_applied) {
  auto read = [&](const char* key, auto& slot, auto in_range) {
    if (!j.contains(key) || j[key].is_null()) return;
    const auto v = strict_get<std::decay_t<decltype(slot)>>(j[key], where(key));
    if (in_range(v)) slot = v;
    else if (not_applied) not_applied->push_back(key);
  };
  read("temperature", g.temperature, [](double v) { return v > 0 && std::isfinite(v); });
  read("top_k", g.top_k, [](int64_t v) { return v >= 0; });
  read("top_p", g.top_p, [](double v) { return v > 0 && v <= 1; });
  read("min_p", g.min_p, [](double v) { return v >= 0 && v <= 1; });
}

// A forced, banned or biased token outside the vocabulary would fail at some step (as in
// transformers); say so before generating.
void check_vocabulary(Model& model, const GenerationConfig& g, const std::string& where) {
  const Embedding* emb = model.input_embeddings();
  if (!emb) return;
  auto check = [&](const std::vector<int64_t>& ids, const char* keys) {
    for (int64_t id : ids)
      if (id >= emb->num_embeddings)
        throw std::runtime_error(where + ": token id " + std::to_string(id) + " is outside the vocabulary of " +
                                 std::to_string(emb->num_embeddings) + " (" + keys + ")");
  };
  check(g.forced_eos_token_ids, "'forced_eos_token_id'");
  if (g.forced_bos_token_id >= 0) check({g.forced_bos_token_id}, "'forced_bos_token_id'");
  for (const auto& seq : g.bad_words_ids) check(seq, "'bad_words_ids'");
  for (const auto& [seq, b] : g.sequence_bias) check(seq, "'sequence_bias'");
}

void validate_for(Model& model, const GenerationConfig& g, const std::string& where) {
  try {
    g.validate();
  } catch (const std::exception& e) {
    throw std::runtime_error(where + ": " + e.what());
  }
  check_vocabulary(model, g, where);
}

}  // namespace

GenerationConfig generation_defaults(Model& model, const std::string& model_path, std::vector<std::string>* not_applied) {
  namespace fs = std::filesystem;
  GenerationConfig g;
  const fs::path gen_file = fs::path(model_path) / "generation_config.json";
  const bool has_gen = fs::is_directory(model_path) && fs::is_regular_file(gen_file);
  const std::string file = has_gen ? gen_file.string() : (fs::path(model_path) / "config.json").string();
  const auto j = has_gen ? read_json_file(file) : model.config();
  if (!j.is_object()) throw std::runtime_error(file + ": not a JSON object");
  g.top_k = 50;  // transformers' when it samples and the file is silent
  auto has = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  auto where = [&](const char* key) { return file + ": '" + key + "'"; };
  for (const auto& k : kGenerationKeys) {
    const bool read = k.source == GenerationKey::kAnyConfig || (has_gen && k.source == GenerationKey::kGenerationConfig);
    if (read && has(k.name)) k.read(j[k.name], g, where(k.name));
  }
  if (has_gen) {
    // An encoder-decoder's max_length counts decoder_start.
    if (!has("max_new_tokens") && as_seq2seq(model) && has("max_length")) {
      g.max_new_tokens = strict_get<int64_t>(j["max_length"], where("max_length")) - 1;
      if (g.max_new_tokens < 0) throw std::runtime_error(where("max_length") + " must be >= 1");
    }
    // The beams' best answers; without beams it asks for draws, which this file cannot ask
    // for (do_sample is not applied).
    if (g.num_beams <= 1 && g.num_return_sequences != 1) {
      if (g.num_return_sequences > 1 && not_applied) not_applied->push_back("num_return_sequences");
      g.num_return_sequences = 1;
    }
    read_sampling(j, g, where, not_applied);
    if (not_applied)
      for (const auto& [key, v] : j.items())
        if (changes_output(key, v)) not_applied->push_back(key);
  }
  validate_for(model, g, file);
  return g;
}

void apply_generation_kwargs(Model& model, const nlohmann::json& kwargs, const std::string& where,
                             GenerationConfig& g) {
  if (!kwargs.is_object()) throw std::invalid_argument(where + ": the arguments must be an object of name: value");
  auto given = [&](const char* key) { return kwargs.contains(key) && !kwargs[key].is_null(); };
  for (const auto& [key, v] : kwargs.items()) {
    const auto* k = std::find_if(std::begin(kGenerationKeys), std::end(kGenerationKeys),
                                 [&](const GenerationKey& x) { return key == x.name; });
    if (k != std::end(kGenerationKeys)) {
      // None resets an id list (eos_token_id=None: no stop token), as in transformers.
      if (!v.is_null() || key == "eos_token_id" || key == "forced_eos_token_id") k->read(v, g, where + ": '" + key + "'");
      else if (key == "forced_bos_token_id") g.forced_bos_token_id = -1;
    } else if (key == "max_length") {
      if (!as_seq2seq(model))
        throw std::invalid_argument(where + ": 'max_length' counts the prompt, which differs by row here; give "
                                    "max_new_tokens");
      g.max_new_tokens = strict_get<int64_t>(v, where + ": 'max_length'") - 1;  // decoder_start counts
      if (g.max_new_tokens < 0) throw std::invalid_argument(where + ": 'max_length' must be >= 1");
    } else {
      throw std::invalid_argument(where + ": unknown or unsupported argument '" + key + "'" +
                                  (changes_output(key, v) ? " (not applied here)" : ""));
    }
  }
  if (g.do_sample && !given("num_beams")) g.num_beams = 1;  // asked to sample: the model's beams give way
  if (!given("num_return_sequences") && g.num_return_sequences > g.num_beams)
    g.num_return_sequences = 1;  // the model's, for beams no longer run
  validate_for(model, g, where);
}

std::string ServingDefaults::describe() const {
  std::string out;
  auto add = [&](const char* key, const auto& v) {
    if (!v) return;
    std::ostringstream s;
    s << (out.empty() ? "" : ", ") << key << " " << *v;
    out += s.str();
  };
  add("temperature", temperature);
  add("top_k", top_k);
  add("top_p", top_p);
  add("min_p", min_p);
  add("repetition_penalty", repetition_penalty);
  add("max_new_tokens", max_new_tokens);
  return out;
}

ServingDefaults serving_defaults(Model& model, const std::string& model_path) {
  namespace fs = std::filesystem;
  std::vector<std::string> not_applied;
  const GenerationConfig g = generation_defaults(model, model_path, &not_applied);  // checks every key it reads
  ServingDefaults d;
  d.eos_token_ids = g.eos_token_ids;
  const fs::path gen_file = fs::path(model_path) / "generation_config.json";
  if (!fs::is_directory(model_path) || !fs::is_regular_file(gen_file)) return d;
  const auto j = read_json_file(gen_file.string());
  auto has = [&](const char* key) {
    return j.contains(key) && !j[key].is_null() &&
           std::find(not_applied.begin(), not_applied.end(), key) == not_applied.end();
  };
  if (has("temperature")) d.temperature = g.temperature;
  if (has("top_k")) d.top_k = g.top_k;
  if (has("top_p")) d.top_p = g.top_p;
  if (has("min_p")) d.min_p = g.min_p;
  if (has("repetition_penalty")) d.repetition_penalty = g.repetition_penalty;
  if (has("max_new_tokens")) d.max_new_tokens = g.max_new_tokens;
  return d;
}

}  // namespace peft
