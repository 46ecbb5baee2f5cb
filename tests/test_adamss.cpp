// ADAMSS (HF PEFT 0.21's AdaMSS) against adapters HF PEFT made (tests/parity/make_adamss.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line: default targets
//    with rank-1 subspaces, a Llama with biases (the bias column in the SVD, random B init,
//    one layer), dynamic subspace ranks;
//  - the output-row grouping (never filed: scikit-learn's KMeans of the seeded svd_lowrank's
//    left singular vectors, recomputed from the base when a file loads) is HF's row for row,
//    and a new adapter's frozen projection newB is HF's filed one; each layer's weight and
//    bias deltas equal HF's get_delta_weight / get_delta_bias; merge gives HF's merged
//    logits and unmerge restores them;
//  - a new adapter computes the base's logits (init_weights null moves off them); an ASA
//    adapter (use_asa true, which files nothing more) loads and runs, training it is refused;
//  - resaved, and trained with `peft train` (which lowers the eval loss), adapters load in
//    HF PEFT with our logits (one Python process); bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/adamss.h"
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
const std::vector<std::string> kCases = {"adamss_llama", "adamss_llama_bias", "adamss_llama_dyn"};

const test::MethodSuite suite("adamss");

const AdamssLayer* adamss_of(PeftModel& m, const std::string& path, const std::string& name = "default") {
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
  return host ? dynamic_cast<const AdamssLayer*>(host->adapter(name)) : nullptr;
}

class HfAdamss : public ::testing::TestWithParam<std::string> {};

TEST_P(HfAdamss, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfAdamss, DeltasAreHfs) {
  const auto name = GetParam();
  const auto layers = test::expect_deltas_as_hf<AdamssLayer>(
      suite, name, [](const AdamssLayer& a) { return a.delta_weight(); });
  EXPECT_GE(layers, 4);
  // The bias column's share (HF's get_delta_bias, merged into the bias).
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int biased = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("delta_bias.", 0) != 0) continue;
    const auto* a = adamss_of(m, key.substr(11));
    ASSERT_NE(a, nullptr) << key;
    c10::InferenceMode g;
    EXPECT_LE((a->delta_bias().cpu() - ref.get(key)).abs().max().item<double>(), 1e-5) << key;
    ++biased;
  }
  if (name == "adamss_llama_bias") EXPECT_EQ(biased, 7);
}

TEST_P(HfAdamss, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

// The grouping of output rows is recomputed from the base weight (HF does the same when a
// file loads): the seeded svd_lowrank, then scikit-learn's KMeans (numpy's MT19937 choice of
// the first centers, Lloyd's steps) — the same groups, so the same scatter order. A new
// adapter's newB (the sketch's right singular vectors) is the one HF filed.
TEST_P(HfAdamss, GroupingAndProjectionAreHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  auto cfg = json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json"));
  PeftModel loaded(load_model(suite.base_of(name).string()));
  loaded.load_adapter((suite.fixture(name) / "adapter").string());
  PeftModel fresh(load_model(suite.base_of(name).string()));
  fresh.add_adapter("default", *parse_adapter_config(cfg, "fresh"), 3);
  int layers = 0;
  double worst = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("scatter.", 0) != 0) continue;
    const auto path = key.substr(8);
    const auto hf = ref.get(key).to(at::kLong);
    for (auto* m : {&loaded, &fresh}) {
      const auto* a = adamss_of(*m, path);
      ASSERT_NE(a, nullptr) << path;
      ASSERT_EQ(a->scatter_index.sizes(), hf.sizes()) << path;
      EXPECT_TRUE(at::equal(a->scatter_index.cpu(), hf)) << path;
    }
    const auto* a = adamss_of(fresh, path);
    const auto nb = ref.get("newB." + path);
    ASSERT_EQ(a->newB.sizes(), nb.sizes()) << path;
    const double d = (a->newB.cpu() - nb).abs().max().item<double>();
    worst = std::max(worst, d);
    EXPECT_LE(d, 1e-4) << path;
    ++layers;
  }
  EXPECT_GE(layers, 4);
  std::cout << name << ": groupings equal, max |newB - HF's| " << worst << " over " << layers << " layers\n";
}

