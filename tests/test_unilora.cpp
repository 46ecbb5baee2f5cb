// UniLoRA (HF PEFT 0.21's UNILORA) against adapters HF PEFT made (tests/parity/make_unilora.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, on Linear and
//    GPT-2's Conv1D, with the indices drawn again from proj_seed or read from the file
//    (save_indices), and trained biases (bias unilora_only);
//  - every layer's index and scale buffers equal HF's bit for bit, as does NumPy's index
//    draw itself (its Floyd and tail-shuffle paths); each layer's B A equals HF's
//    get_delta_weight; merge gives HF's merged logits and unmerge restores the weights;
//  - a new adapter's θ_d is HF's (torch's first draw after the seed, both inits);
//  - resaved (the same file keys as HF's), and trained with `peft train` (which lowers the
//    eval loss), adapters load in HF PEFT with our logits (one Python process); bad
//    settings are named.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "loss_file.h"
#include "method_suite.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/unilora.h"
#include "suite_checks.h"
#include "test_util.h"

using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"unilora_llama", "unilora_llama_saved", "unilora_gpt2"};

const test::MethodSuite suite("unilora");

class HfUnilora : public ::testing::TestWithParam<std::string> {};

TEST_P(HfUnilora, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfUnilora, IndicesAndScalesAreHfsBitForBit) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("indices_A.", 0) != 0) continue;
    const auto path = key.substr(10);
    auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
    const auto* a = host ? dynamic_cast<const UniloraLayer*>(host->adapter("default")) : nullptr;
    ASSERT_NE(a, nullptr) << path;
    EXPECT_TRUE(at::equal(a->indices_A, ref.get("indices_A." + path))) << path;
    EXPECT_TRUE(at::equal(a->indices_B, ref.get("indices_B." + path))) << path;
    EXPECT_TRUE(at::equal(a->scales_A, ref.get("scales_A." + path))) << path;
    EXPECT_TRUE(at::equal(a->scales_B, ref.get("scales_B." + path))) << path;
    ++layers;
  }
  EXPECT_GE(layers, 4);
}

TEST_P(HfUnilora, DeltasAreHfs) {
  const auto layers = test::expect_deltas_as_hf<UniloraLayer>(suite, GetParam(),
                                                              [](const UniloraLayer& a) { return a.delta_weight(); });
  EXPECT_GE(layers, 4);
}

TEST_P(HfUnilora, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  // The weights come back to 1e-6; biases the adapter trained (bias unilora_only) stay loaded.
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-6,
                                [](const PeftModel&, const std::string& n) { return n.ends_with(".bias"); });
}

INSTANTIATE_TEST_SUITE_P(Unilora, HfUnilora, ::testing::ValuesIn(kCases));

// HF's generate_index is NumPy's default_rng(proj_seed): choice without replacement, then
// shuffle. Our mirror draws the same integers ("index.<count>_<length>_<seed>").
TEST(Unilora, IndexDrawIsNumpys) {
  SafetensorsFile ref((std::filesystem::path(PEFT_PARITY_DIR) / "unilora" / "indices.safetensors").string());
  int draws = 0;
  for (const auto& key : ref.names()) {
    int64_t count = 0, length = 0;
    uint64_t seed = 0;
    ASSERT_EQ(std::sscanf(key.c_str(), "index.%ld_%ld_%lu", &count, &length, &seed), 3) << key;
    EXPECT_TRUE(at::equal(unilora_generate_index(count, length, seed), ref.get(key))) << key;
    ++draws;
  }
  EXPECT_EQ(draws, 4);
}

// θ_d of a new adapter is torch's first draw after the seed, as in HF (get_peft_model
// after torch.manual_seed(5)): U(±bound), or N(0, 1) with init_weights false.
TEST(Unilora, NewAdapterStartsAtHfsInit) {
  SafetensorsFile ref((std::filesystem::path(PEFT_PARITY_DIR) / "unilora" / "init.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  for (const auto& [name, init] : {std::pair{"uniform", "true"}, std::pair{"normal", "false"}}) {
    m.add_adapter(name,
                  *parse_user_adapter_config(json::parse(std::string(R"({"peft_type": "UNILORA", "r": 2,
                      "theta_d_length": 40, "init_theta_d_bound": 0.05, "init_weights": )") + init + "}"),
                                             "m"),
                  5);
    at::Tensor theta;
    for (const auto& [key, t] : m.adapter_state_dict(name))
      if (key == "base_model.unilora_theta_d") theta = t;
    ASSERT_TRUE(theta.defined()) << name;
    EXPECT_TRUE(at::equal(theta, ref.get(name))) << name;
  }
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(UniloraTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "UNILORA"}, {"r", 4}, {"theta_d_length", 512}, {"target_modules", "all-linear"}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 0.05, "unilora_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(UniloraErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "UNILORA", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "UNILORA", "theta_d_length": 0})"), HasSubstr("'theta_d_length'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "UNILORA", "proj_seed": -1})"), HasSubstr("'proj_seed'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "UNILORA", "unilora_dropout": 1.5})"), HasSubstr("'unilora_dropout'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "UNILORA", "init_theta_d_bound": 0})"),
              HasSubstr("'init_theta_d_bound'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "UNILORA", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "UNILORA", "target_modules": ".*proj", "layers_to_transform": [0]})"),
              HasSubstr("'layers_to_transform'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "UNILORA", "topk": 2})"), HasSubstr("topk"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "UNILORA", "target_modules": ["embed_tokens"]})"),
              HasSubstr("UNILORA: target module 'model.embed_tokens'"));
}

// A save_indices file whose indices do not address θ_d is named on load.
TEST(UniloraErrors, IndicesOutsideThetaDAreNamed) {
  const auto work = suite.scratch("bad_indices");
  std::filesystem::copy(suite.fixture("unilora_llama_saved") / "adapter", work / "adapter");
  const auto st = (work / "adapter" / "adapter_model.safetensors").string();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::string bad;
  {
    SafetensorsFile f(st);
    for (const auto& k : f.names()) {
      tensors.emplace_back(k, f.get(k).clone());
      if (bad.empty() && k.ends_with(".unilora_indices_B")) bad = k;
    }
  }
  ASSERT_FALSE(bad.empty());
  for (auto& [k, t] : tensors)
    if (k == bad) t.view(-1)[0] = 100;  // theta_d_length is 100
  save_safetensors(st, tensors, {{"format", "pt"}});
  PeftModel m(load_model(suite.base_of("unilora_llama_saved").string()));
  try {
    m.load_adapter((work / "adapter").string());
    FAIL() << "index 100 is outside theta_d";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr(bad + "' holds indices outside theta_d's 100 entries"));
  }
}

}  // namespace
}  // namespace peft
