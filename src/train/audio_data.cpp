// Speech recognition examples from {"audio", "text"} JSONL (train/audio_data.h).
#include "train/audio_data.h"

#include <filesystem>
#include <stdexcept>

#include "peft/audio.h"
#include "util/json_file.h"
#include "util/jsonl.h"

namespace peft {
namespace {

namespace fs = std::filesystem;

// The text's label ids: the tokenizer's own (prompt, text, end of text), without a
// leading decoder_start.
std::vector<int64_t> label_ids(const std::string& text, const DataOptions& o, const std::string& where) {
  auto ids = o.tokenizer->encode(text).ids;
  if (!ids.empty() && ids.front() == o.decoder_start_token_id) ids.erase(ids.begin());
  if (ids.empty()) throw std::runtime_error(where + ": the text tokenizes to nothing");
  // The decoder reads decoder_start and the labels but the last: labels.size() positions.
  if (o.max_target_positions > 0 && static_cast<int64_t>(ids.size()) > o.max_target_positions)
    throw std::runtime_error(where + ": the text is " + std::to_string(ids.size()) +
                             " tokens with the decoder prompt; the model's decoder takes " +
                             std::to_string(o.max_target_positions));
  return ids;
}

}  // namespace

bool is_audio_jsonl(const std::string& path) { return jsonl_first_object_has(path, "audio"); }

std::vector<Example> load_audio_text_jsonl(const std::string& path, const DataOptions& o) {
  if (!o.tokenizer) throw std::runtime_error(path + ": {\"audio\", \"text\"} lines need the model's tokenizer.json");
  const auto features = read_whisper_feature_config(o.model_dir);
  std::vector<Example> out;
  for_each_jsonl_line(path, [&](const nlohmann::json& j, const std::string& where) {
    if (!j.is_object() || !j.contains("audio") || !j.contains("text"))
      throw std::runtime_error(where + ": expected {\"audio\": path, \"text\": \"...\"}");
    const fs::path audio = strict_get<std::string>(j.at("audio"), where + ": \"audio\"");
    Example ex;
    ex.seq2seq = true;
    ex.labels = label_ids(strict_get<std::string>(j.at("text"), where + ": \"text\""), o, where);
    try {
      ex.input_features = whisper_log_mel(load_audio(jsonl_relative(path, audio), features.sampling_rate), features);
    } catch (const std::bad_alloc&) {
      throw std::runtime_error(where + ": out of memory preprocessing the audio");
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(where + ": " + e.what());
    }
    out.push_back(std::move(ex));
  });
  if (out.empty()) throw std::runtime_error(path + ": no examples");
  return out;
}

}  // namespace peft
