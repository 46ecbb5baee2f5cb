// OSF (HF PEFT 0.21's OSF) against adapters HF PEFT made (tests/parity/make_osf.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, on HF's default
//    targets and with all-linear, a fractional effective_rank and a rank_pattern;
//  - each layer's delta equals HF's get_delta_weight; merging gives HF's merged logits (and,
//    unlike HF, unmerging restores the weights);
//  - the gradients of U_low, S_low and V_low equal HF's after its projection hooks (square
//    and non-square factors);
//  - a new adapter starts at HF's SVD init (the same singular-vector signs) and at the
//    base; resaved, and trained with `peft train` (which lowers the eval loss), adapters
//    load in HF PEFT with our logits (one Python process); bad settings are named.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "peft/osf.h"
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
const std::vector<std::string> kCases = {"osf_llama", "osf_llama_opts"};

const test::MethodSuite suite("osf");

OsfLayer* osf_layer(PeftModel& m, const std::string& path, const std::string& adapter = "default") {
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
  return host ? dynamic_cast<OsfLayer*>(host->adapter(adapter)) : nullptr;
}

class HfOsf : public ::testing::TestWithParam<std::string> {};

TEST_P(HfOsf, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfOsf, DeltasAreHfs) {
  const auto layers =
      test::expect_deltas_as_hf<OsfLayer>(suite, GetParam(), [](const OsfLayer& a) { return a.delta_weight(); });
  EXPECT_EQ(layers, 14);
}

TEST_P(HfOsf, MergesAsHfAndUnmerges) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Osf, HfOsf, ::testing::ValuesIn(kCases));

// HF projects the gradients of U_low and V_low off the frozen top subspace with hooks
// (through U_high / V_high where a factor is not square, through U_low⁰ / V_low⁰ where it
// is); ours gives the same gradients of sum(logits * R).
TEST(Osf, GradientsAreHfsProjectedOnes) {
  SafetensorsFile ref((suite.fixture("osf_llama_opts") / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of("osf_llama_opts").string()));
  m.load_adapter((suite.fixture("osf_llama_opts") / "adapter").string());
  std::vector<OsfLayer*> layers;
  for (const auto& [path, _] : m.model().named_modules())
    if (auto* a = osf_layer(m, path)) {
      for (auto* t : a->trainable_slots()) t->requires_grad_(true);
      layers.push_back(a);
    }
  ASSERT_EQ(layers.size(), 14u);
  (m.forward(test::inputs_of(ref)).logits * ref.get("grad_weights")).sum().backward();
  int checked = 0;
  double worst = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("grad.", 0) != 0) continue;
    const auto rest = key.substr(5);
    const auto dot = rest.rfind('.');
    auto* a = osf_layer(m, rest.substr(0, dot));
    ASSERT_NE(a, nullptr) << key;
    const auto factor = rest.substr(dot + 1);
    const at::Tensor& p = factor == "U_low" ? a->U_low : factor == "S_low" ? a->S_low : a->V_low;
    ASSERT_TRUE(p.grad().defined()) << key;
    const double scale = ref.get(key).abs().max().item<double>();
    const double d = (p.grad() - ref.get(key)).abs().max().item<double>();
    worst = std::max(worst, d);
    EXPECT_LE(d, 1e-5 * std::max(1.0, scale)) << key;
    ++checked;
  }
  std::cout << "osf gradients: max |ours - HF's| = " << worst << " over " << checked << " tensors\n";
  EXPECT_EQ(checked, 12);
  // The projection is what makes them differ from plain gradients: U_high sees none.
  auto* up = osf_layer(m, "model.layers.1.mlp.up_proj");
  ASSERT_TRUE(up->U_high.defined());
  EXPECT_LE(at::mm(up->U_high.t(), up->U_low.grad()).abs().max().item<double>(), 1e-6);
}

// A new adapter's U_low, S_low and V_low are HF's (torch.linalg.svd's signs included), and
// it computes the base's logits; init_weights false moves off the base.
TEST(Osf, NewAdapterStartsAtHfsSvdInit) {
  SafetensorsFile ref((suite.fixture("osf_llama") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  m.add_adapter("default", *parse_user_adapter_config(json{{"peft_type", "OSF"}}, "m"), 3);
  EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-5);
  int checked = 0;
  double worst = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("init.", 0) != 0) continue;
    const auto rest = key.substr(5);
    const auto dot = rest.rfind('.');
    auto* a = osf_layer(m, rest.substr(0, dot));
    ASSERT_NE(a, nullptr) << key;
    const auto factor = rest.substr(dot + 1);
    const at::Tensor& p = factor == "U_low" ? a->U_low : factor == "S_low" ? a->S_low : a->V_low;
    ASSERT_EQ(p.sizes(), ref.get(key).sizes()) << key;
    const double d = (p - ref.get(key)).abs().max().item<double>();
    worst = std::max(worst, d);
    EXPECT_LE(d, 1e-4) << key << " (a sign flip shows as ~2x the entry)";
    ++checked;
  }
  std::cout << "osf init: max |ours - HF's SVD factors| = " << worst << " over " << checked << " tensors\n";
  EXPECT_EQ(checked, 42);
  m.add_adapter("random", *parse_user_adapter_config(json{{"peft_type", "OSF"}, {"init_weights", false}}, "m"), 3);
  m.set_adapter({"random"});
  EXPECT_GT(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-3);
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(OsfTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "OSF"}, {"effective_rank", 0.5}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 1e-2, "osf_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(OsfErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "OSF", "effective_rank": 0})"), HasSubstr("'effective_rank'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "OSF", "effective_rank": "half"})"),
              HasSubstr("'effective_rank' must be a number"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "OSF", "rank_pattern": {"q_proj": -0.5}})"),
              HasSubstr("rank_pattern 'q_proj'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "OSF", "rank_pattern": {"(q": 4}})"), HasSubstr("(q"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "OSF", "exclude_modules": ["k_proj"]})"),
              HasSubstr("exclude_modules"));
  // HF's OSF silently skips GPT-2's Conv1D layers (an adapter of nothing): refused by name.
  EXPECT_THAT(add_adapter_error(suite, "gpt2", R"({"peft_type": "OSF"})"),
              HasSubstr("OSF: target module 'transformer.h.0.attn.c_attn' is a Conv1D; only Linear layers"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "OSF", "effective_rank": 0.01})"),
              HasSubstr("OSF: the effective_rank of 'model.layers.0.self_attn.q_proj' resolves to 0"));
}

}  // namespace
}  // namespace peft
