// Audio reading, resampling and Whisper log-mel features against soundfile, python-soxr
// and transformers' load_audio / WhisperFeatureExtractor (tests/parity/make_audio.py),
// hostile files, and `peft preprocess-audio`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli_runner.h"
#include "peft/audio.h"
#include "peft/npy.h"
#include "peft/safetensors.h"

namespace fs = std::filesystem;
using namespace peft;
using ::testing::HasSubstr;
using nlohmann::json;

namespace {

fs::path ref_dir() { return fs::path(PEFT_PARITY_DIR) / "audio"; }
json manifest() { return json::parse(std::ifstream(ref_dir() / "manifest.json")); }
std::string audio_file(const std::string& name) { return (ref_dir() / "audio" / name).string(); }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_PARITY_DIR).parent_path() / "audio_scratch" / name;
  fs::create_directories(p.parent_path());
  return p;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (!a.sizes().equals(b.sizes())) return 1e30;
  return a.numel() ? (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() : 0.0;
}

}  // namespace

// Decoded and mixed to mono as transformers' load_audio does before resampling:
// soundfile's float32 samples, the mean of the channels. The same libsndfile decoding,
// so every PCM, float and FLAC sample is equal; Vorbis is decoded in float by libvorbis.
TEST(AudioRead, EqualsSoundfileMixedToMono) {
  SafetensorsFile ref((ref_dir() / "reference.safetensors").string());
  double worst_lossless = 0, worst_vorbis = 0;
  const auto m = manifest();  // kept: items() of a temporary's member would dangle
  for (const auto& [name, info] : m["files"].items()) {
    SCOPED_TRACE(name);
    const Audio a = read_audio(audio_file(name));
    EXPECT_EQ(a.sample_rate, info["rate"].get<int64_t>());
    const double d = max_diff(a.samples, ref.get("raw/" + name));
    if (name.ends_with(".ogg")) {
      EXPECT_LE(d, 1e-6);
      worst_vorbis = std::max(worst_vorbis, d);
    } else {
      EXPECT_EQ(a.samples.numel(), info["frames"].get<int64_t>());
      EXPECT_EQ(d, 0.0);
      worst_lossless = std::max(worst_lossless, d);
    }
  }
  std::cout << "[ audio read ] max abs diff: PCM/float/FLAC " << worst_lossless << ", Vorbis " << worst_vorbis << "\n";
}

// soxr.resample(x, in, out) at its default quality, for up- and downsampling, integer and
// fractional ratios: the same libsoxr called the same way.
TEST(AudioResample, EqualsPythonSoxr) {
  SafetensorsFile ref((ref_dir() / "reference.safetensors").string());
  double worst = 0;
  const auto m = manifest();
  for (const auto& [c, rates] : m["resample"].items()) {
    SCOPED_TRACE(c);
    const auto got = resample_audio(ref.get("resample/" + c + "/in"), rates[0].get<double>(), rates[1].get<double>());
    const double d = max_diff(got, ref.get("resample/" + c + "/out"));
    EXPECT_LE(d, 1e-6);
    worst = std::max(worst, d);
  }
  std::cout << "[ audio resample ] " << m["resample"].size() << " rate pairs, max abs diff " << worst << "\n";
  EXPECT_THAT(error_of([] { resample_audio(at::zeros({10}), 0.0, 16000); }), HasSubstr("input rate"));
}

