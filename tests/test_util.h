// Helpers the test suites share.
#pragma once

#include <array>
#include <cstdio>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <functional>
#include <map>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>

#include <unistd.h>

#include "peft/model.h"
#include "peft/npy.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "pyserver.h"

namespace peft::test {

// Three steps of LoRA (r 4) on every linear layer with both factors random, so every
// layer's gradient is nonzero, and `lora_dropout` (> 0: a recompute must replay the random
// stream): what expect_checkpointing_keeps_the_steps trains.
inline TrainConfig three_lora_steps(const std::string& model, const std::string& train_file, int64_t batch,
                                    double lora_dropout) {
  TrainConfig c;
  c.model = model;
  c.train_file = train_file;
  c.method = nlohmann::json{{"r", 4}, {"target_modules", "all-linear"}, {"init_lora_weights", false},
                            {"lora_dropout", lora_dropout}};
  c.max_steps = 3;
  c.per_device_train_batch_size = batch;
  c.learning_rate = 1e-2;
  c.progress = false;
  return c;
}

// Trains `c` twice, without and with gradient_checkpointing (into `out`_off and `out`_on):
// recomputed blocks must give the same steps, so the per-step losses agree to 1e-6 and the
// gradient norms to `grad_tol` (relative), and every gradient norm is above zero.
inline void expect_checkpointing_keeps_the_steps(TrainConfig c, const std::string& out, double grad_tol = 1e-5) {
  auto run = [&](bool checkpoint) {
    c.gradient_checkpointing = checkpoint;
    c.output_dir = out + (checkpoint ? "_on" : "_off");
    std::filesystem::remove_all(c.output_dir);
    return train(c).steps;
  };
  const auto want = run(false), got = run(true);
  ASSERT_EQ(got.size(), static_cast<size_t>(c.max_steps));
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_NEAR(got[i].loss, want[i].loss, 1e-6 * std::abs(want[i].loss)) << "step " << i;
    EXPECT_NEAR(got[i].grad_norm, want[i].grad_norm, grad_tol * want[i].grad_norm) << "step " << i;
    EXPECT_GT(want[i].grad_norm, 0.0) << "step " << i;
  }
}

// Runs a shell command; returns stdout and stderr together, and its exit status.
inline std::string run_command(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  *status = pclose(p);
  return out;
}

// Rewrites a safetensors file without the tensor `key` (a damaged checkpoint or adapter).
inline void drop_tensor(const std::string& path, const std::string& key) {
  SafetensorsFile f(path);
  NamedTensors kept;
  for (const auto& n : f.names())
    if (n != key) kept.emplace_back(n, f.get(n).clone());
  save_safetensors(path, kept);
}

// A language with structure for the causal LMs: 96 rows of 16 token ids, each counting
// upward from a random start, as pre-tokenized JSONL.
// Tests run as separate processes, two at a time, and several write this same file while
// another reads it: written beside it under this process's name and renamed into place, a
// reader sees the whole file, never one cut short by a writer's truncation.
inline void write_counting_data(const std::filesystem::path& jsonl) {
  const auto tmp = jsonl.string() + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream f(tmp);
    std::mt19937 rng(3);
    for (int i = 0; i < 96; ++i) {
      nlohmann::json ids = nlohmann::json::array();
      for (int t = 0, s = 1 + rng() % 80; t < 16; ++t) ids.push_back(s + t);
      f << nlohmann::json{{"input_ids", ids}}.dump() << "\n";
    }
    if (!f.flush()) throw std::runtime_error(tmp + ": write failed");
  }
  std::filesystem::rename(tmp, jsonl);
}

// An image task for vit_cls (3x12x12): 240 noisy images whose class (of 5) is their
// overall brightness, written as .npy images and labels.
inline void write_brightness_images(const std::filesystem::path& images_npy, const std::filesystem::path& labels_npy) {
  const int64_t n = 240;
  auto gen = at::detail::createCPUGenerator(11);
  auto labels = at::randint(0, 5, {n}, gen);
  auto images = at::randn({n, 3, 12, 12}, gen) * 0.3 + ((labels.to(at::kFloat) - 2) * 0.8).view({n, 1, 1, 1});
  save_npy(images_npy.string(), images);
  save_npy(labels_npy.string(), labels);
}

// --- parity fixtures: reference.safetensors holds inputs and expected outputs ----------

inline ModelInputs inputs_of(const SafetensorsFile& ref) {
  ModelInputs in;
  if (ref.contains("input_ids")) in.input_ids = ref.get("input_ids");
  if (ref.contains("attention_mask")) in.attention_mask = ref.get("attention_mask");
  if (ref.contains("token_type_ids")) in.token_type_ids = ref.get("token_type_ids");
  if (ref.contains("pixel_values")) in.pixel_values = ref.get("pixel_values");
  return in;
}

// The output the reference stores (logits, or last_hidden_state for headless models).
inline std::string output_key(const SafetensorsFile& ref) { return ref.contains("logits") ? "logits" : "last_hidden_state"; }
inline at::Tensor output_of(const ModelOutputs& o, const std::string& key) {
  return key == "logits" ? o.logits : o.last_hidden_state;
}

inline double max_diff(const at::Tensor& got, const at::Tensor& want, const at::Tensor& mask) {
  EXPECT_EQ(got.sizes(), want.sizes());
  auto d = (got.to(at::kFloat) - want.to(at::kFloat)).abs();
  if (mask.defined() && d.dim() == 3) d = d * mask.to(at::kFloat).unsqueeze(-1);
  return d.max().item<double>();
}

