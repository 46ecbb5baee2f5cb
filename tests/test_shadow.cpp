// SHADOW (HF PEFT 0.21's ShadowPEFT) against adapters HF PEFT made (tests/parity/make_shadow.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line: a one-layer
//    mirror fed the base's embeddings (Llama: no embed_tokens; GPT-2: its own wte filed but
//    unused), a narrower two-layer mirror with its own embeddings and a projection, one
//    adapted block or all, GPT-2 with and without shared embeddings;
//  - the initial shadow state s⁰ of that forward is HF's, and so is the auxiliary shadow-head
//    loss HF adds to a CAUSAL_LM loss (none for other task types);
//  - a new adapter draws HF's values for the same seed (the mirror initialized as
//    transformers initializes a fresh model, then torch's Linear inits), and with W_up = 0
//    computes the base's logits;
//  - decoding with a KV cache gives the full forward's logits (the mirror keeps its own cache);
//  - resaved, and trained with `peft train` (which lowers the eval loss), adapters load in
//    HF PEFT with our logits (one Python process); merging and bad settings are refused by name.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/shadow.h"
#include "loss_file.h"
#include "method_suite.h"
#include "suite_checks.h"
#include "test_util.h"

using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"shadow_llama", "shadow_llama_opts", "shadow_gpt2", "shadow_gpt2_own"};

const test::MethodSuite suite("shadow");

const ShadowAdapter& shadow_of(PeftModel& m, const std::string& name) {
  auto* a = dynamic_cast<const ShadowAdapter*>(m.input_adapter(name));
  if (!a) throw std::runtime_error("no shadow adapter '" + name + "'");
  return *a;
}

class HfShadow : public ::testing::TestWithParam<std::string> {};

TEST_P(HfShadow, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

// s⁰ = projection(backbone(x)) of the reference forward is HF's _seed_shadow_state.
TEST_P(HfShadow, InitialShadowStateIsHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  (void)test::logits(m, test::inputs_of(ref));
  const auto s0 = shadow_of(m, "default").initial_state().cpu().to(at::kFloat);
  const auto hf = ref.get("s0");
  ASSERT_EQ(s0.sizes(), hf.sizes());
  const auto mask = ref.get("attention_mask").to(at::kBool).unsqueeze(-1);
  const double d = ((s0 - hf).abs() * mask).max().item<double>();
  std::cout << name << ": max |s0 - HF| = " << d << "\n";
  EXPECT_LE(d, 1e-4);
}

// With labels, HF's loss adds auxiliary_loss_weight × CE(lm_head(s⁰)) for CAUSAL_LM (none
// otherwise); ours reaches the trainer through PeftModel::aux_loss(labels).
TEST_P(HfShadow, AuxiliaryLossIsHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  const auto logits = test::logits(m, test::inputs_of(ref)).to(at::kFloat);
  const auto labels = ref.get("labels");
  const auto shadow = shadow_of(m, "default").shadow_loss(labels);
  const auto aux = m.aux_loss(labels);
  if (!ref.contains("shadow_loss")) {
    EXPECT_FALSE(shadow.defined()) << "HF computes no shadow loss without task_type CAUSAL_LM";
    EXPECT_FALSE(aux.defined());
  } else {
    ASSERT_TRUE(shadow.defined() && aux.defined());
    const double d = std::abs(shadow.item<double>() - ref.get("shadow_loss").item<double>());
    std::cout << name << ": shadow loss " << shadow.item<double>() << ", |ours - HF| = " << d << "\n";
    EXPECT_LE(d, 1e-5);
  }
  const int64_t n = logits.size(1) - 1;
  auto total = at::cross_entropy_loss(logits.narrow(1, 0, n).reshape({-1, logits.size(-1)}),
                                      labels.narrow(1, 1, n).reshape({-1}), {}, at::Reduction::Mean, -100);
  if (aux.defined()) total = total + aux;
  const double d = std::abs(total.item<double>() - ref.get("loss_with_shadow").item<double>());
  std::cout << name << ": loss with the shadow loss, |ours - HF| = " << d << "\n";
  EXPECT_LE(d, 1e-5);
}

// add_adapter(seed) draws what HF's get_peft_model draws after torch.manual_seed(seed):
// the same file keys and values.
TEST_P(HfShadow, NewAdapterDrawsHfsInit) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  const auto cfg = json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json"));
  PeftModel m(load_model(suite.base_of(name).string()));
  m.add_adapter("default", *parse_adapter_config(cfg, "init"), suite.case_json(name)["seed"].get<uint64_t>());
  std::set<std::string> ours;
  double worst = 0;
  for (const auto& [key, t] : m.adapter_state_dict("default")) {
    ours.insert(key);
    ASSERT_TRUE(ref.contains("init." + key)) << "not in HF's file: " << key;
    const auto hf = ref.get("init." + key);
    ASSERT_EQ(t.sizes(), hf.sizes()) << key;
    const double d = (t.cpu().to(at::kFloat) - hf).abs().max().item<double>();
    worst = std::max(worst, d);
    EXPECT_LE(d, 1e-6) << key;
  }
  for (const auto& key : ref.names())
    if (key.rfind("init.", 0) == 0) EXPECT_TRUE(ours.count(key.substr(5))) << "missing here: " << key.substr(5);
  std::cout << name << ": " << ours.size() << " tensors, max |init - HF's| " << worst << "\n";
}

