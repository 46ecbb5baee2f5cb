// PEANuT (HF PEFT 0.21's PEANUT) against adapters HF PEFT made (tests/parity/make_peanut.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, with depth 0
//    and 2 (encoders, decoders, residuals), relu and silu, a scaling and layers_to_transform;
//  - each layer's ΔW (a non-linear function of the frozen weight) equals HF's
//    get_delta_weight; merge gives HF's merged logits and unmerge restores the weights
//    exactly (HF keeps the pre-merge weight, as we do);
//  - a new adapter starts at the base (B = 0) with HF's kaiming draws; resaved, and trained
//    with `peft train` (which lowers the eval loss), adapters load in HF PEFT with our logits
//    (one Python process); bad settings and GPT-2's Conv1D (which HF refuses too) are named.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "peft/peanut.h"
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
const std::vector<std::string> kCases = {"peanut_llama", "peanut_llama_deep"};

const test::MethodSuite suite("peanut");

class HfPeanut : public ::testing::TestWithParam<std::string> {};

TEST_P(HfPeanut, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfPeanut, DeltasAreHfs) {
  const auto layers =
      test::expect_deltas_as_hf<PeanutLayer>(suite, GetParam(), [](const PeanutLayer& a) { return a.delta_weight(); });
  EXPECT_GE(layers, 3);
}

TEST_P(HfPeanut, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Peanut, HfPeanut, ::testing::ValuesIn(kCases));

// HF's init: B = 0, so a new adapter computes the base's logits; A and the encoders /
// decoders are nn.Linear's kaiming draws, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), not zero.
TEST(Peanut, NewAdapterStartsAtTheBase) {
  SafetensorsFile ref((suite.fixture("peanut_llama") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  m.add_adapter("default",
                *parse_user_adapter_config(json::parse(R"({"peft_type": "PEANUT", "r": 4, "depth": 1,
                                                           "act_fn": "gelu_new", "target_modules": ["k_proj", "up_proj"]})"),
                                           "m"),
                3);
  EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-6);
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find("model.layers.0.mlp.up_proj"));
  ASSERT_NE(host, nullptr);
  const auto* a = dynamic_cast<const PeanutLayer*>(host->adapter("default"));
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->A.sizes(), (at::IntArrayRef{4, 48}));  // A reads W's output side
  EXPECT_EQ(a->B.abs().max().item<double>(), 0.0);
  const double bound = 1.0 / std::sqrt(48.0);
  EXPECT_LE(a->A.abs().max().item<double>(), bound);
  EXPECT_GT(a->A.abs().max().item<double>(), 0.5 * bound);
  EXPECT_LE(a->encoders.at(0).abs().max().item<double>(), 0.5);  // 1/sqrt(r)
  EXPECT_GT(a->decoders.at(0).abs().max().item<double>(), 0.25);
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(PeanutTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "PEANUT"}, {"r", 4}, {"depth", 1}, {"target_modules", "all-linear"}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 2e-2, "peanut_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(PeanutErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "PEANUT", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PEANUT", "depth": -1})"), HasSubstr("'depth'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PEANUT", "act_fn": "softmax"})"), HasSubstr("'act_fn' 'softmax'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PEANUT", "scaling": "big"})"), HasSubstr("scaling"));
  // HF's PeanutConfig has no dropout or alpha.
  EXPECT_THAT(user_config_error(R"({"peft_type": "PEANUT", "alpha": 8})"), HasSubstr("alpha"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "PEANUT", "target_modules": ["model.norm"]})"),
              HasSubstr("PEANUT: target module 'model.norm'"));
  // HF refuses GPT-2's Conv1D (make_peanut.py checks it does); so do we, by name.
  EXPECT_THAT(add_adapter_error(suite, "gpt2", R"({"peft_type": "PEANUT", "target_modules": ["c_attn"]})"),
              HasSubstr("PEANUT: target module 'transformer.h.0.attn.c_attn' is a Conv1D; only Linear layers"));
}

}  // namespace
}  // namespace peft