// load_audio(path, sampling_rate, backend="soundfile"), to 16 and 22.05 kHz, then
// WhisperFeatureExtractor's input_features from our waveform: against its numpy path
// (which ours follows: float64 STFT) and its default torch path (float32 STFT).
TEST(WhisperFeatures, MatchWhisperFeatureExtractor) {
  const auto m = manifest();
  SafetensorsFile ref((ref_dir() / "reference.safetensors").string());
  double worst_wave = 0, worst_np = 0, worst_vorbis = 0, worst_torch = 0, worst_mel = 0;
  for (const auto& [proc, pinfo] : m["processors"].items()) {
    const auto cfg = read_whisper_feature_config((ref_dir() / "processors" / proc).string());
    EXPECT_EQ(cfg.sampling_rate, pinfo["sampling_rate"].get<int64_t>());
    EXPECT_EQ(cfg.feature_size, pinfo["feature_size"].get<int64_t>());
    EXPECT_EQ(cfg.num_frames(), pinfo["frames"].get<int64_t>());
    const auto want_mel = ref.get("mel/" + proc);
    worst_mel = std::max(worst_mel, max_diff(whisper_mel_filters(cfg), want_mel) / want_mel.abs().max().item<double>());
    for (const auto& [name, info] : m["files"].items()) {
      SCOPED_TRACE(proc + "/" + name);
      const auto wave = load_audio(audio_file(name), cfg.sampling_rate);
      const double dw = max_diff(wave, ref.get("wave/" + proc + "/" + name));
      EXPECT_LE(dw, 1e-6);
      worst_wave = std::max(worst_wave, dw);
      const auto feat = whisper_log_mel(wave, cfg);
      const double dn = max_diff(feat, ref.get("featnp/" + proc + "/" + name));
      const double dt = max_diff(feat, ref.get("feat/" + proc + "/" + name));
      // Vorbis samples differ by ~1e-7 between libvorbis builds, which the log of quiet
      // bins magnifies; every other file gives the numpy path's exact waveform.
      const bool vorbis = name.ends_with(".ogg");
      EXPECT_LE(dn, vorbis ? 1e-4 : 1e-6);
      EXPECT_LE(dt, 1e-4);
      (vorbis ? worst_vorbis : worst_np) = std::max(vorbis ? worst_vorbis : worst_np, dn);
      worst_torch = std::max(worst_torch, dt);
    }
  }
  EXPECT_LE(worst_mel, 1e-12);
  std::cout << "[ whisper features ] max abs diff: load_audio " << worst_wave << ", input_features vs numpy path "
            << worst_np << " (Vorbis " << worst_vorbis << "), vs torch path " << worst_torch
            << "; mel filters (relative) " << worst_mel << "\n";
}

TEST(WhisperFeatures, ConfigDefaultsAndErrorsNameFileAndKey) {
  const auto dir = scratch("cfg");
  fs::create_directories(dir);
  const std::string file = (dir / "preprocessor_config.json").string();
  auto write = [&](const std::string& text) { std::ofstream(file) << text; };
  write("{}");
  auto c = read_whisper_feature_config(dir.string());
  EXPECT_EQ(c.feature_size, 80);
  EXPECT_EQ(c.n_samples(), 480000);
  EXPECT_EQ(c.num_frames(), 3000);
  // transformers recomputes n_samples from chunk_length * sampling_rate; so do we.
  write(R"({"feature_size": 128, "chunk_length": 10, "n_samples": 7, "nb_max_frames": 3, "padding_value": 0.25})");
  c = read_whisper_feature_config(file);
  EXPECT_EQ(c.feature_size, 128);
  EXPECT_EQ(c.n_samples(), 160000);
  EXPECT_DOUBLE_EQ(c.padding_value, 0.25);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"feature_size": "80"})", "feature_size must be an integer"},
      {R"({"feature_size": 80.5})", "feature_size must be an integer"},
      {R"({"hop_length": 0})", "hop_length is 0, outside"},
      {R"({"sampling_rate": 99999999999})", "sampling_rate is 99999999999, outside"},
      {R"({"n_fft": -4})", "n_fft is -4"},
      {R"({"chunk_length": 100000})", "chunk_length is 100000"},
      {R"({"padding_value": "zero"})", "padding_value must be a number"},
      {R"({"dither": 0.001})", "dither"},
      {R"({"feature_extractor_type": "Wav2Vec2FeatureExtractor"})", "feature_extractor_type"},
      {R"({"chunk_length": 1, "sampling_rate": 1000, "n_fft": 4096})", "too short"},
      {R"({"hop_length": 1, "n_fft": 65536})", "too large"},
      {"[1, 2]", "JSON object"},
      {"{", ""},
  };
  for (const auto& [text, want] : bad) {
    write(text);
    const auto msg = error_of([&] { read_whisper_feature_config(dir.string()); });
    EXPECT_THAT(msg, HasSubstr(file)) << text;
    EXPECT_THAT(msg, HasSubstr(want)) << text;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_THAT(error_of([] { read_whisper_feature_config("/nonexistent/whisper"); }), HasSubstr("/nonexistent/whisper"));
}

