// peft transcribe MODEL_DIR AUDIO... | --data DATA.jsonl [--adapter DIR]: speech to text with a
// Whisper model, as transformers' generate + batch_decode(skip_special_tokens) give it; with
// references ({"audio", "text"} lines), the word error rate.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include "common.h"
#include "peft/audio.h"
#include "peft/seq2seq.h"
#include "peft/tokenizer.h"
#include "peft/whisper.h"
#include "serve/word_error_rate.h"
#include "util/atomic_file.h"
#include "util/json_file.h"
#include "util/jsonl.h"

namespace peft::cli {

namespace {

namespace fs = std::filesystem;

struct TranscribeArgs {
  ModelArgs model;
  AdapterArgs adapters;
  std::vector<std::string> audio;
  std::string data, metrics, language, task;
  int64_t batch_size = 8, max_new_tokens = 0;
};

struct Utterance {
  std::string audio, reference;  // reference: "" without one
  bool has_reference = false;
};

// {"audio": path, "text": reference} lines (text optional); paths relative to the file.
std::vector<Utterance> read_utterances(const std::string& path) {
  std::vector<Utterance> out;
  for_each_jsonl_line(path, [&](const nlohmann::json& j, const std::string& where) {
    if (!j.is_object() || !j.contains("audio")) throw std::runtime_error(where + ": expected {\"audio\": path, \"text\": \"...\"}");
    const fs::path audio = strict_get<std::string>(j.at("audio"), where + ": \"audio\"");
    Utterance u{jsonl_relative(path, audio), "", j.contains("text")};
    if (u.has_reference) u.reference = strict_get<std::string>(j.at("text"), where + ": \"text\"");
    out.push_back(std::move(u));
  });
  if (out.empty()) throw std::runtime_error(path + ": no utterances");
  return out;
}

void run_transcribe(const TranscribeArgs& a) {
  if (a.audio.empty() == a.data.empty()) throw std::runtime_error("give audio files or --data, not both");
  if (a.batch_size < 1 || a.max_new_tokens < 0) throw std::runtime_error("--batch-size must be >= 1, --max-new-tokens >= 0");
  std::vector<Utterance> utts;
  if (!a.data.empty()) utts = read_utterances(a.data);
  for (const auto& p : a.audio) utts.push_back({p, "", false});
  const auto base = a.model.load();
  const auto peft = a.adapters.apply(base);  // nullptr without --adapter
  Model& model = *base;
  auto* s2s = as_seq2seq(model);
  if (!s2s || !s2s->reads_audio()) throw std::runtime_error(a.model.dir + ": not a speech model (Whisper)");
  const auto features_cfg = read_whisper_feature_config(a.model.dir);
  const auto tokenizer = Tokenizer::from_file(a.model.dir);
  auto wcfg = WhisperGenerationConfig::load(a.model.dir);
  if (!a.language.empty()) wcfg.language = a.language;
  if (!a.task.empty()) wcfg.task = a.task;
  if (peft) peft->train(false);  // adapters start in eval mode; this makes it sure
  c10::InferenceMode guard;
  WordErrors wer;
  int64_t with_reference = 0;
  for (size_t i = 0; i < utts.size(); i += static_cast<size_t>(a.batch_size)) {
    const size_t end = std::min(utts.size(), i + static_cast<size_t>(a.batch_size));
    std::vector<at::Tensor> rows;
    for (size_t k = i; k < end; ++k) rows.push_back(whisper_log_mel(load_audio(utts[k].audio, features_cfg.sampling_rate), features_cfg));
    const auto features = at::stack(rows).to(at::Device(a.model.device));
    GenerationConfig gen;
    // 0: as many as the decoder's positions leave after the prompt (transformers' max_length)
    gen.max_new_tokens = a.max_new_tokens > 0 ? a.max_new_tokens
                                              : s2s->max_target_positions() - static_cast<int64_t>(whisper_prompts(model, features, wcfg).front().size());
    const auto out = generate_whisper(model, features, wcfg, gen);
    for (size_t k = i; k < end; ++k) {
      std::string text = tokenizer.decode(out[k - i], true);
      text.erase(0, text.find_first_not_of(" \t\n"));
      text.erase(text.find_last_not_of(" \t\n") + 1);
      nlohmann::json line = {{"audio", utts[k].audio}, {"transcript", text}};
      if (utts[k].has_reference) {
        line["reference"] = utts[k].reference;
        wer.add(utts[k].reference, text);
        ++with_reference;
      }
      std::cout << line.dump() << "\n" << std::flush;
    }
    std::cerr << "transcribed " << end << "/" << utts.size() << "\n";
  }
  if (with_reference == 0) return;
  nlohmann::json m = {{"wer", wer.rate()}, {"word_errors", wer.errors}, {"words", wer.words}, {"utterances", with_reference}};
  std::cerr << "WER " << wer.rate() * 100 << "% (" << wer.errors << " word errors in " << wer.words << " words, "
            << with_reference << " utterances)\n";
  if (!a.metrics.empty()) write_json_atomic(a.metrics, m);
}

}  // namespace

void register_transcribe(CLI::App& app) {
  auto a = std::make_shared<TranscribeArgs>();
  auto* cmd = app.add_subcommand("transcribe", "Speech to text with a Whisper model (and adapters); WER against references");
  a->model.add_to(cmd);
  a->adapters.add_to(cmd);
  cmd->add_option("audio", a->audio, "Audio files libsndfile reads (WAV, FLAC, OGG)");
  cmd->add_option("--data", a->data, "JSONL of {\"audio\": path, \"text\": reference}: transcribed, and the WER reported")
      ->check(CLI::ExistingFile);
  cmd->add_option("--metrics", a->metrics, "With --data: write {wer, word_errors, words, utterances} to this JSON file");
  cmd->add_option("--batch-size", a->batch_size, "Utterances per generate call")->capture_default_str();
  cmd->add_option("--max-new-tokens", a->max_new_tokens, "Tokens per transcript at most (0: what the decoder has room for)")
      ->capture_default_str();
  cmd->add_option("--language", a->language, "Language, e.g. en (multilingual models; default: the config's, or detected)");
  cmd->add_option("--task", a->task, "transcribe or translate (multilingual models; default: the config's)");
  cmd->footer("Prints one JSON line per utterance: {\"audio\", \"transcript\"} (and \"reference\" with --data).\n"
              "The WER is word-level edit distance over the references' words, lowercased, punctuation removed.\n"
              "Example: peft transcribe ./whisper-tiny --adapter runs/digits --data eval.jsonl --metrics wer.json");
  cmd->callback([a] { run_transcribe(*a); });
}

}  // namespace peft::cli
