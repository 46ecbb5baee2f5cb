// DeLoRA (HF PEFT 0.21's DELORA) against adapters HF PEFT made (tests/parity/make_delora.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line (the filed
//    delora_w_norm is a buffer there, not a parameter), with rank and lambda patterns;
//  - each layer's delta equals HF's get_delta_weight; merge gives HF's merged logits and
//    unmerge restores the weights;
//  - a new adapter starts at the base; saved again, and trained with `peft train` (which
//    lowers the eval loss), adapters load in HF PEFT with our logits; Conv1D targets and bad
//    settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "peft/delora.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "loss_file.h"
#include "method_suite.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

const test::MethodSuite suite("delora");

class HfDelora : public ::testing::TestWithParam<std::string> {};

TEST_P(HfDelora, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfDelora, DeltasAreHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("delta.", 0) != 0) continue;
    const auto path = key.substr(6);
    auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
    ASSERT_NE(host, nullptr) << path;
    auto* a = dynamic_cast<DeloraLayer*>(host->adapter("default"));
    ASSERT_NE(a, nullptr) << path;
    c10::InferenceMode g;
    const auto d = a->delta_weight();
    ASSERT_EQ(d.sizes(), ref.get(key).sizes()) << path;
    EXPECT_LE((d - ref.get(key)).abs().max().item<double>(), 1e-5) << path;
    ++layers;
  }
  EXPECT_GE(layers, 4);
}

TEST_P(HfDelora, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

TEST_P(HfDelora, ResavedLoadsInHf) {
  const auto name = GetParam();
  const auto work = suite.scratch("resave_" + name);
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_resave_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, work / "adapter",
                                 work / "outputs.safetensors", kLogitTol);
  SafetensorsFile hf((suite.fixture(name) / "adapter" / "adapter_model.safetensors").string());
  SafetensorsFile ours((work / "adapter" / "adapter_model.safetensors").string());
  const auto want = hf.names(), got = ours.names();
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), std::set<std::string>(want.begin(), want.end()));
}

INSTANTIATE_TEST_SUITE_P(Delora, HfDelora, ::testing::Values("delora_llama", "delora_llama_patterns"));

// HF's init: B = 0, so a new adapter computes the base's logits; w_norm holds the weight's
// input-column norms.
TEST(Delora, NewAdapterStartsAtTheBase) {
  SafetensorsFile ref((suite.fixture("delora_llama") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  m.add_adapter("default", *parse_user_adapter_config(json::parse(R"({"peft_type": "DELORA", "r": 4})"), "m"), 3);
  EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-6);
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find("model.layers.0.self_attn.q_proj"));
  const auto* a = dynamic_cast<DeloraLayer*>(host->adapter("default"));
  EXPECT_TRUE(at::allclose(a->w_norm, host->dense_weight().norm(2, {0})));
  EXPECT_EQ(a->lambda.item<float>(), 15.0f);
}

TEST(DeloraTrain, AdapterTrainedWithPeftTrainLoadsInHfAndLowersTheLoss) {
  const auto work = suite.scratch("train");
  const json method = {{"peft_type", "DELORA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
  const auto out = suite.train_with_cli(work, method, 60, 2e-2, {{"eval_split", 0.25}, {"eval_steps", 60}});
  const double start = test::first_step_loss(out), end = test::last_eval_loss(out);
  std::cout << "delora train: first step loss " << start << ", final eval loss " << end << "\n";
  EXPECT_LT(end, start - 0.1);
  suite.expect_hf_loads_ours(suite.fixture("llama"), out, "delora_llama", work);
}

std::string user_config_error(const std::string& s) {
  try {
    parse_user_adapter_config(json::parse(s), "method");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(DeloraErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "DELORA", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "DELORA", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "DELORA", "module_dropout": 1.5})"), HasSubstr("'module_dropout'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "DELORA", "rank_pattern": {"q_proj": 0}})"), HasSubstr("rank_pattern"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "DELORA", "lambda_pattern": {"(": 1.0}})"), HasSubstr("("));
  EXPECT_THAT(user_config_error(R"({"peft_type": "DELORA", "delora_lamda": 3})"), HasSubstr("delora_lambda"));
}

TEST(DeloraErrors, Conv1DTargetIsNamed) {
  PeftModel m(load_model(suite.fixture("gpt2").string()));
  try {
    m.add_adapter("default", *parse_user_adapter_config(json::parse(R"({"peft_type": "DELORA"})"), "method"));
    FAIL() << "HF's DeLoRA has no Conv1D";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("'transformer.h.0.attn.c_attn' is a Conv1D"));
  }
}

}  // namespace
}  // namespace peft
