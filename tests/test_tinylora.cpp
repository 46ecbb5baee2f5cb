// TINYLORA (HF PEFT 0.21's TINYLORA) against adapters HF PEFT made (tests/parity/make_tinylora.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line: HF's default
//    targets with a v per layer, all seven projections of a Llama with biases in groups of
//    two (weight_tying 0.5) with P not filed (drawn again from projection_seed), an
//    Embedding and a Linear sharing one v with a trained bias, GPT-2's Conv1D;
//  - each layer's delta equals HF's get_delta_weight; merge gives HF's merged logits and
//    unmerge restores them;
//  - a new adapter draws HF's projections P (seed + the layer's index) and HF's SVD factors
//    A, B, groups its layers as HF does, and computes the base's logits;
//  - resaved, and trained with `peft train` (which lowers the eval loss), adapters load in
//    HF PEFT with our logits (one Python process); bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/tinylora.h"
#include "loss_file.h"
#include "method_suite.h"
#include "suite_checks.h"
#include "test_util.h"

using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"tinylora_llama", "tinylora_llama_opts", "tinylora_llama_emb",
                                         "tinylora_gpt2"};

const test::MethodSuite suite("tinylora");

// Every TinyLoRA layer of adapter `name` in `m`, by path.
std::map<std::string, const TinyLoraLayer*> layers_of(PeftModel& m, const std::string& name = "default") {
  std::map<std::string, const TinyLoraLayer*> out;
  for (const auto& [path, mod] : m.model().named_modules())
    if (auto* host = dynamic_cast<AdaptableLayer*>(mod))
      if (auto* a = dynamic_cast<const TinyLoraLayer*>(host->adapter(name))) out[path] = a;
  return out;
}

class HfTinyLora : public ::testing::TestWithParam<std::string> {};

TEST_P(HfTinyLora, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfTinyLora, DeltasAreHfs) {
  const auto layers = test::expect_deltas_as_hf<TinyLoraLayer>(
      suite, GetParam(), [](const TinyLoraLayer& a) { return a.delta_weight(); });
  EXPECT_GE(layers, 2);
}

TEST_P(HfTinyLora, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  // Biases trained with bias tinylora_only come from the adapter file: they are not the base's.
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5,
                                [&](const PeftModel&, const std::string& n) {
                                  return name == "tinylora_llama_emb" && n.ends_with(".bias");
                                });
}

// A new adapter of the case's config (nothing loaded): P from torch.Generator seeded with
// projection_seed + the layer's index equals HF's exactly; A and B from the SVD equal the
// ones HF filed (signs included); the layers share the v of their weight_tying group, keyed
// as HF files it; and v at zeros leaves the base's logits.
TEST_P(HfTinyLora, NewAdapterDrawsHfsProjectionsAndFactors) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  SafetensorsFile hf((suite.fixture(name) / "adapter" / "adapter_model.safetensors").string());
  auto cfg = json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json"));
  PeftModel m(load_model(suite.base_of(name).string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  cfg["init_weights"] = true;
  m.add_adapter("default", *parse_adapter_config(cfg, "new"), 3);
  m.set_adapter({"default"});
  EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-5) << name;
  const auto layers = layers_of(m);
  int checked = 0;
  std::map<std::string, std::set<const void*>> groups;  // v key -> the tensors layers use
  for (const auto& [path, a] : layers) {
    ASSERT_TRUE(ref.contains("P." + path)) << path;
    EXPECT_TRUE(at::equal(a->P.cpu(), ref.get("P." + path))) << "P of " << path;
    const std::string key = "base_model.model." + path + ".tinylora_";
    for (const auto& [factor, mine] : {std::pair{"A", a->A}, std::pair{"B", a->B}}) {
      const auto theirs = hf.get(key + factor);
      ASSERT_EQ(mine.sizes(), theirs.sizes()) << factor << " of " << path;
      EXPECT_LE((mine.cpu() - theirs).abs().max().item<double>(), 1e-4 * std::max(1.0, theirs.abs().max().item<double>()))
          << factor << " of " << path;
    }
    EXPECT_TRUE(hf.contains(a->v_key())) << a->v_key();
    groups[a->v_key()].insert(a->v().unsafeGetTensorImpl());
    ++checked;
  }
  EXPECT_GE(checked, 2);
  // One tensor per group, as many groups as HF filed.
  size_t filed = 0;
  for (const auto& k : hf.names()) filed += k.rfind("base_model.tinylora_v.", 0) == 0;
  EXPECT_EQ(groups.size(), filed) << name;
  for (const auto& [key, tensors] : groups) EXPECT_EQ(tensors.size(), 1u) << key;
}

