// DEFT (HF PEFT 0.21's DEFT) against adapters HF PEFT made (tests/parity/make_deft.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, for the relu
//    and qr decompositions, alpha, trained biases, and PaRa on GPT-2's Conv1D;
//  - each layer's delta equals HF's get_delta_weight; merge gives HF's merged logits and
//    unmerge restores the weights;
//  - a new adapter starts at the base (R from the frozen weight); resaved, and trained with
//    `peft train` (which lowers the eval loss), adapters load in HF PEFT with our logits (one
//    Python process); bad settings are named.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "peft/deft.h"
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
const std::vector<std::string> kCases = {"deft_llama", "deft_llama_qr", "deft_gpt2_para"};

const test::MethodSuite suite("deft");

class HfDeft : public ::testing::TestWithParam<std::string> {};

TEST_P(HfDeft, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfDeft, DeltasAreHfs) {
  const auto layers =
      test::expect_deltas_as_hf<DeftLayer>(suite, GetParam(), [](const DeftLayer& a) { return a.delta_weight(); });
  EXPECT_GE(layers, 4);
}

TEST_P(HfDeft, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  // The deft_only case's file carries trained biases, which replace the base's.
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5,
                                [](const PeftModel&, const std::string& n) { return n.ends_with(".bias"); });
}

INSTANTIATE_TEST_SUITE_P(Deft, HfDeft, ::testing::ValuesIn(kCases));

// HF's init: R = rightᵀ W / s takes back exactly what the projection removes, so a new
// adapter (relu or qr, with alpha) computes the base's logits; PaRa does not.
TEST(Deft, NewAdapterStartsAtTheBase) {
  SafetensorsFile ref((suite.fixture("deft_llama") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  for (const char* method : {"relu", "qr"}) {
    m.add_adapter(method,
                  *parse_user_adapter_config(json{{"peft_type", "DEFT"}, {"r", 4}, {"alpha", 8},
                                                  {"decomposition_method", method},
                                                  {"target_modules", {"q_proj", "down_proj"}}},
                                             "m"),
                  3);
    m.set_adapter({method});
    EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-5) << method;
  }
  m.add_adapter("para", *parse_user_adapter_config(json{{"peft_type", "DEFT"}, {"para", true}}, "m"), 3);
  m.set_adapter({"para"});
  EXPECT_GT(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-4);
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(DeftTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "DEFT"}, {"r", 4}, {"decomposition_method", "qr"}, {"target_modules", "all-linear"}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 5e-2, "deft_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(DeftErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "DEFT", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "DEFT", "decomposition_method": "svd"})"),
              HasSubstr("'decomposition_method' must be qr or relu"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "DEFT", "deft_dropout": 1.5})"), HasSubstr("'deft_dropout'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "DEFT", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "DEFT", "target_modules": "q_proj", "layers_to_transform": [0]})"),
              HasSubstr("layers_to_transform"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "DEFT", "target_modules": ["model.norm"]})"),
              HasSubstr("DEFT: target module 'model.norm'"));
}

}  // namespace
}  // namespace peft
