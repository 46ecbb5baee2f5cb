// GraLoRA (HF PEFT 0.21's GRALORA) against adapters HF PEFT made (tests/parity/make_gralora.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, for k = 2 and 4,
//    Linear and GPT-2's Conv1D, with and without the hybrid LoRA pair;
//  - each layer's delta equals HF's get_delta_weight; merge gives HF's merged logits and
//    unmerge restores the weights;
//  - a new adapter starts at the base; resaved, and trained with `peft train` (which lowers
//    the eval loss), adapters load in HF PEFT with our logits (one Python process); bad
//    settings and blocks that do not divide a layer are named.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "peft/gralora.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "loss_file.h"
#include "method_suite.h"
#include "suite_checks.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"gralora_llama", "gralora_llama_k4", "gralora_gpt2_hybrid"};

const test::MethodSuite suite("gralora");

class HfGralora : public ::testing::TestWithParam<std::string> {};

TEST_P(HfGralora, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfGralora, DeltasAreHfs) {
  const auto layers = test::expect_deltas_as_hf<GraloraLayer>(suite, GetParam(),
                                                              [](const GraloraLayer& a) { return a.delta_weight(); });
  EXPECT_GE(layers, 4);
}

TEST_P(HfGralora, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Gralora, HfGralora, ::testing::ValuesIn(kCases));

// HF's init: B = 0, so a new adapter (hybrid pair included) computes the base's logits.
TEST(Gralora, NewAdapterStartsAtTheBase) {
  SafetensorsFile ref((suite.fixture("gralora_gpt2_hybrid") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("gpt2").string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  m.add_adapter("default",
                *parse_user_adapter_config(json::parse(R"({"peft_type": "GRALORA", "r": 4, "hybrid_r": 2,
                                                           "target_modules": ["c_attn", "c_proj"]})"),
                                           "m"),
                3);
  EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-6);
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(GraloraTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "GRALORA"}, {"r", 4}, {"alpha", 8}, {"hybrid_r", 2},
                       {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 2e-2, "gralora_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(GraloraErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "GRALORA", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "GRALORA", "r": 6, "gralora_k": 4})"),
              HasSubstr("'r' (6) must be divisible by 'gralora_k' (4)"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "GRALORA", "gralora_k": 0})"), HasSubstr("'gralora_k'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "GRALORA", "hybrid_r": -1})"), HasSubstr("'hybrid_r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "GRALORA", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "GRALORA", "gralora_dropout": 1.5})"), HasSubstr("'gralora_dropout'"));
  // HF's GraloraConfig has no exclude_modules.
  EXPECT_THAT(user_config_error(R"({"peft_type": "GRALORA", "exclude_modules": ["q_proj"]})"),
              HasSubstr("exclude_modules"));
  // k_proj is 32 -> 16: 3 blocks divide neither side.
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "GRALORA", "r": 3, "gralora_k": 3,
                                             "target_modules": ["k_proj"]})"),
              HasSubstr("'model.layers.0.self_attn.k_proj': in_features (32) must be divisible by gralora_k (3)"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "GRALORA", "target_modules": ["model.norm"]})"),
              HasSubstr("GRALORA: target module 'model.norm'"));
}

}  // namespace
}  // namespace peft
