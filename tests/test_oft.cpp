// OFT (HF PEFT 0.21's OFT) against adapters HF PEFT made (tests/parity/make_oft.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line: Cayley-Neumann
//    and exact Cayley, block_share, COFT's projection, an Embedding target, block sizes HF
//    adjusted to the layer;
//  - each layer's block-diagonal rotation equals HF's get_delta_weight;
//  - merge gives HF's merged logits, unmerge (through R^-1) restores the weights;
//  - saved again, and trained here with `peft train`, adapters load in HF PEFT with our
//    logits; training lowers the eval loss; Conv1D targets and bad settings are named.
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
#include "peft/oft.h"
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

const test::MethodSuite suite("oft");
using test::logits;

class HfOft : public ::testing::TestWithParam<std::string> {};

TEST_P(HfOft, LoadsWithHfLogitsAndTrainableLine) {
  suite.expect_loads_as_hf(GetParam(), kLogitTol);
}

TEST_P(HfOft, RotationsAreHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("rotation.", 0) != 0) continue;
    const auto path = key.substr(9);
    auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
    ASSERT_NE(host, nullptr) << path;
    auto* a = dynamic_cast<OFTLayer*>(host->adapter("default"));
    ASSERT_NE(a, nullptr) << path;
    c10::InferenceMode g;
    const auto R = a->rotation();
    ASSERT_EQ(R.sizes(), ref.get(key).sizes()) << path;
    EXPECT_LE((R - ref.get(key)).abs().max().item<double>(), 1e-5) << path;
    ++layers;
  }
  EXPECT_GE(layers, 2);
}

TEST_P(HfOft, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

// Saved again here, HF PEFT loads it with our logits (tests/parity/check_adapter.py: every
// adapter key present). HF also files a copy of a targeted embedding's own weight
// (embed_tokens.base_layer.weight); we read it but do not write it, as the base has it.
TEST_P(HfOft, ResavedLoadsInHf) {
  const auto name = GetParam();
  const auto work = suite.scratch("resave_" + name);
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_resave_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, work / "adapter",
                                 work / "outputs.safetensors", kLogitTol);
  SafetensorsFile hf((suite.fixture(name) / "adapter" / "adapter_model.safetensors").string());
  SafetensorsFile ours((work / "adapter" / "adapter_model.safetensors").string());
  std::set<std::string> want;
  for (const auto& n : hf.names())
    if (n.find(".base_layer.") == std::string::npos) want.insert(n);
  const auto got = ours.names();
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), want);
}

INSTANTIATE_TEST_SUITE_P(Oft, HfOft, ::testing::Values("oft_llama", "oft_llama_exact", "oft_llama_coft"));

TEST(Oft, BlockSizesAdjustAsHf) {
  // HF's adjust_oft_parameters: the nearest divisor, the smaller on a tie, the whole if larger.
  EXPECT_EQ(adjust_oft_parameter(32, 20), 16);
  EXPECT_EQ(adjust_oft_parameter(48, 20), 16);  // 16 and 24 are as near: the smaller
  EXPECT_EQ(adjust_oft_parameter(48, 32), 24);
  EXPECT_EQ(adjust_oft_parameter(10, 4), 5);
  EXPECT_EQ(adjust_oft_parameter(12, 5), 4);
  EXPECT_EQ(adjust_oft_parameter(7, 3), 1);
  EXPECT_EQ(adjust_oft_parameter(16, 40), 16);
}

TEST(OftTrain, AdapterTrainedWithPeftTrainLoadsInHf) {
  const auto work = suite.scratch("train");
  const json method = {{"peft_type", "OFT"}, {"oft_block_size", 8}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
  const auto out = suite.train_with_cli(work, method, 4);
  SafetensorsFile file((out / "adapter_model.safetensors").string());
  // init_weights: R started at I (zeros); training moved it.
  EXPECT_GT(file.get("base_model.model.model.layers.0.self_attn.q_proj.oft_R.weight").abs().max().item<double>(), 1e-4);
  suite.expect_hf_loads_ours(suite.fixture("llama"), out, "oft_llama", work);
}

TEST(OftTrain, LowersEvalLoss) {
  const auto work = suite.scratch("learns");
  TrainConfig c;
  c.model = suite.fixture("llama").string();
  c.train_file = test::write_small_counting_data(work).string();
  c.eval_split = 0.25;
  c.output_dir = (work / "out").string();
  // Rotations keep norms, so on a random 32-wide model OFT moves the loss less than
  // additive methods do: every linear layer including lm_head, full 32-blocks, exact Cayley.
  c.method = json::parse(R"({"peft_type": "OFT", "oft_block_size": 32, "use_cayley_neumann": false,
      "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]})");
  c.max_steps = 80;
  c.learning_rate = 0.3;
  c.progress = false;
  auto before_cfg = c;
  before_cfg.eval_file = c.train_file;
  const double before = evaluate(before_cfg, {})["eval_loss"];
  const double after = train(c).evals.back()["eval_loss"];
  EXPECT_LT(after, before - 0.2) << "eval loss " << before << " -> " << after;
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

TEST(OftErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "OFT", "r": 4})"), HasSubstr("'oft_block_size'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "OFT", "oft_block_size": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "OFT", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "OFT", "module_dropout": 1.5})"), HasSubstr("'module_dropout'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "OFT", "num_cayley_neumann_terms": -1})"),
              HasSubstr("'num_cayley_neumann_terms'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "OFT", "coft": true, "eps": 0})"), HasSubstr("'eps'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "OFT", "use_cayley_neuman": false})"), HasSubstr("use_cayley_neumann"));
}

TEST(OftErrors, Conv1DTargetIsNamed) {
  PeftModel m(load_model(suite.fixture("gpt2").string()));
  auto cfg = parse_user_adapter_config(json::parse(R"({"peft_type": "OFT", "oft_block_size": 8})"), "method");
  try {
    m.add_adapter("default", *cfg);  // GPT-2's default target: c_attn, a Conv1D
    FAIL() << "HF's OFT has no Conv1D";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("'transformer.h.0.attn.c_attn' is a Conv1D"));
  }
}

}  // namespace
}  // namespace peft
