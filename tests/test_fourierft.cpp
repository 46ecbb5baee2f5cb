// FourierFT (HF PEFT's FOURIERFT) against adapters HF PEFT made (tests/parity/make_fourierft.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line;
//  - the random frequency positions equal HF's layer.indices exactly (never saved: both
//    sides draw them from random_loc_seed);
//  - merge and unmerge give HF's merged logits and restore the weights;
//  - saved again, and trained here with `peft train`, adapters load in HF PEFT with our
//    logits; training lowers the eval loss; bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "cli_runner.h"
#include "peft/fourierft.h"
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

const test::MethodSuite suite("fourierft");
using test::logits;

class HfFourierFT : public ::testing::TestWithParam<std::string> {};

TEST_P(HfFourierFT, LoadsWithHfLogitsAndTrainableLine) {
  suite.expect_loads_as_hf(GetParam(), kLogitTol);
}

TEST_P(HfFourierFT, FrequencyPositionsAreHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("indices.", 0) != 0) continue;
    const auto path = key.substr(8);
    auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
    ASSERT_NE(host, nullptr) << path;
    auto* a = dynamic_cast<FourierFTLayer*>(host->adapter("default"));
    ASSERT_NE(a, nullptr) << path;
    EXPECT_TRUE(at::equal(at::stack({a->rows, a->cols}), ref.get(key))) << path;
    ++layers;
  }
  EXPECT_GE(layers, 4);
}

TEST_P(HfFourierFT, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5,
                                [](const PeftModel& p, const std::string& n) {
                                  return dynamic_cast<const FourierFTConfig&>(p.config("default")).bias != "none" &&
                                         n.ends_with(".bias");
                                });
}

TEST_P(HfFourierFT, ResavedLoadsInHf) {
  const auto name = GetParam();
  const auto work = suite.scratch("resave_" + name);
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  m.save_adapter((work / "adapter").string());
  suite.expect_hf_loads_ours(suite.base_of(name), work / "adapter", name, work, "make_vera.py");
}

INSTANTIATE_TEST_SUITE_P(FourierFT, HfFourierFT, ::testing::Values("fourierft_llama", "fourierft_gpt2"));

TEST(FourierFTTrain, AdapterTrainedWithPeftTrainLoadsInHf) {
  const auto work = suite.scratch("train");
  const json method = {{"peft_type", "FOURIERFT"}, {"n_frequency", 64}, {"scaling", 10.0}, {"random_loc_seed", 9},
                       {"init_weights", true}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
  const auto out = suite.train_with_cli(work, method, 4);
  SafetensorsFile file((out / "adapter_model.safetensors").string());
  // init_weights: the spectrum started at zero; training moved it.
  EXPECT_GT(file.get("base_model.model.model.layers.0.self_attn.q_proj.fourierft_spectrum").abs().max().item<double>(),
            1e-4);
  suite.expect_hf_loads_ours(suite.fixture("llama"), out, "fourierft_llama", work, "make_vera.py");
}

TEST(FourierFTTrain, LowersEvalLoss) {
  const auto work = suite.scratch("learns");
  TrainConfig c;
  c.model = suite.fixture("llama").string();
  c.train_file = test::write_small_counting_data(work).string();
  c.eval_split = 0.25;
  c.output_dir = (work / "out").string();
  c.method = json::parse(
      R"({"peft_type": "FOURIERFT", "n_frequency": 256, "scaling": 150.0, "init_weights": true, "target_modules": "all-linear"})");
  c.max_steps = 80;
  c.learning_rate = 5e-2;
  c.progress = false;
  auto before_cfg = c;
  before_cfg.eval_file = c.train_file;
  const double before = evaluate(before_cfg, {})["eval_loss"];
  const double after = train(c).evals.back()["eval_loss"];
  EXPECT_LT(after, 0.9 * before) << "eval loss " << before << " -> " << after;
}

std::string user_config_error(const std::string& s) {
  try {
    parse_user_adapter_config(json::parse(s), "method");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(FourierFTErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "FOURIERFT", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "FOURIERFT", "n_frequency": 0})"), HasSubstr("'n_frequency'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "FOURIERFT", "n_frequency_pattern": {"q_proj": "many"}})"),
              HasSubstr("'n_frequency_pattern' entry 'q_proj'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "FOURIERFT", "target_modules": ".*q_proj", "layers_to_transform": [0]})"),
              HasSubstr("layers_to_transform"));
}

TEST(FourierFTErrors, MoreFrequenciesThanWeightsNamesTheLayer) {
  PeftModel m(load_model(suite.fixture("llama").string()));
  auto cfg = parse_user_adapter_config(
      json::parse(R"({"peft_type": "FOURIERFT", "n_frequency": 600, "target_modules": ["k_proj"]})"), "method");
  try {
    m.add_adapter("default", *cfg);
    FAIL() << "k_proj has 16 x 32 weights";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("exceeds the 512 weights of 'model.layers.0.self_attn.k_proj'"));
  }
}

}  // namespace
}  // namespace peft
