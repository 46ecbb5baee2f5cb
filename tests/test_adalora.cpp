// AdaLoRA (HF PEFT's ADALORA) against adapters HF PEFT made (tests/parity/make_adalora.py):
//  - they load here with HF's logits (<= 1e-4), HF's per-layer ranks (sized by the saved
//    rank_pattern, one layer with none left) and HF's trainable-parameter line;
//  - merge and unmerge give HF's merged logits and restore the weights;
//  - saved again here, HF PEFT loads them strictly with the same logits;
//  - training: from the same initial adapter, on the same batches, `train()` runs HF's
//    budget schedule, importance EMA, masking and orthogonal regularizer: the final
//    rank_pattern equals HF's exactly, the losses and weights agree within a tolerance, and
//    the trained adapter loads in HF PEFT; `peft train` with an ADALORA method (total_step
//    taken from the run) lowers the eval loss and ends on the target budget.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "peft/adalora.h"
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

const test::MethodSuite suite("adalora");
using test::logits;
json read_json(const fs::path& p) { return json::parse(std::ifstream(p)); }

// HF PEFT loads `adapter` on `base` strictly and must compute `ours` on the reference's inputs.
void expect_hf_agrees(const fs::path& base, const fs::path& adapter, const SafetensorsFile& ref, const at::Tensor& ours,
                      const fs::path& work) {
  const auto outputs = test::write_outputs(ref, "logits", ours, work / "outputs.safetensors");
  int status = 0;
  const auto log = test::run_parity_script(
      "make_adalora.py", "check " + base.string() + " " + adapter.string() + " " + outputs.string(), &status);
  EXPECT_EQ(status, 0) << log;
}

class HfAdaLora : public ::testing::TestWithParam<std::string> {};

TEST_P(HfAdaLora, LoadsWithHfLogitsRanksAndTrainableLine) {
  const auto name = GetParam();
  suite.expect_loads_as_hf(name, kLogitTol);
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  for (const auto& [module, rank] : suite.case_json(name)["ranks"].items()) {
    auto* layer = dynamic_cast<AdaptableLayer*>(m.model().find(module));
    ASSERT_NE(layer, nullptr) << module;
    EXPECT_EQ(static_cast<AdaLoraLinear*>(layer->adapter("default"))->rank(), rank.get<int64_t>()) << module;
  }
}

TEST_P(HfAdaLora, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-6);
}

// Saved again here: the same keys and shapes as HF's file, the same rank_pattern, and HF
// PEFT loads it strictly with our logits.
TEST_P(HfAdaLora, ResavedLoadsInHf) {
  const auto name = GetParam();
  const auto work = suite.scratch("resave_" + name);
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  {
    PeftModel m(load_model(suite.base_of(name).string()));
    m.load_adapter((suite.fixture(name) / "adapter").string());
    m.save_adapter((work / "adapter").string());
  }
  PeftModel again(load_model(suite.base_of(name).string()));
  again.load_adapter((work / "adapter").string());
  const auto reloaded = logits(again, test::inputs_of(ref));
  EXPECT_LE(test::max_diff(reloaded, ref.get("logits"), test::mask_of(ref)), kLogitTol);
  expect_hf_agrees(suite.base_of(name), work / "adapter", ref, reloaded, work);
  SafetensorsFile hf((suite.fixture(name) / "adapter" / "adapter_model.safetensors").string());
  SafetensorsFile ours((work / "adapter" / "adapter_model.safetensors").string());
  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  ASSERT_EQ(sorted(ours.names()), sorted(hf.names()));
  for (const auto& n : hf.names()) EXPECT_EQ(ours.info(n).shape, hf.info(n).shape) << n;
  const auto hf_cfg = read_json(suite.fixture(name) / "adapter" / "adapter_config.json");
  const auto our_cfg = read_json(work / "adapter" / "adapter_config.json");
  EXPECT_EQ(our_cfg["rank_pattern"], hf_cfg["rank_pattern"]);
  for (const char* k : {"init_r", "target_r", "tinit", "tfinal", "deltaT", "total_step", "lora_alpha", "beta1"})
    EXPECT_EQ(our_cfg[k], hf_cfg[k]) << k;
}

INSTANTIATE_TEST_SUITE_P(AdaLora, HfAdaLora, ::testing::Values("adalora_llama", "adalora_gpt2"));