INSTANTIATE_TEST_SUITE_P(Shadow, HfShadow, ::testing::ValuesIn(kCases));

// W_up = 0 makes every injection a no-op, so a new adapter computes the base's logits
// (its shadow state still moves); init_weights false moves off them.
TEST(Shadow, NewAdapterStartsAtTheBase) {
  for (const auto& name : {"shadow_llama", "shadow_gpt2"}) {
    SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
    auto cfg = json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json"));
    PeftModel m(load_model(suite.base_of(name).string()));
    const auto in = test::inputs_of(ref);
    const auto base = test::logits(m, in);
    cfg["init_weights"] = true;
    m.add_adapter("init", *parse_adapter_config(cfg, "init"), 3);
    m.set_adapter({"init"});
    EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-6) << name;
    cfg["init_weights"] = false;
    m.add_adapter("random", *parse_adapter_config(cfg, "random"), 3);
    m.set_adapter({"random"});
    EXPECT_GT(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-4) << name;
  }
}

// Prefill then one token at a time with a KV cache: the mirror advances its own cache in
// step (HF's ShadowCache), so every position gets the full forward's logits.
TEST(Shadow, CachedDecodeMatchesFullForward) {
  for (const auto& name : {"shadow_llama", "shadow_gpt2_own"}) test::expect_cached_decode_matches_full(suite, name);
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(ShadowTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  const json method = {{"peft_type", "SHADOW"}, {"r", 8}, {"shadow_alpha", 0.5}, {"shadow_dropout", 0.0},
                       {"task_type", "CAUSAL_LM"}};
  test::expect_trains_and_loads_in_hf(suite, kCases, method, 60, 0.01, "shadow_llama");
}

std::vector<double> step_losses(const std::filesystem::path& out) {
  std::ifstream f(out / "loss.dat");
  std::vector<double> v;
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) v.push_back(std::stod(line.substr(line.find(' ') + 1)));  // blank lines end a run
  return v;
}

// The shadow-head loss comes from s⁰, before the blocks, so gradient checkpointing keeps it:
// the same steps with checkpointing give the same losses; without the auxiliary loss
// (weight 0) they differ from the second step on, so its gradient is in the update.
TEST(ShadowTrain, GradientCheckpointingKeepsTheAuxiliaryLoss) {
  const json method = {{"peft_type", "SHADOW"}, {"r", 8}, {"shadow_alpha", 0.5}, {"shadow_dropout", 0.0},
                       {"task_type", "CAUSAL_LM"}, {"auxiliary_loss_weight", 0.5}};
  auto run = [&](const std::string& tag, const json& m, const json& extra) {
    return step_losses(suite.train_with_cli(suite.scratch("ckpt_" + tag), m, 4, 0.02, extra));
  };
  const auto plain = run("plain", method, json::object());
  const auto ckpt = run("ckpt", method, {{"gradient_checkpointing", true}});
  auto no_aux_method = method;
  no_aux_method["auxiliary_loss_weight"] = 0.0;
  const auto no_aux = run("no_aux", no_aux_method, json::object());
  ASSERT_EQ(plain.size(), 4u);
  ASSERT_EQ(ckpt.size(), plain.size());
  ASSERT_EQ(no_aux.size(), plain.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_NEAR(ckpt[i], plain[i], 1e-5 * std::abs(plain[i])) << "step " << i + 1;
    if (i > 0) EXPECT_GT(std::abs(no_aux[i] - plain[i]), 1e-4) << "step " << i + 1;
  }
}

using test::add_adapter_error;
using test::user_config_error;

TEST(ShadowErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "SHADOW", "r": 0})"), HasSubstr("'r' must be a positive integer"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SHADOW", "shadow_dropout": 1.0})"), HasSubstr("'shadow_dropout'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SHADOW", "update_hidden_size": 0})"),
              HasSubstr("'update_hidden_size' must be a positive integer"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SHADOW", "shadow_model": "shadow-llm/Qwen3-0.6B-H8B"})"),
              HasSubstr("pretrained shadow backbones are not supported"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SHADOW", "shadow_model": "x/y", "shadow_hidden_size": 16})"),
              HasSubstr("mirror-only overrides: shadow_hidden_size"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SHADOW", "layers_pattern": "layers"})"),
              HasSubstr("'layers_pattern' needs 'layers_to_transform'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SHADOW", "target_modules": ".*", "layers_to_transform": [0]})"),
              HasSubstr("'layers_to_transform' cannot be used when 'target_modules' is a str"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SHADOW", "task_type": "SEQ_CLS"})"), HasSubstr("SEQ_CLS"));
  EXPECT_THAT(add_adapter_error(suite, "llama", R"({"peft_type": "SHADOW", "target_modules": ["q_proj"]})"),
              HasSubstr("SHADOW: target_modules match no decoder block"));
  // HF refuses to merge (the adaptation depends on the input); so do we, by name.
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.add_adapter("default", *parse_user_adapter_config(json{{"peft_type", "SHADOW"}}, "method"));
  try {
    m.merge();
    ADD_FAILURE() << "SHADOW merged";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("SHADOW"));
  }
}

}  // namespace
}  // namespace peft
