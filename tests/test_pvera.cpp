// PVeRA (HF PEFT 0.21's PVERA) against adapters HF PEFT made (tests/parity/make_pvera.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, with the
//    projections read from the file or regenerated from the key (bit for bit, VeRA's code);
//  - the sampled path is HF's: with a generator_seed, the first forward after loading draws
//    HF's noise, at inference (sample_at_inference) and in training mode;
//  - merge (the mean path) gives HF's merged logits, unmerge restores the weights;
//  - ours resaved and trained with `peft train` (which lowers the loss) load in HF PEFT with
//    our logits, in one Python process; bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "peft/peft_model.h"
#include "peft/pvera.h"
#include "peft/safetensors.h"
#include "loss_file.h"
#include "method_suite.h"
#include "suite_checks.h"
#include "test_util.h"
#include "tuners/vera/projection.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

const test::MethodSuite suite("pvera");
const std::vector<std::string> kCases = {"pvera_llama_saved", "pvera_llama_unsaved", "pvera_gpt2",
                                         "pvera_llama_sampled"};

class HfPvera : public ::testing::TestWithParam<std::string> {};

TEST_P(HfPvera, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfPvera, RegeneratesHfProjectionsBitForBit) {
  const auto c = suite.case_json(GetParam());
  SafetensorsFile ref((suite.fixture(GetParam()) / "reference.safetensors").string());
  const int64_t r = c["r"];
  const auto p = draw_shared_projection(2 * r, r, c["max_out"], c["max_in"],
                                        static_cast<uint64_t>(c["projection_prng_key"].get<int64_t>()));
  EXPECT_TRUE(at::equal(p.A, ref.get("pvera_A"))) << p.A.sizes() << " vs " << ref.get("pvera_A").sizes();
  EXPECT_TRUE(at::equal(p.B, ref.get("pvera_B"))) << p.B.sizes() << " vs " << ref.get("pvera_B").sizes();
}

INSTANTIATE_TEST_SUITE_P(Pvera, HfPvera, ::testing::ValuesIn(kCases));

class HfPveraMean : public ::testing::TestWithParam<std::string> {};

TEST_P(HfPveraMean, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  // bias="pvera_only" adapters carry their own biases, which replace the base's.
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-6,
                                [](const PeftModel& p, const std::string& n) {
                                  return dynamic_cast<const PveraConfig&>(p.config("default")).bias != "none" &&
                                         n.ends_with(".bias");
                                });
}

INSTANTIATE_TEST_SUITE_P(Pvera, HfPveraMean, ::testing::Values("pvera_llama_saved", "pvera_llama_unsaved", "pvera_gpt2"));

// sample_at_inference: the forward samples, but merging folds in the mean only (as HF).
TEST(Pvera, SampledAdapterMergesItsMean) {
  SafetensorsFile ref((suite.fixture("pvera_llama_sampled") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.load_adapter((suite.fixture("pvera_llama_sampled") / "adapter").string());
  m.merge();
  const double diff = test::max_diff(test::logits(m, test::inputs_of(ref)), ref.get("merged_logits"), test::mask_of(ref));
  std::cout << "pvera sampled, merged: max |logits - HF| = " << diff << "\n";
  EXPECT_LE(diff, kLogitTol);
}

// In training mode every forward samples (HF's _reparametrize): the first one after loading
// draws the seeded generators' noise, HF's train_logits; back in eval mode, the mean again.
TEST(Pvera, TrainingModeSamplesAsHf) {
  SafetensorsFile ref((suite.fixture("pvera_llama_saved") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.load_adapter((suite.fixture("pvera_llama_saved") / "adapter").string());
  const auto in = test::inputs_of(ref);
  m.train(true);
  const auto first = test::logits(m, in);
  const double diff = test::max_diff(first, ref.get("train_logits"), test::mask_of(ref));
  std::cout << "pvera training mode: max |logits - HF| = " << diff << "\n";
  EXPECT_LE(diff, kLogitTol);
  EXPECT_GT(test::max_diff(test::logits(m, in), first, test::mask_of(ref)), 1e-2) << "the noise must advance";
  m.train(false);
  EXPECT_LE(test::max_diff(test::logits(m, in), ref.get("logits"), test::mask_of(ref)), kLogitTol);
}

// Without a generator_seed the noise comes from the global generator: finite, fresh each call.
TEST(Pvera, UnseededSamplingDrawsFreshNoise) {
  SafetensorsFile ref((suite.fixture("pvera_llama_saved") / "reference.safetensors").string());
  const auto in = test::inputs_of(ref);
  for (bool sample : {true, false}) {
    PeftModel m(load_model(suite.fixture("llama").string()));
    json cfg = {{"peft_type", "PVERA"}, {"r", 4}, {"init_weights", false}, {"sample_at_inference", sample}};
    m.add_adapter("default", *parse_user_adapter_config(cfg, "m"), 3);
    const auto a = test::logits(m, in), b = test::logits(m, in);
    EXPECT_TRUE(at::isfinite(a).all().item<bool>());
    EXPECT_EQ(a.sizes(), ref.get("logits").sizes());
    if (sample) EXPECT_GT(test::max_diff(a, b, test::mask_of(ref)), 1e-3);
    else EXPECT_EQ(test::max_diff(a, b, test::mask_of(ref)), 0.0);
  }
}

// HF's init: lambda_b = 0 (the base, sampled or not), all 2r entries of lambda_d = d_initial.
TEST(Pvera, NewAdapterStartsAtTheBase) {
  SafetensorsFile ref((suite.fixture("pvera_llama_saved") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  m.add_adapter("default", *parse_user_adapter_config(json::parse(R"({"peft_type": "PVERA", "r": 4})"), "m"), 3);
  m.train(true);
  EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-6);
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find("model.layers.0.self_attn.q_proj"));
  const auto* a = dynamic_cast<PveraLayer*>(host->adapter("default"));
  ASSERT_NE(a, nullptr);
  EXPECT_TRUE(at::equal(a->lambda_d, at::full({8}, 0.1f)));
}

// Resaved HF adapters (HF's file keys) and one trained here with `peft train` load in HF
// PEFT with our logits, in one Python process; the training (which samples) lowered the loss.
TEST(PveraTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "PVERA"}, {"r", 64}, {"target_modules", "all-linear"}, {"generator_seed", 1}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 120, 1e-1, "pvera_llama_saved");
}

using test::user_config_error;

TEST(PveraErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "PVERA", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PVERA", "bias": "vera_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PVERA", "pvera_dropout": 1.5})"), HasSubstr("'pvera_dropout'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PVERA", "generator_seed": "x"})"), HasSubstr("'generator_seed'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "PVERA", "sample_at_inferense": true})"),
              HasSubstr("sample_at_inference"));
}

TEST(PveraErrors, SavedProjectionMissingFromTheFileIsNamed) {
  const auto dir = suite.scratch("no_projection");
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    fs::copy_file(suite.fixture("pvera_llama_saved") / "adapter" / f, dir / f);
  test::drop_tensor((dir / "adapter_model.safetensors").string(), "base_model.pvera_B");
  PeftModel m(load_model(suite.fixture("llama").string()));
  try {
    m.load_adapter(dir.string());
    FAIL() << "loaded without pvera_B";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("missing tensor 'base_model.pvera_B'"));
  }
}

}  // namespace
}  // namespace peft
