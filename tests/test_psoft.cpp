// PSOFT (HF PEFT 0.21's PSOFT) against adapters HF PEFT made (tests/parity/make_psoft.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line: the exact
//    Cayley transform with psoft_init factors, the Neumann series with its norm cap and
//    pissa_init factors, a free R with factors from the seeded torch.svd_lowrank;
//  - the frozen factors A and B (never filed) are HF's, signs included; each layer's delta
//    equals HF's get_delta_weight; merge gives HF's merged logits and unmerge restores them;
//  - a new adapter computes the base's logits; resaved, and trained with `peft train`
//    (which lowers the eval loss), adapters load in HF PEFT with our logits (one Python
//    process); bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/peft_model.h"
#include "peft/psoft.h"
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
const std::vector<std::string> kCases = {"psoft_llama", "psoft_llama_opts", "psoft_llama_free"};

const test::MethodSuite suite("psoft");

class HfPsoft : public ::testing::TestWithParam<std::string> {};

TEST_P(HfPsoft, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfPsoft, DeltasAreHfs) {
  const auto layers = test::expect_deltas_as_hf<PsoftLayer>(
      suite, GetParam(), [](const PsoftLayer& a) { return a.delta_weight(); });
  EXPECT_GE(layers, 3);
}

TEST_P(HfPsoft, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

// A and B come from the base weight's SVD when the adapter loads: the same LAPACK calls
// (and for svd_lowrank the same seeded sketch) as HF's, so the same singular-vector signs;
// a flipped pair would show as twice an entry.
TEST_P(HfPsoft, FrozenFactorsAreHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int layers = 0;
  double worst = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("A.", 0) != 0) continue;
    const auto path = key.substr(2);
    auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
    const auto* a = host ? dynamic_cast<const PsoftLayer*>(host->adapter("default")) : nullptr;
    ASSERT_NE(a, nullptr) << path;
    for (const auto& [factor, mine] : {std::pair{"A.", a->A}, std::pair{"B.", a->B}}) {
      const auto hf = ref.get(factor + path);
      ASSERT_EQ(mine.sizes(), hf.sizes()) << factor << path;
      const double d = (mine.cpu() - hf).abs().max().item<double>();
      worst = std::max(worst, d / std::max(1.0, hf.abs().max().item<double>()));
      EXPECT_LE(d, 1e-4 * std::max(1.0, hf.abs().max().item<double>())) << factor << path;
    }
    ++layers;
  }
  EXPECT_GE(layers, 3);
  std::cout << name << ": max relative |A, B - HF's| " << worst << " over " << layers << " layers\n";
}

INSTANTIATE_TEST_SUITE_P(Psoft, HfPsoft, ::testing::ValuesIn(kCases));

// R starts at the identity (Q = 0, vectors of ones; a free R at I), so a new adapter of each
// case's config computes the base's logits; init_weights false moves off them.
TEST(Psoft, NewAdapterStartsAtTheBase) {
  test::expect_new_adapters_start_at_base(suite, kCases, "init_weights", true, false, 1e-4);
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(PsoftTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "PSOFT"}, {"r", 12}, {"psoft_alpha", 12},
                       {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 0.05, "psoft_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(PsoftErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "PSOFT", "r": 0})"), HasSubstr("'r' must be a positive integer"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PSOFT", "ab_svd_init": "olora"})"), HasSubstr("'ab_svd_init'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PSOFT", "psoft_svd": "randomized"})"), HasSubstr("'psoft_svd'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PSOFT", "psoft_dropout": 1.0})"), HasSubstr("'psoft_dropout'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PSOFT", "use_cayley_neumann": true, "num_cayley_neumann_terms": 0})"),
              HasSubstr("'num_cayley_neumann_terms'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PSOFT", "use_cayley_neumann": true, "cayley_neumann_eps": 1.5})"),
              HasSubstr("'cayley_neumann_eps' must be in (0, 1)"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PSOFT", "layers_pattern": "layers"})"),
              HasSubstr("'layers_pattern' needs 'layers_to_transform'"));
  // HF's default r (32) is larger than the tiny Llama's v_proj (32 -> 16).
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "PSOFT"})"),
              HasSubstr("PSOFT: 'r' (32) of 'model.layers.0.self_attn.v_proj' must be at most"));
  // HF refuses GPT-2's Conv1D ("not supported by minimal PSOFT"); so do we, by name.
  EXPECT_THAT(add_adapter_error(suite, "gpt2", R"({"peft_type": "PSOFT", "r": 4, "target_modules": ["c_attn"]})"),
              HasSubstr("PSOFT: target module 'transformer.h.0.attn.c_attn' is a Conv1D"));
}

}  // namespace
}  // namespace peft
