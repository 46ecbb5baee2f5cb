// Super-Tuning (HF PEFT 0.21's SUPERTUNING) against adapters HF PEFT made
// (tests/parity/make_supertuning.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line: values only on
//    the default targets, Supra (LoRA term, select_top false, init_weights false) on a Llama
//    with biases, and save_precomputed_indices false (the support chosen again at load);
//  - each layer's support is the one HF chose by |W|, its delta equals HF's
//    get_delta_weight; merge gives HF's merged logits and unmerge restores the weights;
//  - a new adapter picks HF's support and starts at the base; resaved, and trained with
//    `peft train` (which lowers the eval loss), adapters load in HF PEFT with our logits and
//    HF's file keys (one Python process); GPT-2's Conv1D is refused as HF does; bad settings
//    are named.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/supertuning.h"
#include "loss_file.h"
#include "method_suite.h"
#include "suite_checks.h"
#include "test_util.h"

using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"st_llama", "st_llama_supra", "st_llama_noidx"};

const test::MethodSuite suite("supertuning");

// Every "indices.<path>" of case `name`'s reference equals the support of adapter `adapter`
// of `m` there (HF's topk order); returns how many layers matched.
int expect_hf_supports(PeftModel& m, const std::string& name, const std::string& adapter) {
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("indices.", 0) != 0) continue;
    auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(key.substr(8)));
    const auto* a = host ? dynamic_cast<const SupertuningLayer*>(host->adapter(adapter)) : nullptr;
    EXPECT_NE(a, nullptr) << key;
    if (!a) continue;
    EXPECT_EQ(a->indices.scalar_type(), at::kInt) << key;
    EXPECT_TRUE(at::equal(a->indices.to(at::kInt), ref.get(key))) << key;
    ++layers;
  }
  return layers;
}

class HfSupertuning : public ::testing::TestWithParam<std::string> {};

TEST_P(HfSupertuning, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfSupertuning, SupportsAndDeltasAreHfs) {
  const auto name = GetParam();
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  EXPECT_GE(expect_hf_supports(m, name, "default"), 4);
  const auto layers = test::expect_deltas_as_hf<SupertuningLayer>(
      suite, name, [](const SupertuningLayer& a) { return a.delta_weight(); });
  EXPECT_GE(layers, 4);
}

TEST_P(HfSupertuning, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Supertuning, HfSupertuning, ::testing::ValuesIn(kCases));

// HF's update_layer: the support is topk(|W|) (largest or smallest), values and B start at
// zero, so a new adapter has HF's indices and computes the base's logits.
TEST(Supertuning, NewAdapterTakesHfsSupportAndStartsAtTheBase) {
  SafetensorsFile ref((suite.fixture("st_llama") / "reference.safetensors").string());
  const auto in = test::inputs_of(ref);
  {
    PeftModel m(load_model(suite.fixture("llama").string()));
    const auto base = test::logits(m, in);
    m.add_adapter("default", *parse_user_adapter_config(json{{"peft_type", "SUPERTUNING"}, {"sparsity", 0.9}}, "m"), 3);
    EXPECT_EQ(expect_hf_supports(m, "st_llama", "default"), 4);
    EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-6);
  }
  PeftModel m(load_model(suite.fixture("llama_bias").string()));
  const auto base = test::logits(m, in);
  m.add_adapter("default",
                *parse_user_adapter_config(json{{"peft_type", "SUPERTUNING"}, {"sparsity", 0.95}, {"select_top", false},
                                                {"r", 3}, {"lora_alpha", 5},
                                                {"target_modules", {"o_proj", "up_proj", "down_proj"}}},
                                           "m"),
                3);
  EXPECT_EQ(expect_hf_supports(m, "st_llama_supra", "default"), 6);
  EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-6);
}

// Resaved HF adapters (the same file keys as HF's: no indices with save_precomputed_indices
// false) and one trained here with `peft train` load in HF PEFT with our logits, in one
// Python process; the training lowered the loss.
TEST(SupertuningTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "SUPERTUNING"}, {"sparsity", 0.9}, {"r", 2},
                       {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 2e-2, "st_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(SupertuningErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "SUPERTUNING", "sparsity": 1.0})"), HasSubstr("'sparsity'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SUPERTUNING", "r": 0})"), HasSubstr("'r' must be a positive"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SUPERTUNING", "lora_alpha": 8})"),
              HasSubstr("'lora_alpha' is set but 'r' is null"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SUPERTUNING", "r": 2, "lora_dropout": 1.5})"),
              HasSubstr("'lora_dropout'"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "SUPERTUNING", "sparsity": 0.9999})"),
              HasSubstr("leaves no trainable entries for 'model.layers.0.self_attn.q_proj'"));
  // HF: "Target module Conv1D(...) is not supported. Currently, only `torch.nn.Linear` is supported."
  std::ifstream hf_refusal(suite.fixture("gpt2_refusal.txt"));
  std::string hf;
  std::getline(hf_refusal, hf);  // one line
  EXPECT_THAT(hf, HasSubstr("only `torch.nn.Linear` is supported"));
  EXPECT_THAT(add_adapter_error(suite, "gpt2", R"({"peft_type": "SUPERTUNING", "target_modules": ["c_attn"]})"),
              HasSubstr("SUPERTUNING: target module 'transformer.h.0.attn.c_attn' is a Conv1D; only Linear layers"));
  {  // a file's positions outside the weight are named by their key at the first forward
    PeftModel loaded(load_model(suite.fixture("llama").string()));
    loaded.load_adapter((suite.fixture("st_llama") / "adapter").string());
    auto* host = dynamic_cast<AdaptableLayer*>(loaded.model().find("model.layers.1.self_attn.v_proj"));
    auto* a = host ? dynamic_cast<SupertuningLayer*>(host->adapter("default")) : nullptr;
    ASSERT_NE(a, nullptr);
    a->indices = a->indices.clone();
    a->indices[0] = 1 << 20;
    SafetensorsFile ref((suite.fixture("st_llama") / "reference.safetensors").string());
    try {
      test::logits(loaded, test::inputs_of(ref));
      ADD_FAILURE() << "out-of-range indices accepted";
    } catch (const std::exception& e) {
      EXPECT_THAT(std::string(e.what()),
                  HasSubstr("'base_model.model.model.layers.1.self_attn.v_proj.supertuning_indices' has positions "
                            "outside the weight"));
    }
  }
  // HF's _check_new_adapter_config: indices filed for all adapters or none.
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.add_adapter("a", *parse_user_adapter_config(json{{"peft_type", "SUPERTUNING"}}, "m"));
  try {
    m.add_adapter("b", *parse_user_adapter_config(
                           json{{"peft_type", "SUPERTUNING"}, {"save_precomputed_indices", false}}, "m"));
    ADD_FAILURE() << "mixed save_precomputed_indices accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("indices must be saved for all adapters or none"));
  }
}

}  // namespace
}  // namespace peft
