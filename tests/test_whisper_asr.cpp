// Speech recognition training and transcription with Whisper (issue 18), against
// transformers' fine-tuning recipe (fixtures from tests/parity/make_whisper_asr.py: a
// random tiny English-only Whisper with a byte-level BPE Whisper tokenizer, a 1 s
// WhisperFeatureExtractor and six 22050 Hz recordings with their texts):
//  - {"audio", "text"} JSONL gives transformers' input_features, labels (the tokenizer's
//    prompt and <|endoftext|>, the leading <|startoftranscript|> dropped as the speech
//    collator drops it) and loss;
//  - `peft train` trains LoRA and a bottleneck audio adapter on it, and `peft transcribe`
//    of the trained adapter gives HF PEFT + generate's transcripts, with the WER;
//  - the word error rate itself, and bad data refused by its line.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_runner.h"
#include "peft/safetensors.h"
#include "peft/tokenizer.h"
#include "serve/word_error_rate.h"
#include "test_util.h"
#include "train/audio_data.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

fs::path base_dir() { return fs::path(PEFT_WHISPER_ASR_DIR) / "whisper_asr"; }
fs::path data_file() { return base_dir() / "data" / "train.jsonl"; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "whisper_asr" / name;
  fs::create_directories(p.parent_path());
  fs::remove_all(p);
  return p;
}

json last_json_line(const std::string& output) {
  std::istringstream in(output);
  json last;
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') last = json::parse(line);
  return last;
}

std::vector<json> json_lines(const std::string& output) {
  std::istringstream in(output);
  std::vector<json> out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') out.push_back(json::parse(line));
  return out;
}

double train_and_eval(const std::string& method, const fs::path& out, double lr) {
  const auto cfg = out.string() + ".json";
  std::ofstream(cfg) << json{{"model", base_dir().string()},
                             {"train_file", data_file().string()},
                             {"output_dir", out.string()},
                             {"method", json::parse(method)},
                             {"learning_rate", lr},
                             {"num_train_epochs", 60},
                             {"per_device_train_batch_size", 6},
                             {"logging_steps", 20},
                             {"seed", 1}}
                              .dump();
  const auto r = test::run_cli({"train", "--config", cfg});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const auto e = test::run_cli({"eval", base_dir().string(), "--adapter", out.string(), "--data",
                                data_file().string(), "--batch-size", "6"});
  EXPECT_EQ(e.exit_code, 0) << e.output;
  return last_json_line(e.output).value("eval_loss", 1e9);
}

