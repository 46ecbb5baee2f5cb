// A model folder's generation defaults, read as transformers' from_pretrained reads them.
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "peft/generate.h"
#include "peft/layers.h"
#include "peft/seq2seq.h"
#include "util/json_file.h"

namespace peft {

namespace {

// An id or a list of ids (eos_token_id, forced_eos_token_id); null: none.
std::vector<int64_t> id_list(const nlohmann::json& v, const std::string& where) {
  std::vector<int64_t> ids;
  if (v.is_null()) return ids;
  if (!v.is_array()) return {strict_get<int64_t>(v, where)};
  for (const auto& x : v) ids.push_back(strict_get<int64_t>(x, where));
  return ids;
}

}  // namespace

GenerationConfig generation_defaults(Model& model, const std::string& model_path) {
  namespace fs = std::filesystem;
  GenerationConfig g;
  const fs::path gen_file = fs::path(model_path) / "generation_config.json";
  const bool has_gen = fs::is_directory(model_path) && fs::is_regular_file(gen_file);
  const std::string file = has_gen ? gen_file.string() : (fs::path(model_path) / "config.json").string();
  const auto j = has_gen ? read_json_file(file) : model.config();
  if (!j.is_object()) throw std::runtime_error(file + ": not a JSON object");
  const bool seq2seq = as_seq2seq(model) != nullptr;
  auto has = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  auto where = [&](const char* key) { return file + ": '" + key + "'"; };
  if (has("eos_token_id")) g.eos_token_ids = id_list(j["eos_token_id"], where("eos_token_id"));
  if (has("forced_bos_token_id")) g.forced_bos_token_id = strict_get<int64_t>(j["forced_bos_token_id"], where("forced_bos_token_id"));
  if (has("forced_eos_token_id")) g.forced_eos_token_ids = id_list(j["forced_eos_token_id"], where("forced_eos_token_id"));
  if (has_gen) {
    // The rest only from generation_config.json: transformers 5 drops them from config.json.
    if (has("num_beams")) g.num_beams = strict_get<int64_t>(j["num_beams"], where("num_beams"));
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
  }
  try {
    g.validate();
  } catch (const std::exception& e) {
    throw std::runtime_error(file + ": " + e.what());
  }
  // A forced token outside the vocabulary would fail at the first or last step; say so now.
  if (const Embedding* emb = model.input_embeddings()) {
    std::vector<int64_t> forced = g.forced_eos_token_ids;
    if (g.forced_bos_token_id >= 0) forced.push_back(g.forced_bos_token_id);
    for (int64_t id : forced)
      if (id >= emb->num_embeddings)
        throw std::runtime_error(file + ": forced token id " + std::to_string(id) + " is outside the vocabulary of " +
                                 std::to_string(emb->num_embeddings) + " ('forced_bos_token_id' / 'forced_eos_token_id')");
  }
  return g;
}

}  // namespace peft
