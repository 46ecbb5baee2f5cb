// Helpers the test suites share.
#pragma once

#include <array>
#include <cstdio>
#include <string>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "peft/model.h"
#include "peft/npy.h"
#include "peft/safetensors.h"

namespace peft::test {

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
  *log = run_command(std::string(PEFT_PYTHON) + " " + PEFT_SOURCE_DIR + "/tests/parity/check_adapter.py " + base.string() + " " +
                 adapter + " " + outputs.string(),
             &status);
  return status;
}

}  // namespace peft::test
