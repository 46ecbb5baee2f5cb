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
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

fs::path fixture(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / "hra" / name; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "hra" / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}
json case_json(const std::string& name) { return json::parse(std::ifstream(fixture(name) / "case.json")); }
fs::path base_of(const std::string& name) { return fixture(case_json(name)["base"].get<std::string>()); }

at::Tensor logits(PeftModel& m, const ModelInputs& in) {
  c10::InferenceMode g;
  return m.forward(in).logits;
}

class HfHra : public ::testing::TestWithParam<std::string> {};

TEST_P(HfHra, LoadsWithHfLogitsAndTrainableLine) {
  const auto name = GetParam();
  SafetensorsFile ref((fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(base_of(name).string()));
  m.load_adapter((fixture(name) / "adapter").string());
  const auto in = test::inputs_of(ref);
  const auto got = logits(m, in);
  const double diff = test::max_diff(got, ref.get("logits"), test::mask_of(ref));
  std::cout << name << ": max |logits - HF| = " << diff << "\n";
  EXPECT_LE(diff, kLogitTol);
  at::Tensor base;
  {
    auto off = m.disable_adapters();
    base = logits(m, in);
  }
  EXPECT_GT(test::max_diff(got, base, test::mask_of(ref)), 1e-2) << "the adapter must change the logits";
  EXPECT_EQ(m.trainable_parameters_line(), case_json(name)["trainable"].get<std::string>());
}

TEST_P(HfHra, ReflectionsAreHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(base_of(name).string()));
  m.load_adapter((fixture(name) / "adapter").string());
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
  SafetensorsFile ref((fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(base_of(name), fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

// Saved again here, the file holds HF's keys and HF PEFT loads it with our logits
// (tests/parity/check_adapter.py).
TEST_P(HfHra, ResavedLoadsInHf) {
  const auto name = GetParam();
  const auto work = scratch("resave_" + name);
  SafetensorsFile ref((fixture(name) / "reference.safetensors").string());
  test::expect_resave_round_trip(base_of(name), fixture(name) / "adapter", ref, work / "adapter",
                                 work / "outputs.safetensors", kLogitTol);
  SafetensorsFile hf((fixture(name) / "adapter" / "adapter_model.safetensors").string());
  SafetensorsFile ours((work / "adapter" / "adapter_model.safetensors").string());
  const auto want = hf.names(), got = ours.names();
  EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), std::set<std::string>(want.begin(), want.end()));
}

INSTANTIATE_TEST_SUITE_P(Hra, HfHra, ::testing::Values("hra_llama", "hra_llama_gs"));

// HF's default init repeats each random column twice: the reflections cancel, and a new
// adapter computes the base model's logits. An odd r has no such start (HF warns).
TEST(Hra, DefaultInitStartsAtTheBase) {
  SafetensorsFile ref((fixture("hra_llama") / "reference.safetensors").string());
  PeftModel m(load_model(fixture("llama").string()));
  const auto in = test::inputs_of(ref);
  const auto base = logits(m, in);
  m.add_adapter("default", *parse_user_adapter_config(json::parse(R"({"peft_type": "HRA", "r": 6})"), "method"), 3);
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find("model.layers.0.self_attn.q_proj"));
  ASSERT_NE(host, nullptr);
  const auto u = dynamic_cast<HRALayer*>(host->adapter("default"))->u;
  EXPECT_TRUE(at::equal(u.select(1, 0), u.select(1, 1)));
  EXPECT_FALSE(at::equal(u.select(1, 0), u.select(1, 2)));
  EXPECT_LE(test::max_diff(logits(m, in), base, test::mask_of(ref)), 1e-5);
  PeftModel odd(load_model(fixture("llama").string()));
  odd.add_adapter("default", *parse_user_adapter_config(json::parse(R"({"peft_type": "HRA", "r": 3})"), "method"), 3);
  EXPECT_GT(test::max_diff(logits(odd, in), base, test::mask_of(ref)), 1e-3);
}

// Counting sequences within the tiny model's 64-token vocabulary.
fs::path counting_data(const fs::path& dir) {
  const auto p = dir / "counting.jsonl";
  std::ofstream f(p);
  std::mt19937 rng(5);
  for (int i = 0; i < 64; ++i) {
    json ids = json::array();
    for (int t = 0, s = 1 + rng() % 40; t < 16; ++t) ids.push_back(s + t);
    f << json{{"input_ids", ids}}.dump() << "\n";
  }
  return p;
}

TEST(HraTrain, AdapterTrainedWithPeftTrainLoadsInHf) {
  const auto work = scratch("train");
  const json method = {{"peft_type", "HRA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
  json cfg = {{"model", fixture("llama").string()}, {"train_file", counting_data(work).string()},
              {"output_dir", (work / "out").string()}, {"method", method}, {"max_steps", 4},
              {"learning_rate", 1e-2}, {"progress", false}};
  std::ofstream(work / "train.json") << cfg.dump(1);
  const auto r = test::run_cli({"train", "--config", (work / "train.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  SafetensorsFile file((work / "out" / "adapter_model.safetensors").string());
  // The init's columns came in equal pairs; training moved them apart.
  const auto u = file.get("base_model.model.model.layers.0.self_attn.q_proj.hra_u");
  EXPECT_GT((u.select(1, 0) - u.select(1, 1)).abs().max().item<double>(), 1e-5);
  SafetensorsFile ref((fixture("hra_llama") / "reference.safetensors").string());
  PeftModel m(load_model(fixture("llama").string()));
  m.load_adapter((work / "out").string());
  std::string log;
  EXPECT_EQ(test::check_in_python(fixture("llama"), (work / "out").string(),
                                  test::write_outputs(ref, "logits", logits(m, test::inputs_of(ref)), work / "outputs.safetensors"),
                                  &log),
            0)
      << log;
}

TEST(HraTrain, LowersEvalLoss) {
  const auto work = scratch("learns");
  TrainConfig c;
  c.model = fixture("llama").string();
  c.train_file = counting_data(work).string();
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
  PeftModel m(load_model(fixture("gpt2").string()));
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
