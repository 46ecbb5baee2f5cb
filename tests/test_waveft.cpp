// WaveFT (HF PEFT 0.21's WAVEFT) against adapters HF PEFT made (tests/parity/make_waveft.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line: db1 on HF's
//    default targets, sym4 with an n_frequency_pattern and a negative seed, coif2 with
//    proportional_parameters on layer 1, the sparse matrix itself (use_idwt false) with
//    trained biases, GPT-2's Conv1D with db3 and bias "all";
//  - the seeded positions equal HF's waveft_indices, each layer's delta HF's
//    get_delta_weight; merge gives HF's merged logits and unmerge restores the weights;
//  - our waverec2d equals HF's for every wavelet family we accept;
//  - a new adapter starts at the base (init_weights) or off it; resaved, and trained with
//    `peft train` (which lowers the eval loss), adapters load in HF PEFT with our logits
//    (one Python process); bad settings and HF's unusable families are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/waveft.h"
#include "loss_file.h"
#include "method_suite.h"
#include "suite_checks.h"
#include "test_util.h"
#include "tuners/waveft/waverec2d.h"

using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"waveft_llama", "waveft_llama_sym", "waveft_llama_coif",
                                         "waveft_llama_direct", "waveft_gpt2"};

const test::MethodSuite suite("waveft");

class HfWaveft : public ::testing::TestWithParam<std::string> {};

TEST_P(HfWaveft, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfWaveft, DeltasAreHfs) {
  const auto layers = test::expect_deltas_as_hf<WaveftLayer>(
      suite, GetParam(), [](const WaveftLayer& a) { return a.delta_weight(); });
  EXPECT_GE(layers, 4);
}

// The positions are never filed: both sides draw them from random_loc_seed.
TEST_P(HfWaveft, PositionsAreHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("indices.", 0) != 0) continue;
    const auto path = key.substr(8);
    auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
    const auto* a = host ? dynamic_cast<const WaveftLayer*>(host->adapter("default")) : nullptr;
    ASSERT_NE(a, nullptr) << path;
    EXPECT_TRUE(at::equal(at::stack({a->rows, a->cols}).cpu(), ref.get(key))) << path;
    ++layers;
  }
  EXPECT_GE(layers, 4);
}

TEST_P(HfWaveft, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5,
                                [](const PeftModel& p, const std::string& n) {
                                  return dynamic_cast<const WaveftConfig&>(p.config("default")).bias != "none" &&
                                         n.ends_with(".bias");
                                });
}

INSTANTIATE_TEST_SUITE_P(Waveft, HfWaveft, ::testing::ValuesIn(kCases));

// HF's waverec2d of random [15, 20] quarters, for each of the 23 families we accept.
TEST(WaveftTransform, Waverec2dIsHfsForEveryFamily) {
  SafetensorsFile ref((suite.fixture("waverec2d.safetensors")).string());
  int families = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("coeffs.", 0) != 0) continue;
    const auto family = key.substr(7);
    const auto c = ref.get(key);
    const auto got = waverec2d(c[0], c[1], c[2], c[3], family);
    const auto want = ref.get("out." + family);
    ASSERT_EQ(got.sizes(), want.sizes()) << family;
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-6) << family;
    ++families;
  }
  EXPECT_EQ(families, 23);
}

// init_weights (HF's default) starts the coefficients at zero, so a new adapter of each
// case's config computes the base's logits; init_weights false (N(0, 0.01²)) moves off them.
TEST(Waveft, NewAdapterStartsAtTheBase) {
  test::expect_new_adapters_start_at_base(suite, kCases, "init_weights", true, false, 1e-4);
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(WaveftTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {
      {"peft_type", "WAVEFT"}, {"n_frequency", 256}, {"wavelet_family", "db2"},
      {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 2e-3, "waveft_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(WaveftErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "WAVEFT", "n_frequency": 0})"),
              HasSubstr("'n_frequency' must be a positive integer"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "WAVEFT", "n_frequency_pattern": {"q_proj": -1}})"),
              HasSubstr("'n_frequency_pattern' entry 'q_proj' must be positive"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "WAVEFT", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "WAVEFT", "wavelet_family": "haar"})"),
              HasSubstr("'wavelet_family' must be one of HF's families"));
  // In HF's config list, but HF's waverec2d has no filter (db11+) or a broken one (coif5).
  for (const auto* family : {"db11", "sym20", "coif5", "coif17"})
    EXPECT_THAT(user_config_error(std::string(R"({"peft_type": "WAVEFT", "wavelet_family": ")") + family + "\"}"),
                HasSubstr("has no working filter in HF PEFT's waverec2d"))
        << family;
  EXPECT_THAT(user_config_error(R"({"peft_type": "WAVEFT", "target_modules": ".*q_proj", "layers_to_transform": [0]})"),
              HasSubstr("layers_to_transform"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "WAVEFT", "layers_pattern": "layers"})"),
              HasSubstr("'layers_pattern' needs 'layers_to_transform'"));
  // HF's default n_frequency (2592) is more than the tiny Llama's q_proj holds (32 x 32).
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "WAVEFT"})"),
              HasSubstr("WAVEFT: n_frequency 2592 of 'model.layers.0.self_attn.q_proj' exceeds its 1024 weights"));
  EXPECT_THAT(add_adapter_error(suite, "llama",
                                R"({"peft_type": "WAVEFT", "n_frequency": 8, "target_modules": ["embed_tokens"]})"),
              HasSubstr("WAVEFT: target module 'model.embed_tokens' is a"));
}

}  // namespace
}  // namespace peft