INSTANTIATE_TEST_SUITE_P(Adamss, HfAdamss, ::testing::ValuesIn(kCases));

// B starts at zero (init_weights "orthogonal"), so a new adapter of each case's config
// computes the base's logits; init_weights null (B ~ N(0, 0.01²)) moves off them.
TEST(Adamss, NewAdapterStartsAtTheBase) {
  test::expect_new_adapters_start_at_base(suite, kCases, "init_weights", "orthogonal", nullptr, 1e-6);
}

// HF's ASA keeps its importance statistics and masks (requires_grad flags) in memory only:
// the file of an ASA adapter is an ordinary one, so it loads and runs with the same logits.
// Training one would need HF's Trainer callback, so it is refused by name.
TEST(Adamss, AsaAdapterLoadsButDoesNotTrain) {
  const std::string name = "adamss_llama";
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  const auto work = suite.scratch("asa");
  std::filesystem::copy(suite.fixture(name) / "adapter", work / "adapter", std::filesystem::copy_options::recursive);
  auto cfg = json::parse(std::ifstream(work / "adapter" / "adapter_config.json"));
  cfg["use_asa"] = true;
  cfg["asa_target_subspaces"] = 4;
  std::ofstream(work / "adapter" / "adapter_config.json", std::ios::trunc) << cfg.dump(1);
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((work / "adapter").string());
  EXPECT_LE(test::max_diff(test::logits(m, test::inputs_of(ref)), ref.get("logits"), test::mask_of(ref)), kLogitTol);
  try {
    m.begin_training(10);
    ADD_FAILURE() << "training an ASA adapter must be refused";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("ADAMSS: 'use_asa' true"));
    EXPECT_THAT(e.what(), HasSubstr("not supported yet"));
  }
}

// Resaved HF adapters (the same file keys as HF's, adamss_newB included) and one trained
// here with `peft train` load in HF PEFT with our logits, in one Python process; the
// training lowered the loss.
TEST(AdamssTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "ADAMSS"}, {"r", 12}, {"num_subspaces", 4}, {"subspace_rank", 2},
                       {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 0.05, "adamss_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(AdamssErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAMSS", "r": 0})"), HasSubstr("'r' must be a positive integer"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAMSS", "num_subspaces": 0})"), HasSubstr("'num_subspaces'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAMSS", "subspace_rank": 0})"), HasSubstr("'subspace_rank'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAMSS", "init_weights": "kaiming"})"),
              HasSubstr("'init_weights' must be 'orthogonal' or null"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAMSS", "use_asa": true, "mask_interval": 0})"),
              HasSubstr("'mask_interval'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAMSS", "use_asa": true, "init_warmup": 10, "final_warmup": 10})"),
              HasSubstr("'init_warmup' must be smaller than 'final_warmup'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAMSS", "use_asa": true, "asa_target_subspaces": 0})"),
              HasSubstr("'asa_target_subspaces'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAMSS", "use_asa": true, "asa_schedule_exponent": 0})"),
              HasSubstr("'asa_schedule_exponent'"));
  // Outside ASA, HF checks none of its schedule.
  EXPECT_EQ(user_config_error(R"({"peft_type": "ADAMSS", "mask_interval": 0})"), "");
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAMSS", "layers_pattern": "layers"})"),
              HasSubstr("'layers_pattern' needs 'layers_to_transform'"));
  // HF refuses GPT-2's Conv1D ("only `torch.nn.Linear` is supported"); so do we, by name.
  EXPECT_THAT(add_adapter_error(suite, "gpt2", R"({"peft_type": "ADAMSS", "r": 4, "target_modules": ["c_attn"]})"),
              HasSubstr("ADAMSS: target module 'transformer.h.0.attn.c_attn' is a Conv1D"));
}

}  // namespace
}  // namespace peft