inline at::Tensor mask_of(const SafetensorsFile& ref) {
  return ref.contains("attention_mask") ? ref.get("attention_mask") : at::Tensor();
}

// Inputs plus our outputs, for tests/parity/check_adapter.py to compare against PEFT.
inline std::filesystem::path write_outputs(const SafetensorsFile& ref, const std::string& key, const at::Tensor& out, const std::filesystem::path& p) {
  NamedTensors t;
  for (const char* k : {"input_ids", "attention_mask", "token_type_ids", "pixel_values"})
    if (ref.contains(k)) t.emplace_back(k, ref.get(k));
  t.emplace_back(key, out.to(at::kFloat));
  save_safetensors(p.string(), t);
  return p;
}

inline int check_in_python(const std::filesystem::path& base, const std::string& adapter, const std::filesystem::path& outputs, std::string* log) {
  int status = 0;
  *log = run_python({std::string(PEFT_SOURCE_DIR) + "/tests/parity/check_adapter.py", base.string(), adapter,
                     outputs.string()},
                    &status);
  return status;
}

// A classifier adapter we trained, checked by HF PEFT: our logits for (input_ids,
// attention_mask) with `adapter_dir` on `base_dir`, written into the adapter folder, must
// equal what transformers + PEFT compute (tests/parity/check_encoder_adapter.py, <= 1e-4).
inline void expect_classifier_adapter_matches_hf(const std::filesystem::path& base_dir,
                                                 const std::filesystem::path& adapter_dir, const at::Tensor& input_ids,
                                                 const at::Tensor& attention_mask) {
  PeftModel peft(load_model(base_dir.string()));
  peft.load_adapter(adapter_dir.string());
  c10::NoGradGuard no_grad;
  ModelInputs in;
  in.input_ids = input_ids;
  in.attention_mask = attention_mask;
  const at::Tensor logits = peft.forward(in).logits;
  const auto ours = adapter_dir / "ours.safetensors";
  save_safetensors(ours.string(), {{"input_ids", input_ids.contiguous()},
                                   {"attention_mask", attention_mask.contiguous()},
                                   {"logits", logits.contiguous()}});
  int status = -1;
  const std::string said = run_parity_script(
      "check_encoder_adapter.py", base_dir.string() + " " + adapter_dir.string() + " " + ours.string(), &status);
  EXPECT_EQ(status, 0) << adapter_dir << "\n" << said;
}

// --- round trips of an adapter fixture (a case folder with adapter/ and reference.safetensors)

// Loads `adapter_dir` on `base`, merges: outputs equal the reference's merged ones and the
// unmerged ones (<= tol); unmerges: every base weight is restored (<= weight_tol), except
// those `may_differ` names (e.g. biases an adapter itself carries).
inline void expect_merge_round_trip(const std::filesystem::path& base_dir, const std::filesystem::path& adapter_dir,
                                    const SafetensorsFile& ref, double tol, double weight_tol,
                                    const std::function<bool(const PeftModel&, const std::string&)>& may_differ = {}) {
  c10::InferenceMode guard;
  auto base = load_model(base_dir.string());
  std::map<std::string, at::Tensor> before;
  for (auto& [n, t] : base->named_parameters()) before[n] = t.clone();
  PeftModel peft(base);
  peft.load_adapter(adapter_dir.string());
  const auto key = output_key(ref);
  auto unmerged = output_of(peft.forward(inputs_of(ref)), key);
  peft.merge();
  auto merged = output_of(peft.forward(inputs_of(ref)), key);
  EXPECT_LE(max_diff(merged, ref.get("merged_" + key), mask_of(ref)), tol);
  EXPECT_LE(max_diff(merged, unmerged, mask_of(ref)), tol);
  peft.unmerge();
  // With adapters off, modules_to_save hold their originals again.
  auto off = peft.disable_adapters();
  for (auto& [n, t] : base->named_parameters()) {
    if (!before.count(n) || (may_differ && may_differ(peft, n))) continue;
    EXPECT_LE((t - before[n]).abs().max().item<double>(), weight_tol) << n;
  }
}

// Loads `adapter_dir` on `base` and saves it again in `resaved`: read back here it gives
// the reference's outputs (<= tol), and HF PEFT loads it strictly and computes the same
// (tests/parity/check_adapter.py; our outputs go to `outputs`).
inline void expect_resave_round_trip(const std::filesystem::path& base_dir, const std::filesystem::path& adapter_dir,
                                     const SafetensorsFile& ref, const std::filesystem::path& resaved,
                                     const std::filesystem::path& outputs, double tol) {
  PeftModel peft(load_model(base_dir.string()));
  peft.load_adapter(adapter_dir.string());
  peft.save_adapter(resaved.string());
  const auto key = output_key(ref);
  at::Tensor ours;
  {
    c10::InferenceMode guard;
    PeftModel again(load_model(base_dir.string()));
    again.load_adapter(resaved.string());
    ours = output_of(again.forward(inputs_of(ref)), key);
  }
  EXPECT_LE(max_diff(ours, ref.get(key), mask_of(ref)), tol);
  std::string log;
  EXPECT_EQ(check_in_python(base_dir, resaved.string(), write_outputs(ref, key, ours, outputs), &log), 0) << log;
}

}  // namespace peft::test
