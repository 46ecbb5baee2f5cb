// BEFT (HF PEFT 0.21's BEFT) against adapters HF PEFT made (tests/parity/make_beft.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line (HF's default
//    targets, a target regex, init_weights false);
//  - merge gives HF's merged logits and unmerge restores the biases; a layer without a bias
//    refuses to merge, naming it;
//  - saved again, and trained here with `peft train` (which lowers the eval loss), adapters
//    load in HF PEFT with our logits; Conv1D targets and bad settings are named.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "peft/beft.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "loss_file.h"
#include "method_suite.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

const test::MethodSuite suite("beft");

class HfBeft : public ::testing::TestWithParam<std::string> {};

TEST_P(HfBeft, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfBeft, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-6);
}

TEST_P(HfBeft, ResavedLoadsInHf) {
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

INSTANTIATE_TEST_SUITE_P(Beft, HfBeft, ::testing::Values("beft_llama", "beft_llama_more"));

// The same adapter on the plain tiny Llama (no biases): it computes, but cannot merge.
TEST(BeftErrors, MergeWithoutABiasIsNamed) {
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.load_adapter((suite.fixture("beft_llama") / "adapter").string());
  try {
    m.merge();
    FAIL() << "merged into a layer without a bias";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("cannot merge BEFT: the base layer has no bias"));
  }
}

TEST(BeftTrain, AdapterTrainedWithPeftTrainLoadsInHfAndLowersTheLoss) {
  const auto work = suite.scratch("train");
  // Output biases alone move a random 32-wide model little: lm_head's bias (the unigram
  // statistics of the data) carries most of the gain.
  const json method = {{"peft_type", "BEFT"}, {"target_modules", {"v_proj", "o_proj", "down_proj", "lm_head"}}};
  const auto out = suite.train_with_cli(work, method, 60, 0.1, {{"eval_split", 0.25}, {"eval_steps", 60}});
  const double start = test::first_step_loss(out), end = test::last_eval_loss(out);
  std::cout << "beft train: first step loss " << start << ", final eval loss " << end << "\n";
  EXPECT_LT(end, start - 0.1);
  suite.expect_hf_loads_ours(suite.fixture("llama"), out, "beft_llama", work);
}

std::string user_config_error(const std::string& s) {
  try {
    parse_user_adapter_config(json::parse(s), "method");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(BeftErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "BEFT", "init_weights": "yes"})"), HasSubstr("'init_weights'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "BEFT", "init_weight": true})"), HasSubstr("init_weights"));
}

TEST(BeftErrors, Conv1DTargetsAndMissingDefaultsAreNamed) {
  PeftModel m(load_model(suite.fixture("gpt2").string()));
  try {
    m.add_adapter("default", *parse_user_adapter_config(json::parse(R"({"peft_type": "BEFT"})"), "method"));
    FAIL() << "HF's BEFT table has no GPT-2 entry";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("BEFT"));
    EXPECT_THAT(e.what(), HasSubstr("gpt2"));
  }
  try {
    m.add_adapter("default",
                  *parse_user_adapter_config(json::parse(R"({"peft_type": "BEFT", "target_modules": ["c_attn"]})"), "m"));
    FAIL() << "HF's BEFT has no Conv1D";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("'transformer.h.0.attn.c_attn' is a Conv1D"));
  }
}

}  // namespace
}  // namespace peft