// Hostile files: each fails with one line naming it, or (a data chunk claiming 4 GiB)
// reads the frames actually present.
TEST(AudioHostile, FilesFailWithOneLineNamingTheFile) {
  int n = 0;
  const auto m = manifest();
  for (const auto& [name, outcome] : m["hostile"].items()) {
    SCOPED_TRACE(name);
    const std::string path = (ref_dir() / "hostile" / name).string();
    ++n;
    if (outcome.is_number()) {
      EXPECT_EQ(read_audio(path).samples.numel(), outcome.get<int64_t>());
      continue;
    }
    const auto msg = error_of([&] { read_audio(path); });
    EXPECT_THAT(msg, HasSubstr(path));
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    if (name == "empty.wav") EXPECT_THAT(msg, HasSubstr("empty file"));
    if (name == "rate_10.wav" || name == "rate_huge.wav") EXPECT_THAT(msg, HasSubstr("sample rate"));
    if (name == "channels_300.wav") EXPECT_THAT(msg, HasSubstr("channels"));
    if (name == "no_data.wav") EXPECT_THAT(msg, HasSubstr("no audio samples"));
    if (name == "folder.wav") EXPECT_THAT(msg, HasSubstr("not a regular file"));
  }
  EXPECT_GE(n, 14);
  EXPECT_THAT(error_of([] { read_audio("/nonexistent/x.wav"); }), HasSubstr("/nonexistent/x.wav"));
  EXPECT_THAT(error_of([] { load_audio("/nonexistent/x.wav", 16000); }), HasSubstr("/nonexistent/x.wav"));
}

// Seeded mutations (byte flips, truncation, inserted runs) of a WAV, a FLAC and an Ogg
// file: each reads to consistent samples or throws one line naming the file.
TEST(AudioHostile, MutatedFilesReadOrFailCleanly) {
  std::mt19937 rng(18);
  int ok = 0, failed = 0;
  const auto out = scratch("mutated.bin").string();
  for (const char* base : {"mono16k_pcm16.wav", "stereo44k.flac", "mono48k.ogg"}) {
    std::ifstream in(audio_file(base), std::ios::binary);
    const std::vector<char> orig((std::istreambuf_iterator<char>(in)), {});
    for (int i = 0; i < 40; ++i) {
      auto b = orig;
      const size_t head = std::min<size_t>(b.size(), 256);  // headers live at the start
      if (i % 3 == 0) {
        for (int k = 0; k < 4; ++k) b[rng() % head] ^= static_cast<char>(1 << (rng() % 8));
      } else if (i % 3 == 1) {
        b.resize(rng() % b.size());
      } else {
        b.insert(b.begin() + static_cast<long>(rng() % head), 64, static_cast<char>(rng()));
      }
      std::ofstream(out, std::ios::binary).write(b.data(), static_cast<std::streamsize>(b.size()));
      try {
        const Audio a = read_audio(out);
        EXPECT_GT(a.samples.numel(), 0);
        EXPECT_EQ(a.samples.dim(), 1);
        ++ok;
      } catch (const std::runtime_error& e) {
        EXPECT_THAT(e.what(), HasSubstr(out));
        EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
        ++failed;
      }
    }
  }
  EXPECT_GT(ok, 0);
  EXPECT_GT(failed, 0);
}

// The CLI on two files equals WhisperFeatureExtractor called on both at once; a file
// whose data chunk claims 4 GiB runs under a 2 GiB memory limit; bad input is one line.
TEST(PreprocessAudioCli, MatchesTransformersBatchAndFailsInOneLine) {
  const auto m = manifest();
  SafetensorsFile ref((ref_dir() / "reference.safetensors").string());
  const auto out = scratch("features.npy").string();
  const auto proc = (ref_dir() / "processors" / "whisper80").string();
  std::vector<std::string> args = {"preprocess-audio"};
  for (const auto& n : m["batch"]) args.push_back(audio_file(n.get<std::string>()));
  args.insert(args.end(), {"--processor", proc, "--out", out, "--overwrite"});
  auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  const double d = max_diff(load_npy(out), ref.get("batch/whisper80"));
  EXPECT_LE(d, 1e-4);
  std::cout << "[ preprocess-audio ] [2, 80, 3000] vs WhisperFeatureExtractor batch: max abs diff " << d << "\n";

  test::CliLimits two_gib;
  two_gib.memory_bytes = size_t(2) << 30;
  const auto claims = (ref_dir() / "hostile" / "claims_4gib.wav").string();
  r = test::run_cli({"preprocess-audio", claims, "--processor", proc, "--out", out, "--overwrite"}, two_gib);
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);

  for (const auto& bad : {(ref_dir() / "hostile" / "text.wav").string(), (ref_dir() / "hostile" / "channels_60000.wav").string(),
                          std::string("/nonexistent/a.wav")}) {
    r = test::run_cli({"preprocess-audio", bad, "--processor", proc, "--out", out, "--overwrite"}, two_gib);
    EXPECT_EQ(r.exit_code, 1) << test::describe(r);
    EXPECT_FALSE(r.crashed()) << test::describe(r);
    EXPECT_THAT(r.output, HasSubstr("error: " + bad + ": "));
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  }
  r = test::run_cli({"preprocess-audio", audio_file("tiny44k.wav"), "--processor", "/nonexistent", "--out", out, "--overwrite"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("error: /nonexistent"));
}