// --- training ---------------------------------------------------------------------------

// The parity run of make_adalora.py with our trainer: the same initial adapter, batches
// in file order, AdamW, clipping and linear schedule.
TrainResult train_like_hf(const fs::path& out) {
  const auto t = read_json(suite.fixture("train") / "train.json");
  TrainConfig c;
  c.model = suite.fixture("llama").string();
  c.train_file = (suite.fixture("train") / "data.jsonl").string();
  c.init_adapter = (suite.fixture("train") / "init_adapter").string();
  c.output_dir = out.string();
  c.shuffle = false;
  c.per_device_train_batch_size = t["batch"];
  c.max_steps = t["steps"];
  c.learning_rate = t["lr"];
  c.max_grad_norm = t["max_grad_norm"];
  c.progress = false;
  return train(c);
}

TEST(AdaLoraTrain, RunsHfScheduleToTheSameRankPatternAndWeights) {
  const auto work = suite.scratch("parity");
  const auto result = train_like_hf(work / "out");
  const auto t = read_json(suite.fixture("train") / "train.json");
  SafetensorsFile ref((suite.fixture("train") / "reference.safetensors").string());

  // The loss HF's AdaLoraModel.forward returns includes the regularizer: ours logs it apart.
  const auto hf_losses = ref.get("losses");
  ASSERT_EQ(static_cast<int64_t>(result.steps.size()), hf_losses.numel());
  double loss_diff = 0;
  for (size_t i = 0; i < result.steps.size(); ++i)
    loss_diff = std::max(loss_diff, std::abs(result.steps[i].loss + result.steps[i].aux_loss -
                                             hf_losses[static_cast<int64_t>(i)].item<double>()));
  std::cout << "max |loss - HF| over " << result.steps.size() << " steps = " << loss_diff << "\n";
  EXPECT_LE(loss_diff, 1e-5);
  EXPECT_GT(result.steps.front().aux_loss, 0.0) << "the orthogonal regularizer is part of the loss";

  // The final allocation, exactly.
  const auto cfg = read_json(work / "out" / "adapter_config.json");
  EXPECT_EQ(cfg["rank_pattern"], t["rank_pattern"]);
  int64_t kept = 0;
  for (const auto& [_, mask] : cfg["rank_pattern"].items())
    for (const auto& b : mask) kept += b.get<bool>();
  EXPECT_EQ(kept, t["config"]["target_r"].get<int64_t>() * static_cast<int64_t>(cfg["rank_pattern"].size()));

  // The weights HF saved (the kept ranks) against ours.
  SafetensorsFile hf((suite.fixture("train") / "hf_final" / "adapter_model.safetensors").string());
  SafetensorsFile ours((work / "out" / "adapter_model.safetensors").string());
  double weight_diff = 0;
  for (const auto& n : hf.names()) {
    ASSERT_TRUE(ours.contains(n)) << n;
    ASSERT_EQ(ours.info(n).shape, hf.info(n).shape) << n;
    if (ours.info(n).end > ours.info(n).begin) weight_diff = std::max(weight_diff, (ours.get(n) - hf.get(n)).abs().max().item<double>());
  }
  std::cout << "max |weight - HF| = " << weight_diff << "\n";
  EXPECT_LE(weight_diff, 1e-5);

  // And HF PEFT loads what we trained, computing what we compute.
  SafetensorsFile inputs((suite.fixture("llama") / "inputs.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.load_adapter((work / "out").string());
  expect_hf_agrees(suite.fixture("llama"), work / "out", inputs, logits(m, test::inputs_of(inputs)), work);
}

TEST(AdaLoraTrain, PeftTrainLowersEvalLossOnTheTargetBudget) {
  const auto work = suite.scratch("learns");
  {  // counting rows within the tiny model's 64-token vocabulary
    std::ofstream f(work / "data.jsonl");
    for (int i = 0; i < 64; ++i) {
      json ids = json::array();
      for (int t = 0; t < 16; ++t) ids.push_back(1 + (i * 7) % 40 + t);
      f << json{{"input_ids", ids}}.dump() << "\n";
    }
  }
  const json method = {{"peft_type", "ADALORA"}, {"init_r", 8},  {"target_r", 4},
                       {"tinit", 10},            {"tfinal", 10}, {"deltaT", 5},
                       {"lora_alpha", 32},       {"target_modules", "all-linear"}};
  const json cfg = {{"model", suite.fixture("llama").string()}, {"train_file", (work / "data.jsonl").string()},
                    {"eval_split", 0.25},                   {"output_dir", (work / "out").string()},
                    {"method", method},                     {"max_steps", 60},
                    {"learning_rate", 5e-2},                {"progress", false}};
  std::ofstream(work / "train.json") << cfg.dump(1);
  auto before_cfg = TrainConfig::from_json(cfg, "train.json");
  before_cfg.eval_file = before_cfg.train_file;
  const auto before = evaluate(before_cfg, {});
  const auto r = test::run_cli({"train", "--config", (work / "train.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto metrics = std::ifstream(work / "out" / "metrics.jsonl");
  double after = NAN;
  for (std::string line; std::getline(metrics, line);)
    if (auto j = json::parse(line); j.contains("eval_loss")) after = j["eval_loss"];
  const double b = before["eval_loss"];
  std::cout << "eval loss " << b << " -> " << after << "\n";
  EXPECT_LT(after, 0.9 * b) << "eval loss " << b << " -> " << after;
  const auto saved = read_json(work / "out" / "adapter_config.json");
  EXPECT_EQ(saved["total_step"], 60) << "total_step comes from the run";
  int64_t kept = 0;
  for (const auto& [_, mask] : saved["rank_pattern"].items())
    for (const auto& k : mask) kept += k.get<bool>();
  EXPECT_EQ(kept, 4 * static_cast<int64_t>(saved["rank_pattern"].size()));
  // The file holds only the kept ranks, and loads back (here) at those sizes.
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.load_adapter((work / "out").string());
  int64_t rows = 0;
  for (const auto& [module, _] : saved["rank_pattern"].items()) {
    const std::string path = module.substr(0, module.rfind('.'));
    rows += static_cast<AdaLoraLinear*>(dynamic_cast<AdaptableLayer*>(m.model().find(path))->adapter("default"))->rank();
  }
  EXPECT_EQ(rows, kept);
}

// --- errors ---------------------------------------------------------------------------

std::string parse_error(const std::string& s) {
  try {
    parse_user_adapter_config(json::parse(s), "method");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(AdaLoraErrors, BadSettingsAreNamed) {
  EXPECT_THAT(parse_error(R"({"peft_type": "ADALORA", "total_step": 10, "tinit": 6, "tfinal": 4})"), HasSubstr("'tinit'"));
  EXPECT_THAT(parse_error(R"({"peft_type": "ADALORA", "init_r": 4, "target_r": 6})"), HasSubstr("'target_r'"));
  EXPECT_THAT(parse_error(R"({"peft_type": "ADALORA", "use_dora": true})"), HasSubstr("'use_dora'"));
  EXPECT_THAT(parse_error(R"({"peft_type": "ADALORA", "beta1": 1.0})"), HasSubstr("'beta1'"));
  EXPECT_THAT(parse_error(R"({"peft_type": "ADALORA", "total_step": 0})"), HasSubstr("'total_step'"));
  EXPECT_THAT(parse_error(R"({"peft_type": "ADALORA", "rank_pattern": {"m.lora_E": [1, 0]}})"),
              HasSubstr("rank_pattern 'm.lora_E'"));
  EXPECT_THAT(parse_error(R"({"peft_type": "ADALORA", "orth_reg_wieght": 0.1})"), HasSubstr("orth_reg_weight"));
}

// A rank_pattern that does not fit the file's tensors is an error naming the tensor.
TEST(AdaLoraErrors, RankPatternOfAnotherSizeIsNamed) {
  const auto dir = suite.scratch("bad_pattern");
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    fs::copy_file(suite.fixture("adalora_llama") / "adapter" / f, dir / f);
  auto cfg = read_json(dir / "adapter_config.json");
  auto& mask = cfg["rank_pattern"]["model.layers.0.mlp.up_proj.lora_E"];
  mask.push_back(true);
  mask.push_back(true);
  std::ofstream(dir / "adapter_config.json") << cfg.dump(1);
  PeftModel m(load_model(suite.fixture("llama").string()));
  try {
    m.load_adapter(dir.string());
    FAIL() << "loaded a file whose ranks disagree with its rank_pattern";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("model.layers.0.mlp.up_proj.lora_"));
  }
}

}  // namespace
}  // namespace peft
