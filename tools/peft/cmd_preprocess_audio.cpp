// peft preprocess-audio AUDIO... --processor MODEL_DIR --out FEATURES.npy: audio files
// (WAV, FLAC, OGG, ...) loaded as transformers' load_audio does (mono, resampled to the
// processor's rate) and turned into WhisperFeatureExtractor's input_features.
#include <ATen/ATen.h>

#include <filesystem>
#include <iostream>

#include "common.h"
#include "peft/audio.h"
#include "peft/npy.h"
#include "peft/safetensors.h"

namespace peft::cli {

namespace {

struct PreprocessAudioArgs {
  std::string processor, out;
  std::vector<std::string> audio;
  bool overwrite = false;
};

void run_preprocess_audio(const PreprocessAudioArgs& a) {
  const bool npy = a.out.ends_with(".npy");
  if (!npy && !a.out.ends_with(".safetensors"))
    throw std::runtime_error(a.out + ": --out must end in .npy or .safetensors");
  if (!a.overwrite && std::filesystem::exists(a.out))
    throw std::runtime_error(a.out + ": exists (pass --overwrite to replace it)");
  const auto cfg = read_whisper_feature_config(a.processor);
  std::vector<at::Tensor> features;
  for (const auto& path : a.audio) {
    try {
      features.push_back(whisper_log_mel(load_audio(path, cfg.sampling_rate), cfg));
    } catch (const std::bad_alloc&) {
      throw std::runtime_error(path + ": out of memory preprocessing the audio");
    }
  }
  const auto input_features = at::stack(features);
  if (npy) save_npy(a.out, input_features);
  else save_safetensors(a.out, {{"input_features", input_features}}, {{"format", "pt"}});
  std::cerr << "wrote " << a.out << ": input_features " << input_features.sizes() << " (WhisperFeatureExtractor, "
            << cfg.feature_size << " mel bins at " << cfg.sampling_rate << " Hz)\n";
}

}  // namespace

void register_preprocess_audio(CLI::App& app) {
  auto a = std::make_shared<PreprocessAudioArgs>();
  auto* cmd = app.add_subcommand("preprocess-audio",
                                 "Turn audio files into a Whisper model's log-mel input_features (its preprocessor_config.json)");
  cmd->add_option("audio", a->audio, "Audio files libsndfile reads (WAV, FLAC, OGG); mixed to mono, resampled")->required();
  cmd->add_option("--processor", a->processor, "Model folder with preprocessor_config.json (or the file itself)")->required();
  cmd->add_option("--out", a->out, "Output .npy (or .safetensors with input_features): float32 [N, mel bins, frames]")
      ->required();
  cmd->add_flag("--overwrite", a->overwrite, "Replace --out if it exists");
  cmd->footer("Example: peft preprocess-audio speech.wav call.flac --processor ./whisper-tiny --out features.npy\n"
              "         (features.npy: float32 [2, 80, 3000], what WhisperFeatureExtractor gives for the same files)");
  cmd->callback([a] { run_preprocess_audio(*a); });
}

}  // namespace peft::cli
