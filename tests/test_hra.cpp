// HRA (HF PEFT 0.21's HRA) against adapters HF PEFT made (tests/parity/make_hra.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, as chains of
//    reflections and with Gram-Schmidt (apply_GS);
//  - each layer's H equals HF's get_delta_weight;
//  - merge gives HF's merged logits, unmerge (the reflections in reverse) restores the weights;
//  - HF's default init (pairs of equal columns) leaves the model as the base;
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
#include "peft/hra.h"
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

const test::MethodSuite suite("hra");
using test::logits;

class HfHra : public ::testing::TestWithParam<std::string> {};

TEST_P(HfHra, LoadsWithHfLogitsAndTrainableLine) {
  suite.expect_loads_as_hf(GetParam(), kLogitTol);
}

TEST_P(HfHra, ReflectionsAreHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("reflection.", 0) != 0) continue;
    const auto path = key.substr(11);
    auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
    ASSERT_NE(host, nullptr) << path;
    auto* a = dynamic_cast<HRALayer*>(host->adapter("default"));
    ASSERT_NE(a, nullptr) << path;
    c10::InferenceMode g;
    const auto R = a->reflections(false);
    ASSERT_EQ(R.sizes(), ref.get(key).sizes()) << path;
    EXPECT_LE((R - ref.get(key)).abs().max().item<double>(), 1e-5) << path;
    ++layers;
  }
  EXPECT_GE(layers, 2);
}

TEST_P(HfHra, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

// Saved again here, the file holds HF's keys and HF PEFT loads it with our logits
// (tests/parity/check_adapter.py).
TEST_P(HfHra, ResavedLoadsInHf) {
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

INSTANTIATE_TEST_SUITE_P(Hra, HfHra, ::testing::Values("hra_llama", "hra_llama_gs"));

// HF's default init repeats each random column twice: the reflections cancel, and a new
// adapter computes the base model's logits. An odd r has no such start (HF warns).
TEST(Hra, DefaultInitStartsAtTheBase) {
  SafetensorsFile ref((suite.fixture("hra_llama") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  const auto in = test::inputs_of(ref);
  const auto base = logits(m, in);
  m.add_adapter("default", *parse_user_adapter_config(json::parse(R"({"peft_type": "HRA", "r": 6})"), "method"), 3);
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find("model.layers.0.self_attn.q_proj"));
  ASSERT_NE(host, nullptr);
  const auto u = dynamic_cast<HRALayer*>(host->adapter("default"))->u;
  EXPECT_TRUE(at::equal(u.select(1, 0), u.select(1, 1)));
  EXPECT_FALSE(at::equal(u.select(1, 0), u.select(1, 2)));
  EXPECT_LE(test::max_diff(logits(m, in), base, test::mask_of(ref)), 1e-5);
  PeftModel odd(load_model(suite.fixture("llama").string()));
  odd.add_adapter("default", *parse_user_adapter_config(json::parse(R"({"peft_type": "HRA", "r": 3})"), "method"), 3);
  EXPECT_GT(test::max_diff(logits(odd, in), base, test::mask_of(ref)), 1e-3);
}

TEST(HraTrain, AdapterTrainedWithPeftTrainLoadsInHf) {
  const auto work = suite.scratch("train");
  const json method = {{"peft_type", "HRA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
  const auto out = suite.train_with_cli(work, method, 4);
  SafetensorsFile file((out / "adapter_model.safetensors").string());
  // The init's columns came in equal pairs; training moved them apart.
  const auto u = file.get("base_model.model.model.layers.0.self_attn.q_proj.hra_u");
  EXPECT_GT((u.select(1, 0) - u.select(1, 1)).abs().max().item<double>(), 1e-5);
  suite.expect_hf_loads_ours(suite.fixture("llama"), out, "hra_llama", work);
}

TEST(HraTrain, LowersEvalLoss) {
  const auto work = suite.scratch("learns");
  TrainConfig c;
  c.model = suite.fixture("llama").string();
  c.train_file = test::write_small_counting_data(work).string();
  c.eval_split = 0.25;
  c.output_dir = (work / "out").string();
  // Reflections keep norms, so on a random 32-wide model HRA moves the loss less than
  // additive methods do: every linear layer including lm_head.
  c.method = json::parse(R"({"peft_type": "HRA", "r": 8,
      "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]})");
  c.max_steps = 80;
  c.learning_rate = 5e-2;
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

TEST(HraErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "HRA", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "HRA", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "HRA", "apply_GS": "yes"})"), HasSubstr("'apply_GS'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "HRA", "target_modules": ".*q_proj", "layers_to_transform": [0]})"),
              HasSubstr("layers_to_transform"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "HRA", "apply_gs": true})"), HasSubstr("apply_GS"));
}

TEST(HraErrors, Conv1DTargetIsNamed) {
  PeftModel m(load_model(suite.fixture("gpt2").string()));
  auto cfg = parse_user_adapter_config(json::parse(R"({"peft_type": "HRA"})"), "method");
  try {
    m.add_adapter("default", *cfg);  // GPT-2's default target: c_attn, a Conv1D
    FAIL() << "HF's HRA has no Conv1D";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("'transformer.h.0.attn.c_attn' is a Conv1D"));
  }
}

}  // namespace
}  // namespace peft