// The examples as the recipe makes them: transformers' features (<= 1e-4, the
// tolerance of the feature parity in test_audio), the collator's labels exactly, and
// the model's loss on the batch (fp32, <= 1e-5) through `peft eval`.
TEST(WhisperAsr, ExamplesAndLossMatchTheTransformersRecipe) {
  SafetensorsFile ref((base_dir() / "reference.safetensors").string());
  const auto tok = Tokenizer::from_file(base_dir().string());
  DataOptions o;
  o.tokenizer = &tok;
  o.model_dir = base_dir().string();
  o.audio = true;
  o.decoder_start_token_id = *tok.token_to_id("<|startoftranscript|>");
  o.max_target_positions = 24;
  const auto xs = load_audio_text_jsonl(data_file().string(), o);
  const auto labels = ref.get("labels"), features = ref.get("input_features");
  ASSERT_EQ(static_cast<int64_t>(xs.size()), labels.size(0));
  for (size_t i = 0; i < xs.size(); ++i) {
    const auto row = labels[static_cast<int64_t>(i)];
    const auto want = row.masked_select(row != -100);
    EXPECT_TRUE(at::equal(at::tensor(xs[i].labels, at::kLong), want)) << "row " << i << ": " << want;
    EXPECT_LE((xs[i].input_features - features[static_cast<int64_t>(i)]).abs().max().item<double>(), 1e-4) << i;
  }
  const auto r = test::run_cli({"eval", base_dir().string(), "--data", data_file().string(), "--batch-size", "6"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NEAR(last_json_line(r.output)["eval_loss"].get<double>(), ref.get("loss").item<double>(), 1e-5) << r.output;
}

// LoRA on every Linear learns the six recordings; the adapter transcribes through `peft
// transcribe` exactly as HF PEFT + transformers' generate and batch_decode do, and the
// reported WER is the one of those transcripts.
TEST(WhisperAsr, TrainedLoraTranscribesAsHfPeft) {
  const auto out = scratch("lora");
  const double loss = train_and_eval(R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": "all-linear"})",
                                     out, 1e-2);
  EXPECT_LT(loss, 1.0) << "the untrained model's loss is 5.9";
  const auto metrics = out / "wer.json";
  const auto r = test::run_cli({"transcribe", base_dir().string(), "--adapter", out.string(), "--data",
                                data_file().string(), "--max-new-tokens", "20", "--batch-size", "4", "--metrics",
                                metrics.string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto ours = json_lines(r.output);
  const auto hf_file = out / "hf_transcripts.json";
  int status = 0;
  const auto log = test::run_parity_script("make_whisper_asr.py", "transcribe " + base_dir().string() + " " +
                                                                      out.string() + " " + data_file().string() + " " +
                                                                      hf_file.string(),
                                           &status);
  ASSERT_EQ(status, 0) << log;
  json hf;
  std::ifstream(hf_file) >> hf;
  ASSERT_EQ(ours.size(), hf.size()) << r.output;
  WordErrors wer;
  for (size_t i = 0; i < ours.size(); ++i) {
    EXPECT_EQ(ours[i]["transcript"], hf[i]) << "utterance " << i;
    wer.add(ours[i]["reference"], hf[i]);
  }
  json m;
  std::ifstream(metrics) >> m;
  EXPECT_EQ(m["word_errors"], wer.errors);
  EXPECT_EQ(m["words"], 10);
  EXPECT_LE(m["wer"].get<double>(), 0.3) << r.output;
  std::cerr << "whisper asr: LoRA eval loss " << loss << ", WER " << m["wer"] << "\n";
}

// The audio adapter (Houlsby bottleneck after the encoder layers' attention and FFN)
// trains through `peft train` on the same lines: the loss falls.
TEST(WhisperAsr, BottleneckAudioAdapterTrains) {
  const double loss = train_and_eval(R"({"peft_type": "BOTTLENECK", "adapter_type": "houlsby"})", scratch("houlsby"), 1e-2);
  EXPECT_LT(loss, 5.9 - 0.5) << "the untrained model's loss is 5.9";
}

// Gradient checkpointing of the encoder's and decoder's layers trains as kept layers: LoRA
// on every Linear of both stacks (random factors, dropout 0.1), three steps.
TEST(WhisperAsr, GradientCheckpointingGivesTheSameSteps) {
  test::expect_checkpointing_keeps_the_steps(test::three_lora_steps(base_dir().string(), data_file().string(), 2, 0.1),
                                             scratch("ckpt").string());
}

// jiwer's wer() on hand-checked cases, after normalization.
TEST(WhisperAsr, WordErrorRate) {
  EXPECT_EQ(normalize_words("  Seven, EIGHT.  nine!"), (std::vector<std::string>{"seven", "eight", "nine"}));
  EXPECT_EQ(word_edit_distance({"a", "b", "c"}, {"a", "b", "c"}), 0);
  EXPECT_EQ(word_edit_distance({"a", "b", "c"}, {"a", "x", "c"}), 1);     // substitution
  EXPECT_EQ(word_edit_distance({"a", "b", "c"}, {"a", "c"}), 1);          // deletion
  EXPECT_EQ(word_edit_distance({"a", "b"}, {"x", "a", "b", "y"}), 2);     // two insertions
  EXPECT_EQ(word_edit_distance({}, {"x"}), 1);
  EXPECT_EQ(word_edit_distance({"a"}, {}), 1);
  EXPECT_EQ(word_edit_distance({"the", "cat", "sat"}, {"cat", "sat", "down", "the"}), 3);
  WordErrors w;
  w.add("three one", "three one");
  w.add("nine eight two", "nine two two two");  // one substitution, one insertion
  EXPECT_EQ(w.errors, 2);
  EXPECT_EQ(w.words, 5);
  EXPECT_DOUBLE_EQ(w.rate(), 0.4);
}

// A line whose audio is missing, whose text the decoder has no room for, or of another
// format, and a text model given to transcribe: one line naming the problem.
TEST(WhisperAsr, BadDataIsRefusedByLine) {
  const auto dir = scratch("bad");
  fs::create_directories(dir);
  const auto wav = (base_dir() / "data" / "u0.wav").string();
  auto eval = [&](const std::string& jsonl) {
    std::ofstream(dir / "data.jsonl") << jsonl;
    return test::run_cli({"eval", base_dir().string(), "--data", (dir / "data.jsonl").string()});
  };
  auto r = eval("{\"audio\": \"" + wav + "\", \"text\": \"one\"}\n{\"audio\": \"missing.wav\", \"text\": \"two\"}\n");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("line 2 of"));
  EXPECT_THAT(r.output, HasSubstr("missing.wav"));
  std::string long_text;
  for (int i = 0; i < 30; ++i) long_text += "seven ";
  r = eval("{\"audio\": \"" + wav + "\", \"text\": \"" + long_text + "\"}\n");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("line 1 of"));
  EXPECT_THAT(r.output, HasSubstr("decoder takes 24"));
  r = eval("{\"audio\": \"" + wav + "\"}\n");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("expected {\"audio\": path, \"text\""));
  r = eval("{\"input\": \"a\", \"target\": \"b\"}\n");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("speech recognition (Whisper) trains on JSONL of {\"audio\""));
  r = test::run_cli({"transcribe", base_dir().string(), (dir / "nothing.wav").string()});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("nothing.wav"));
  r = test::run_cli({"transcribe", base_dir().string()});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("give audio files or --data"));
}

}  // namespace
}  // namespace peft
