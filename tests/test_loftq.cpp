// LoftQ init (init_lora_weights "loftq") against HF PEFT (fixtures from
// tests/parity/make_loftq.py: a tiny random Llama, LoRA on q/v/down_proj created by
// get_peft_model with loftq_iter 1 and 2): the same A and B, the same NF4-dequantized base
// weights, the same logits; the config round-trips; bad settings are refused.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/lora.h"
#include "peft/model.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "util/json_file.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace peft {
namespace {

fs::path fixture(const std::string& name) { return fs::path(PEFT_LOFTQ_DIR) / name; }

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

LoraConfig hf_config(const std::string& iter) {
  std::ifstream in(fixture(iter) / "adapter_config.json");
  return LoraConfig::from_json(nlohmann::ordered_json::parse(in), iter);
}

class Loftq : public ::testing::TestWithParam<std::string> {};

// NF4 (bitsandbytes' blocksize 64, exact here) and LAPACK's SVD on the same input: A, B
// and the replaced base weights agree to float rounding (1e-5), the logits to 1e-4.
TEST_P(Loftq, MatchesHfPeftInit) {
  const auto iter = GetParam();
  SafetensorsFile ref((fixture(iter) / "reference.safetensors").string());
  SafetensorsFile hf((fixture(iter) / "adapter_model.safetensors").string());
  auto base = load_model(fixture("base").string());
  PeftModel peft(base);
  peft.add_adapter("default", hf_config(iter));
  int64_t layers = 0;
  for (const auto& [key, t] : peft.adapter_state_dict("default")) {
    ASSERT_TRUE(hf.contains(key)) << key;
    EXPECT_LE(max_diff(t, hf.get(key)), 1e-5) << key;
    ++layers;
  }
  EXPECT_EQ(layers, 12);  // 2 layers x 3 modules x (A, B)
  double worst_base = 0;
  for (const auto& name : ref.names()) {
    if (name.rfind("base.", 0) != 0) continue;
    const std::string module = name.substr(5, name.size() - 5 - 7);  // drop "base." and ".weight"
    auto* layer = dynamic_cast<AdaptableLayer*>(base->find(module));
    ASSERT_NE(layer, nullptr) << module;
    worst_base = std::max(worst_base, max_diff(*layer->weight_tensor(), ref.get(name)));
  }
  EXPECT_LE(worst_base, 1e-6);
  c10::InferenceMode guard;
  ModelInputs in;
  in.input_ids = ref.get("input_ids");
  const double logits = max_diff(peft.forward(in).logits, ref.get("logits"));
  EXPECT_LE(logits, 1e-4);
  std::cerr << "LoftQ " << iter << ": base weights " << worst_base << ", logits " << logits << "\n";
}

INSTANTIATE_TEST_SUITE_P(Lora, Loftq, ::testing::Values("iter1", "iter2"));

TEST(LoftqConfig, RoundTripsAndRefusesWhatItCannotDo) {
  const auto cfg = hf_config("iter2");
  EXPECT_EQ(cfg.loftq_iter, 2);
  const auto j = cfg.to_json();
  EXPECT_EQ(j["init_lora_weights"], "loftq");
  EXPECT_EQ(j["loftq_config"], (nlohmann::ordered_json{{"loftq_bits", 4}, {"loftq_iter", 2}}));
  auto refused = [](const std::string& json) {
    try {
      LoraConfig::from_json(nlohmann::ordered_json::parse(json), "cfg.json");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_THAT(refused(R"({"peft_type": "LORA", "init_lora_weights": "loftq"})"), HasSubstr("needs a 'loftq_config'"));
  EXPECT_THAT(refused(R"({"peft_type": "LORA", "init_lora_weights": "loftq", "loftq_config": {"loftq_bits": 8}})"),
              HasSubstr("'loftq_bits' must be 4"));
  EXPECT_THAT(refused(R"({"peft_type": "LORA", "init_lora_weights": "loftq", "loftq_config": {"loftq_iter": 0}})"),
              HasSubstr("'loftq_iter' must be an integer"));
  EXPECT_THAT(refused(R"({"peft_type": "LORA", "init_lora_weights": "loftq", "loftq_config": {"iters": 2}})"), HasSubstr("unknown key 'iters'"));
}

}  // namespace
}  // namespace peft