// The loaded v of each group is HF's (after the fixture's perturbation).
TEST_P(HfTinyLora, LoadedVectorsAreHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  for (const auto& [path, a] : layers_of(m)) {
    const auto group = a->v_key().substr(std::string("base_model.tinylora_v.").size());
    EXPECT_TRUE(at::allclose(a->v().cpu(), ref.get("v." + group), 0, 0)) << path;
  }
}

INSTANTIATE_TEST_SUITE_P(TinyLora, HfTinyLora, ::testing::ValuesIn(kCases));

// weight_tying 0.5 over 14 layers: 7 groups of two consecutive layers (module order).
TEST(TinyLora, WeightTyingGroupsConsecutiveLayers) {
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.add_adapter("default",
                *parse_user_adapter_config(json{{"peft_type", "TINYLORA"}, {"u", 3}, {"weight_tying", 0.5},
                                                {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                    "gate_proj", "up_proj", "down_proj"}}},
                                           "m"),
                3);
  std::vector<std::string> keys;
  for (const auto& [path, mod] : m.model().named_modules())
    if (auto* host = dynamic_cast<AdaptableLayer*>(mod))
      if (auto* a = dynamic_cast<const TinyLoraLayer*>(host->adapter("default"))) keys.push_back(a->v_key());
  ASSERT_EQ(keys.size(), 14u);
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(keys[i], "base_model.tinylora_v." + std::to_string(i / 2)) << i;
  // "uniform" moves off the base.
  SafetensorsFile ref((suite.fixture("tinylora_llama") / "reference.safetensors").string());
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  m.add_adapter("uniform",
                *parse_user_adapter_config(json{{"peft_type", "TINYLORA"}, {"init_weights", "uniform"},
                                                {"init_v_bound", 0.5}},
                                           "m"),
                3);
  m.set_adapter({"uniform"});
  EXPECT_GT(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-4);
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(TinyLoraTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "TINYLORA"}, {"r", 4}, {"u", 64},
                       {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 0.05, "tinylora_llama");
}

using test::add_adapter_error;
using test::user_config_error;

TEST(TinyLoraErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "TINYLORA", "r": 0})"), HasSubstr("'r' must be a positive integer"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "TINYLORA", "u": 0})"), HasSubstr("'u' must be a positive integer"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "TINYLORA", "weight_tying": 1.5})"),
              HasSubstr("'weight_tying' must be a float between 0.0 and 1.0"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "TINYLORA", "init_weights": "gaussian"})"),
              HasSubstr("'init_weights' must be true, false or \"uniform\""));
  EXPECT_THAT(user_config_error(R"({"peft_type": "TINYLORA", "tinylora_dropout": 1.0})"),
              HasSubstr("'tinylora_dropout'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "TINYLORA", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "TINYLORA", "layers_pattern": "layers"})"),
              HasSubstr("'layers_pattern' needs 'layers_to_transform'"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "TINYLORA", "target_modules": ["model.norm"]})"),
              HasSubstr("TINYLORA: target module 'model.norm'"));
  // HF's _check_new_adapter_config: projections filed for all adapters or none.
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.add_adapter("a", *parse_user_adapter_config(json{{"peft_type", "TINYLORA"}}, "m"), 3);
  std::string err;
  try {
    m.add_adapter("b", *parse_user_adapter_config(json{{"peft_type", "TINYLORA"}, {"save_projection", false}}, "m"),
                  3);
  } catch (const std::exception& e) {
    err = e.what();
  }
  EXPECT_THAT(err, HasSubstr("TINYLORA: save_projection must be the same for all adapters"));
}

}  // namespace
}  // namespace peft
