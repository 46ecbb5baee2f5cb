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

}  // namespace

GenerationConfig generation_defaults(Model& model, const std::string& model_path, std::vector<std::string>* not_applied) {
  namespace fs = std::filesystem;
  GenerationConfig g;
  const fs::path gen_file = fs::path(model_path) / "generation_config.json";
  const bool has_gen = fs::is_directory(model_path) && fs::is_regular_file(gen_file);
  const std::string file = has_gen ? gen_file.string() : (fs::path(model_path) / "config.json").string();
  const auto j = has_gen ? read_json_file(file) : model.config();
  if (!j.is_object()) throw std::runtime_error(file + ": not a JSON object");
  const bool seq2seq = as_seq2seq(model) != nullptr;
  g.top_k = 50;  // transformers' when it samples and the file is silent
  auto has = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  auto where = [&](const char* key) { return file + ": '" + key + "'"; };
  if (has("eos_token_id")) g.eos_token_ids = id_list(j["eos_token_id"], where("eos_token_id"));
  if (has("forced_bos_token_id")) g.forced_bos_token_id = strict_get<int64_t>(j["forced_bos_token_id"], where("forced_bos_token_id"));
  if (has("forced_eos_token_id")) g.forced_eos_token_ids = id_list(j["forced_eos_token_id"], where("forced_eos_token_id"));
  if (has_gen) {
    // The rest only from generation_config.json: transformers 5 drops them from config.json.
    if (has("num_beams")) g.num_beams = strict_get<int64_t>(j["num_beams"], where("num_beams"));
    // The beams' best answers; without beams it asks for draws, which this file cannot ask for
    // (do_sample is not applied): then it is listed as not applied.
    if (has("num_return_sequences")) {
      const auto n = strict_get<int64_t>(j["num_return_sequences"], where("num_return_sequences"));
      if (g.num_beams > 1) g.num_return_sequences = n;
      else if (n > 1 && not_applied) not_applied->push_back("num_return_sequences");
    }
    if (has("length_penalty")) g.length_penalty = strict_get<double>(j["length_penalty"], where("length_penalty"));
    if (has("early_stopping")) {
      const auto& e = j["early_stopping"];
      if (e.is_string() && e.get<std::string>() == "never")
        g.early_stopping = GenerationConfig::EarlyStopping::kNever;
      else if (e.is_boolean())
        g.early_stopping = e.get<bool>() ? GenerationConfig::EarlyStopping::kFinished
                                         : GenerationConfig::EarlyStopping::kHeuristic;
      else
        throw std::runtime_error(where("early_stopping") + " must be true, false or \"never\", got " + quote_json(e));
    }
    if (has("no_repeat_ngram_size"))
      g.no_repeat_ngram_size = strict_get<int64_t>(j["no_repeat_ngram_size"], where("no_repeat_ngram_size"));
    if (has("min_length")) g.min_length = strict_get<int64_t>(j["min_length"], where("min_length"));
    if (has("min_new_tokens")) g.min_new_tokens = strict_get<int64_t>(j["min_new_tokens"], where("min_new_tokens"));
    if (has("max_new_tokens")) {
      g.max_new_tokens = strict_get<int64_t>(j["max_new_tokens"], where("max_new_tokens"));
    } else if (seq2seq && has("max_length")) {
      g.max_new_tokens = strict_get<int64_t>(j["max_length"], where("max_length")) - 1;  // decoder_start counts
      if (g.max_new_tokens < 0) throw std::runtime_error(where("max_length") + " must be >= 1");
    }
    if (has("repetition_penalty"))
      g.repetition_penalty = strict_get<double>(j["repetition_penalty"], where("repetition_penalty"));
    read_sampling(j, g, where, not_applied);
    if (has("bad_words_ids")) g.bad_words_ids = id_lists(j["bad_words_ids"], where("bad_words_ids"));
    if (has("sequence_bias")) g.sequence_bias = sequence_biases(j["sequence_bias"], where("sequence_bias"));
    if (has("suppress_tokens")) g.suppress_tokens = ids_array(j["suppress_tokens"], where("suppress_tokens"));
    if (has("begin_suppress_tokens"))
      g.begin_suppress_tokens = ids_array(j["begin_suppress_tokens"], where("begin_suppress_tokens"));
    if (not_applied)
      for (const auto& [key, v] : j.items())
        if (changes_output(key, v)) not_applied->push_back(key);
  }
  try {
    g.validate();
  } catch (const std::exception& e) {
    throw std::runtime_error(file + ": " + e.what());
  }
  // A forced, banned or biased token outside the vocabulary would fail at some step (as in
  // transformers); say so now.
  if (const Embedding* emb = model.input_embeddings()) {
    auto check = [&](const std::vector<int64_t>& ids, const char* keys) {
      for (int64_t id : ids)
        if (id >= emb->num_embeddings)
          throw std::runtime_error(file + ": token id " + std::to_string(id) + " is outside the vocabulary of " +
                                   std::to_string(emb->num_embeddings) + " (" + keys + ")");
    };
    check(g.forced_eos_token_ids, "'forced_eos_token_id'");
    if (g.forced_bos_token_id >= 0) check({g.forced_bos_token_id}, "'forced_bos_token_id'");
    for (const auto& seq : g.bad_words_ids) check(seq, "'bad_words_ids'");
    for (const auto& [seq, b] : g.sequence_bias) check(seq, "'sequence_bias'");
  }
  return g;
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
