// preprocessor_config.json into a WhisperFeatureConfig, with WhisperFeatureExtractor's
// defaults and bounds that keep a hostile file from asking for unbounded memory.
#include <filesystem>
#include <stdexcept>

#include "peft/audio.h"
#include "util/json_file.h"

namespace peft {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Reads `key` into `out` when the file has it (null means "use the default", as
// transformers' keyword arguments do), and checks it against [lo, hi].
void read_int(const json& j, const char* key, int64_t lo, int64_t hi, const std::string& where, int64_t& out) {
  if (!j.contains(key) || j[key].is_null()) return;
  const int64_t v = strict_get<int64_t>(j[key], where + key);
  if (v < lo || v > hi)
    throw std::runtime_error(where + key + " is " + std::to_string(v) + ", outside [" + std::to_string(lo) + ", " +
                             std::to_string(hi) + "]");
  out = v;
}

}  // namespace

WhisperFeatureConfig read_whisper_feature_config(const std::string& folder_or_file) {
  fs::path file = folder_or_file;
  if (fs::is_directory(file)) file /= "preprocessor_config.json";
  const auto j = read_json_file(file.string());
  const std::string where = file.string() + ": ";
  if (!j.is_object()) throw std::runtime_error(where + "expected a JSON object");
  // The class is what feature_extractor_type names (processor_class may be another
  // model's processor that wraps WhisperFeatureExtractor).
  if (j.contains("feature_extractor_type") && !j["feature_extractor_type"].is_null()) {
    const auto type = strict_get<std::string>(j["feature_extractor_type"], where + "feature_extractor_type");
    if (type != "WhisperFeatureExtractor")
      throw std::runtime_error(where + "feature_extractor_type is \"" + type + "\"; WhisperFeatureExtractor is supported");
  }
  WhisperFeatureConfig c;
  read_int(j, "feature_size", 1, 512, where, c.feature_size);
  read_int(j, "sampling_rate", kMinAudioSampleRate, kMaxAudioSampleRate, where, c.sampling_rate);
  read_int(j, "hop_length", 1, 1 << 16, where, c.hop_length);
  read_int(j, "n_fft", 2, 1 << 16, where, c.n_fft);
  read_int(j, "chunk_length", 1, 3600, where, c.chunk_length);
  int64_t ignored = 0;  // transformers recomputes both from chunk_length and sampling_rate
  read_int(j, "n_samples", 0, INT64_MAX, where, ignored);
  read_int(j, "nb_max_frames", 0, INT64_MAX, where, ignored);
  if (j.contains("padding_value") && !j["padding_value"].is_null())
    c.padding_value = strict_get<double>(j["padding_value"], where + "padding_value");
  if (j.contains("dither") && !j["dither"].is_null() && strict_get<double>(j["dither"], where + "dither") != 0.0)
    throw std::runtime_error(where + "dither is " + j["dither"].dump() +
                             ": dithering adds random noise, which cannot be reproduced; set it to 0.0");
  if (c.n_samples() > kMaxAudioFrames)
    throw std::runtime_error(where + "chunk_length * sampling_rate = " + std::to_string(c.n_samples()) +
                             " samples, more than the limit of " + std::to_string(kMaxAudioFrames));
  if (c.n_samples() <= c.n_fft / 2 || c.num_frames() < 1)
    throw std::runtime_error(where + "chunk_length * sampling_rate = " + std::to_string(c.n_samples()) +
                             " samples is too short for n_fft " + std::to_string(c.n_fft) + " and hop_length " +
                             std::to_string(c.hop_length));
  // The STFT holds (frames + 1) x (n_fft / 2 + 1) complex doubles: at most 512 MiB.
  if ((c.num_frames() + 1) * (c.n_fft / 2 + 1) > (int64_t{1} << 25))
    throw std::runtime_error(where + "n_fft " + std::to_string(c.n_fft) + " with hop_length " + std::to_string(c.hop_length) +
                             " over " + std::to_string(c.n_samples()) + " samples makes a spectrogram too large");
  return c;
}

}  // namespace peft
