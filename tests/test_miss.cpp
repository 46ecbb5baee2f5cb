// MiSS (HF PEFT 0.21's MISS, formerly Bone) against adapters HF PEFT made
// (tests/parity/make_miss.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line: balance (with
//    zero-padded inputs), bat (weight-dependent) and mini;
//  - merge gives HF's merged logits, unmerge restores the weights (bat through (I + M)^-1);
//  - saved again, and trained here with `peft train`, adapters load in HF PEFT with our
//    logits; training lowers the eval loss; Conv1D targets, shapes the variant cannot split
//    and bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "cli_runner.h"
#include "peft/miss.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "method_suite.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

const test::MethodSuite suite("miss");
using test::logits;

class HfMiss : public ::testing::TestWithParam<std::string> {};

TEST_P(HfMiss, LoadsWithHfLogitsAndTrainableLine) {
  suite.expect_loads_as_hf(GetParam(), kLogitTol);
}

TEST_P(HfMiss, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

// Saved again here, the file holds HF's keys and HF PEFT loads it with our logits
// (tests/parity/check_adapter.py).
TEST_P(HfMiss, ResavedLoadsInHf) {
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

INSTANTIATE_TEST_SUITE_P(Miss, HfMiss, ::testing::Values("miss_llama", "miss_llama_bat", "miss_llama_mini"));

// Every variant starts at zero: a new adapter computes the base model's logits.
TEST(Miss, DefaultInitsStartAtTheBase) {
  SafetensorsFile ref((suite.fixture("miss_llama") / "reference.safetensors").string());
  const auto in = test::inputs_of(ref);
  for (const char* init : {"true", "\"bat\"", "\"mini\""}) {
    PeftModel m(load_model(suite.fixture("llama").string()));
    const auto base = logits(m, in);
    const auto cfg = json::parse(std::string(R"({"peft_type": "MISS", "r": 8, "mini_r": 2, "init_weights": )") + init + "}");
    m.add_adapter("default", *parse_user_adapter_config(cfg, "method"), 3);
    EXPECT_LE(test::max_diff(logits(m, in), base, test::mask_of(ref)), 1e-6) << init;
  }
}

TEST(MissTrain, AdapterTrainedWithPeftTrainLoadsInHf) {
  const auto work = suite.scratch("train");
  const json method = {{"peft_type", "MISS"}, {"r", 8}, {"init_weights", "bat"}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
  const auto out = suite.train_with_cli(work, method, 4);
  SafetensorsFile file((out / "adapter_model.safetensors").string());
  // The block started at zero; training moved it.
  EXPECT_GT(file.get("base_model.model.model.layers.0.self_attn.q_proj.miss_block").abs().max().item<double>(), 1e-4);
  suite.expect_hf_loads_ours(suite.fixture("llama"), out, "miss_llama", work);
}

TEST(MissTrain, LowersEvalLoss) {
  const auto work = suite.scratch("learns");
  TrainConfig c;
  c.model = suite.fixture("llama").string();
  c.train_file = test::write_small_counting_data(work).string();
  c.eval_split = 0.25;
  c.output_dir = (work / "out").string();
  c.method = json::parse(R"({"peft_type": "MISS", "r": 8, "target_modules": "all-linear"})");
  c.max_steps = 80;
  c.learning_rate = 5e-2;
  c.progress = false;
  auto before_cfg = c;
  before_cfg.eval_file = c.train_file;
  const double before = evaluate(before_cfg, {})["eval_loss"];
  const double after = train(c).evals.back()["eval_loss"];
  EXPECT_LT(after, before - 0.3) << "eval loss " << before << " -> " << after;
}

// --- errors ---------------------------------------------------------------------------

std::string user_config_error(const std::string& s) {
  try {
    parse_user_adapter_config(json::parse(s), "method");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(MissErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "MISS", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "MISS", "mini_r": 0})"), HasSubstr("'mini_r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "MISS", "init_weights": "bone"})"), HasSubstr("'init_weights'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "MISS", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "MISS", "miss_dropout": 1})"), HasSubstr("'miss_dropout'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "MISS", "mini_rr": 4})"), HasSubstr("mini_r"));
}

std::string add_error(const std::string& method) {
  PeftModel m(load_model(suite.fixture("llama").string()));
  try {
    m.add_adapter("default", *parse_user_adapter_config(json::parse(method), "method"));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(MissErrors, ShapesTheVariantCannotSplitAreNamed) {
  EXPECT_THAT(add_error(R"({"peft_type": "MISS", "r": 40, "target_modules": ["k_proj"]})"),
              HasSubstr("'model.layers.0.self_attn.k_proj': 'r' (40) must be at most in_features (32)"));
  EXPECT_THAT(add_error(R"({"peft_type": "MISS", "r": 12, "init_weights": "bat", "target_modules": ["k_proj"]})"),
              HasSubstr("'model.layers.0.self_attn.k_proj': init_weights \"bat\""));
  EXPECT_THAT(add_error(R"({"peft_type": "MISS", "r": 4, "mini_r": 5, "init_weights": "mini", "target_modules": ["k_proj"]})"),
              HasSubstr("divisible by 'mini_r' (5)"));
}

TEST(MissErrors, Conv1DTargetIsNamed) {
  PeftModel m(load_model(suite.fixture("gpt2").string()));
  auto cfg = parse_user_adapter_config(json::parse(R"({"peft_type": "MISS", "r": 8})"), "method");
  try {
    m.add_adapter("default", *cfg);  // GPT-2's default target: c_attn, a Conv1D
    FAIL() << "HF's MiSS has no Conv1D";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("'transformer.h.0.attn.c_attn' is a Conv1D"));
  }
}

}  // namespace
}  // namespace peft
