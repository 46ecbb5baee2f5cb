// GLoRA (HF PEFT 0.21's GLORA) against adapters HF PEFT made (tests/parity/make_glora.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line: the defaults on
//    a Llama without biases (C, D, E then zero buffers) and every path kind ("lora",
//    "vector", "constant", "none") on a Llama with biases, bias="glora_only" included;
//  - merge gives HF's merged logits (weights and biases) and unmerge divides back out to
//    the weights (HF has no get_delta_weight, so no per-layer deltas); a second adapter
//    merges against the original weights, as HF's merge does;
//  - a new adapter starts at the base (init_weights false draws within HF's bounds);
//    resaved (HF's keys, zero buffers included), and trained with `peft train` (which lowers
//    the eval loss), adapters load in HF PEFT with our logits (one Python process); bad
//    settings and GPT-2's Conv1D (which HF refuses) are named.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <map>
#include <nlohmann/json.hpp>

#include "peft/glora.h"
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
const std::vector<std::string> kCases = {"glora_llama", "glora_bias_vector", "glora_bias_constant",
                                         "glora_bias_none"};

const test::MethodSuite suite("glora");

class HfGlora : public ::testing::TestWithParam<std::string> {};

TEST_P(HfGlora, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfGlora, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Glora, HfGlora, ::testing::ValuesIn(kCases));

// Two adapters on the same layers merged one after the other give HF's
// W0 + Σ(W0 ⊙ A_i + B_i) (not the second folded onto the first's result): their merged
// logits equal both applied unmerged, and unmerging divides both back out.
TEST(Glora, SecondMergeFoldsAgainstTheOriginalWeights) {
  SafetensorsFile ref((suite.fixture("glora_bias_vector") / "reference.safetensors").string());
  auto base = load_model(suite.fixture("llama_bias").string());
  std::map<std::string, at::Tensor> before;
  for (auto& [n, t] : base->named_parameters()) before[n] = t.detach().clone();
  PeftModel m(base);
  m.load_adapter((suite.fixture("glora_bias_vector") / "adapter").string(), "one");
  m.add_adapter("two",
                *parse_user_adapter_config(json::parse(R"({"peft_type": "GLORA", "r": 2, "init_weights": false,
                                                           "target_modules": ["k_proj", "o_proj", "down_proj"]})"),
                                           "m"),
                5);
  m.set_adapter({"one", "two"});
  const auto in = test::inputs_of(ref);
  const auto both = test::logits(m, in);
  EXPECT_GT(test::max_diff(both, ref.get("logits"), test::mask_of(ref)), 1e-2);  // "two" counts
  m.merge();
  EXPECT_LE(test::max_diff(test::logits(m, in), both, test::mask_of(ref)), kLogitTol);
  m.unmerge();
  // HF's unmerge divides by 1 + ΣA, which the drawn paths bring near 0 in places: the
  // weights come back to ~1e-4 (one adapter: 1e-5, above), the unmerged logits to what they were.
  for (auto& [n, t] : base->named_parameters())
    if (before.count(n)) EXPECT_LE((t - before[n]).abs().max().item<double>(), 1e-3) << n;
  EXPECT_LE(test::max_diff(test::logits(m, in), both, test::mask_of(ref)), kLogitTol);
}

// HF's init: every path zero (a LoRA path's Xd), so a new adapter computes the base's
// logits; init_weights false draws kaiming paths (|Xd| <= 1/sqrt(r), a [n, 1] column's
// |X| <= 1) and N(0, 0.02²) scalars.
TEST(Glora, NewAdapterStartsAtTheBase) {
  SafetensorsFile ref((suite.fixture("glora_bias_vector") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama_bias").string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  const std::vector<std::array<const char*, 3>> kinds = {
      {"lora", "lora", "constant"}, {"vector", "vector", "vector"}, {"constant", "none", "constant"}};
  for (bool init : {true, false})
    for (const auto& [ab, c, de] : kinds) {
      const std::string name = std::string(ab) + c + de + (init ? "" : "_drawn");
      m.add_adapter(name,
                    *parse_user_adapter_config({{"peft_type", "GLORA"}, {"r", 4}, {"config_A_B", ab}, {"config_C", c},
                                                {"config_D_E", de}, {"init_weights", init},
                                                {"target_modules", {"q_proj", "down_proj"}}},
                                               "m"),
                    3);
      m.set_adapter({name});
      const double moved = test::max_diff(test::logits(m, in), base, test::mask_of(ref));
      if (init) EXPECT_LE(moved, 1e-6) << name;
      else EXPECT_GT(moved, 1e-4) << name;
      const auto* a = dynamic_cast<AdaptableLayer*>(m.model().find("model.layers.0.self_attn.q_proj"))->adapter(name);
      const auto& g = *dynamic_cast<const GloraLayer*>(a);
      if (g.A.kind == GloraPath::Kind::kLora) {
        EXPECT_EQ(g.A.Xd.abs().max().item<double>() == 0, init) << name;
        EXPECT_LE(g.A.Xd.abs().max().item<double>(), 0.5) << name;  // 1/sqrt(4)
      }
      if (g.B.kind == GloraPath::Kind::kVector && !init) EXPECT_LE(g.B.X.abs().max().item<double>(), 1.0);
      if (g.D.kind == GloraPath::Kind::kConstant && !init) EXPECT_LT(g.D.X.abs().item<double>(), 0.1);
    }
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(GloraTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "GLORA"}, {"r", 4}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 2e-2, "glora_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(GloraErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "GLORA", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "GLORA", "config_A_B": "full"})"),
              HasSubstr("'config_A_B' must be one of constant, lora, none, vector, got 'full'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "GLORA", "config_C": "constant"})"),
              HasSubstr("'config_C' must be one of lora, none, vector, got 'constant'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "GLORA", "config_D_E": "lora"})"),
              HasSubstr("'config_D_E' must be one of constant, none, vector, got 'lora'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "GLORA", "bias": "lora_only"})"), HasSubstr("'bias'"));
  // HF's GloraConfig has neither dropout nor layers_to_transform.
  EXPECT_THAT(user_config_error(R"({"peft_type": "GLORA", "glora_dropout": 0.1})"), HasSubstr("glora_dropout"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "GLORA", "layers_to_transform": [0]})"),
              HasSubstr("layers_to_transform"));
  // HF: "Target module Conv1D(...) is not a plain torch.nn.Linear"; make_glora.py checks it.
  EXPECT_THAT(add_adapter_error(suite, "gpt2", R"({"peft_type": "GLORA", "target_modules": ["c_attn"]})"),
              HasSubstr("GLORA: target module 'transformer.h.0.attn.c_attn' is a Conv1D; only Linear layers"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "GLORA", "target_modules": ["model.norm"]})"),
              HasSubstr("GLORA: target module 'model.norm'"));
}

}  // namespace
}  // namespace peft
