// HiRA (HF PEFT 0.21's HIRA) against adapters HF PEFT made (tests/parity/make_hira.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, on Linear,
//    GPT-2's Conv1D and an embedding table, with HF's three inits and its rank_pattern (filed, not applied, as HF 0.21);
//  - each layer's modulation B A equals HF's get_delta_weight; merge gives HF's merged
//    logits and unmerge restores the weights exactly (HF keeps the weight, as we do);
//  - a new adapter starts at the base; resaved, and trained with `peft train` (which lowers
//    the eval loss), adapters load in HF PEFT with our logits (one Python process); bad
//    settings and layers HiRA cannot host are named.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "peft/hira.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "loss_file.h"
#include "method_suite.h"
#include "suite_checks.h"
#include "test_util.h"

using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"hira_llama", "hira_llama_embed", "hira_gpt2"};

const test::MethodSuite suite("hira");

class HfHira : public ::testing::TestWithParam<std::string> {};

TEST_P(HfHira, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfHira, ModulationsAreHfs) {
  const auto layers =
      test::expect_deltas_as_hf<HiraLayer>(suite, GetParam(), [](const HiraLayer& a) { return a.modulation(); });
  EXPECT_GE(layers, 4);
}

TEST_P(HfHira, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Hira, HfHira, ::testing::ValuesIn(kCases));

// HF's inits: B = 0 (an embedding's A = 0), so a new adapter computes the base's logits.
TEST(Hira, NewAdapterStartsAtTheBase) {
  SafetensorsFile ref((suite.fixture("hira_llama") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  for (const char* init : {"true", "\"gaussian\""}) {
    m.add_adapter(init, *parse_user_adapter_config(
                            json::parse(std::string(R"({"peft_type": "HIRA", "r": 4, "init_weights": )") + init +
                                        R"(, "target_modules": ["embed_tokens", "q_proj", "down_proj"]})"),
                            "m"),
                  3);
    m.set_adapter({init});
    EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-6) << init;
  }
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(HiraTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  // dW = W ⊙ (B A) is as small as the base's N(0, 0.02²) weights: it takes a large rate.
  const json method = {{"peft_type", "HIRA"}, {"r", 4}, {"target_modules", "all-linear"}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 0.5, "hira_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(HiraErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "HIRA", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "HIRA", "init_weights": "pissa"})"), HasSubstr("'init_weights'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "HIRA", "hira_dropout": 1.5})"), HasSubstr("'hira_dropout'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "HIRA", "rank_pattern": {"q_proj": 0}})"), HasSubstr("rank_pattern"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "HIRA", "rank_pattern": {"(": 2}})"), HasSubstr("("));
  EXPECT_THAT(user_config_error(R"({"peft_type": "HIRA", "alpha": 8})"), HasSubstr("alpha"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "HIRA", "target_modules": ["model.norm"]})"),
              HasSubstr("HIRA: target module 'model.norm'"));
}

}  // namespace
}  // namespace peft
