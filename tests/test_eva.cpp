// EVA (HF PEFT's init_lora_weights "eva") against HF PEFT's get_eva_state_dict +
// initialize_lora_eva_weights (tests/parity/make_eva.py), on the same calibration batches:
//  - the incremental PCA, its convergence loop and the rank redistribution give HF's
//    components and ranks (layers sharing inputs, Conv1D, whiten, rank 0);
//  - the config rewrite is HF's (rank_pattern, alpha_pattern, target_modules), and the
//    initialized adapter gives HF's logits; HF's files load here and ours in HF;
//  - `peft train` calibrates on the training file and lowers the eval loss; bad
//    eva_config values and a missing calibration are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "loss_file.h"
#include "method_suite.h"
#include "peft/lora.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "test_util.h"
#include "tuners/lora/eva.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

const test::MethodSuite suite("eva");
const char* kCases[] = {"eva_llama", "eva_gpt2", "eva_whiten_llama", "eva_rank0_llama"};

std::unique_ptr<LoraConfig> user_config(const std::string& name, PeftModel& peft) {
  auto parsed = parse_user_adapter_config(suite.case_json(name)["method"], "method");
  std::unique_ptr<LoraConfig> cfg(dynamic_cast<LoraConfig*>(parsed.release()));
  cfg->resolve(peft.model());
  return cfg;
}

// The fixture's calibration batches as EvaData running `peft`'s forward; the token mask is
// HF's: attention, and with use_label_mask a label (the fixture's labels are -100 on
// padding and on each row's first two tokens).
EvaData fixture_batches(const SafetensorsFile& ref, size_t n, PeftModel& peft, const LoraConfig& cfg) {
  EvaData d;
  d.num_batches = n;
  d.token_mask = [&ref, use = cfg.eva.use_label_mask, value = cfg.eva.label_mask_value](size_t i) {
    const std::string b = "batch" + std::to_string(i) + ".";
    auto mask = ref.get(b + "attention_mask").to(at::kBool);
    return use ? mask.logical_and(ref.get(b + "labels") != value) : mask;
  };
  d.forward = [&ref, &peft](size_t i) {
    const std::string b = "batch" + std::to_string(i) + ".";
    ModelInputs in;
    in.input_ids = ref.get(b + "input_ids");
    in.attention_mask = ref.get(b + "attention_mask");
    peft.forward(in);
  };
  return d;
}

double rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return ((a.to(at::kDouble) - b.to(at::kDouble)).norm() / b.to(at::kDouble).norm().clamp_min(1e-30)).item<double>();
}

TEST(Eva, ComponentsRanksConfigAndLogitsAreHfs) {
  for (const std::string name : kCases) {
    SCOPED_TRACE(name);
    SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
    PeftModel m(load_model(suite.base_of(name).string()));
    auto cfg = user_config(name, m);
    const auto data = fixture_batches(ref, suite.case_json(name)["num_batches"].get<size_t>(), m, *cfg);
    auto comps = eva_components(m.model(), *cfg, data);
    const auto ranks = suite.case_json(name)["ranks"];
    ASSERT_EQ(comps.size(), ranks.size());
    double worst = 0;
    for (const auto& [path, rank] : ranks.items()) {
      ASSERT_TRUE(comps.count(path)) << path;
      ASSERT_EQ(comps.at(path).size(0), rank.get<int64_t>()) << path;
      if (rank.get<int64_t>() > 0) worst = std::max(worst, rel_diff(comps.at(path), ref.get(path + ".eva")));
    }
    std::cout << name << ": max relative diff of the components " << worst << "\n";
    EXPECT_LE(worst, 1e-4);

    apply_eva(m.model(), *cfg, comps);
    const auto hf = json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json"));
    const auto ours = cfg->to_json();
    for (const char* key : {"rank_pattern", "alpha_pattern", "target_modules", "eva_config", "init_lora_weights"})
      EXPECT_EQ(ours[key], hf[key]) << key;
    m.add_adapter("default", *cfg, 0);
    const auto in = test::inputs_of(ref);
    EXPECT_LE(test::max_diff(test::logits(m, in), ref.get("logits_init"), test::mask_of(ref)), 1e-5);
    {
      c10::InferenceMode g;
      for (const auto& [path, rank] : ranks.items()) {
        auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
        ASSERT_NE(host, nullptr) << path;
        auto* lora = dynamic_cast<LoraLinear*>(host->adapter("default"));
        if (rank.get<int64_t>() == 0) {
          EXPECT_EQ(lora, nullptr) << path << " has rank 0: not adapted";
          continue;
        }
        ASSERT_NE(lora, nullptr) << path;
        lora->lora_B.add_(0.05);
      }
    }
    const double diff = test::max_diff(test::logits(m, in), ref.get("logits"), test::mask_of(ref));
    std::cout << name << ": max |logits - HF| with B moved " << diff << "\n";
    EXPECT_LE(diff, 1e-4);
  }
}

TEST(Eva, HfAdaptersLoadAndOursLoadInHf) {
  for (const std::string name : kCases) {
    SCOPED_TRACE(name);
    SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
    const auto work = suite.scratch("resave_" + name);
    test::expect_resave_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, work / "adapter",
                                   work / "outputs.safetensors", 1e-4);
    const auto saved = json::parse(std::ifstream(work / "adapter" / "adapter_config.json"));
    EXPECT_EQ(saved["init_lora_weights"], "eva");
  }
}

// Without a calibration the init is refused naming EVA; bad eva_config values name the key.
TEST(EvaErrors, SettingsAndMissingCalibrationAreNamed) {
  auto error_of = [](const json& eva) {
    try {
      parse_user_adapter_config({{"peft_type", "LORA"}, {"init_lora_weights", "eva"}, {"eva_config", eva}}, "method");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(error_of({{"rho", 0.5}}), HasSubstr("eva_config 'rho' must be >= 1.0"));
  EXPECT_THAT(error_of({{"tau", 1.5}}), HasSubstr("eva_config 'tau' must be between 0.0 and 1.0"));
  EXPECT_THAT(error_of({{"whiten", "yes"}}), HasSubstr("eva_config 'whiten' must be true or false"));
  EXPECT_THAT(error_of({{"label_mask_value", 0.5}}), HasSubstr("eva_config 'label_mask_value' must be an integer"));
  EXPECT_THAT(error_of({{"rhoo", 2}}), HasSubstr("eva_config has an unknown key 'rhoo'"));
  EXPECT_THAT(error_of(json::array()), HasSubstr("'eva_config' must be an object"));
  EXPECT_EQ(error_of(nullptr), "");

  PeftModel m(load_model(suite.fixture("llama").string()));
  auto cfg = user_config("eva_llama", m);
  try {
    m.add_adapter("default", *cfg, 0);
    ADD_FAILURE() << "EVA without a calibration was accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("EVA init of 'model.layers.0.self_attn.q_proj' needs a calibration pass"));
  }
  // r * rho components cannot exceed a layer's inputs (32 here).
  auto wide = parse_user_adapter_config({{"peft_type", "LORA"}, {"init_lora_weights", "eva"}, {"r", 20},
                                         {"target_modules", {"o_proj"}}}, "method");
  SafetensorsFile ref((suite.fixture("eva_llama") / "reference.safetensors").string());
  const auto& wide_cfg = dynamic_cast<const LoraConfig&>(*wide);
  const auto data = fixture_batches(ref, 12, m, wide_cfg);
  try {
    eva_components(m.model(), wide_cfg, data);
    ADD_FAILURE() << "40 components of 32 inputs were accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("'model.layers.0.self_attn.o_proj' has 32 inputs, fewer than its 40 components"));
  }
  // Batches with fewer tokens than a layer's components: named after one pass over the data.
  auto few = parse_user_adapter_config({{"peft_type", "LORA"}, {"init_lora_weights", "eva"}, {"r", 16},
                                        {"target_modules", {"down_proj"}}}, "method");
  const auto& few_cfg = dynamic_cast<const LoraConfig&>(*few);
  try {
    eva_components(m.model(), few_cfg, fixture_batches(ref, 12, m, few_cfg));
    ADD_FAILURE() << "32 components from batches of fewer tokens were accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("no calibration batch has 32 tokens for 'model.layers.0.mlp.down_proj'"));
  }
}

// `peft train` with init "eva": the calibration over the training file in training batches,
// then training; the saved adapter is HF's EVA layout (ranks in rank_pattern, the adapted
// modules listed) and HF PEFT loads it with our logits.
TEST(Eva, PeftTrainCalibratesOnTheTrainingFile) {
  const auto work = suite.scratch("train");
  const json method = {{"peft_type", "LORA"},
                       {"r", 4},
                       {"lora_alpha", 8},
                       {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}},
                       {"init_lora_weights", "eva"},
                       {"eva_config", {{"rho", 2.0}}}};
  json cfg = {{"model", suite.fixture("llama").string()},
              {"train_file", test::write_small_counting_data(work).string()},
              {"output_dir", (work / "out").string()}, {"method", method}, {"max_steps", 40},
              {"learning_rate", 5e-2}, {"eval_split", 0.25}, {"eval_steps", 40}, {"progress", false}};
  std::ofstream(work / "train.json") << cfg.dump(1);
  const auto r = test::run_cli({"train", "--config", (work / "train.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("EVA: incremental PCA of the targets' inputs over"));
  EXPECT_THAT(r.output, HasSubstr("distinct inputs) after"));
  const auto saved = json::parse(std::ifstream(work / "out" / "adapter_config.json"));
  EXPECT_EQ(saved["init_lora_weights"], "eva");
  EXPECT_EQ(saved["eva_config"]["rho"], 2.0);
  EXPECT_TRUE(saved["target_modules"].is_array());
  // The ranks the file's tensors have are the ones its rank_pattern states.
  SafetensorsFile weights((work / "out" / "adapter_model.safetensors").string());
  int64_t total = 0;
  for (const auto& path : saved["target_modules"]) {
    const auto p = path.get<std::string>();
    const int64_t rank = saved["rank_pattern"].contains(p) ? saved["rank_pattern"][p].get<int64_t>() : 4;
    EXPECT_EQ(weights.get("base_model.model." + p + ".lora_A.weight").size(0), rank) << p;
    total += rank;
  }
  EXPECT_EQ(total, 14 * 4) << "EVA redistributes the budget of 14 layers at r 4";
  const double start = test::first_step_loss(work / "out"), after = test::last_eval_loss(work / "out");
  std::cout << "eva train: first step loss " << start << ", final eval loss " << after << "\n";
  EXPECT_LT(after, start - 0.1);
  SafetensorsFile ref((suite.fixture("eva_llama") / "reference.safetensors").string());
  PeftModel trained(load_model(suite.fixture("llama").string()));
  trained.load_adapter((work / "out").string());
  const auto ours = test::logits(trained, test::inputs_of(ref));
  const auto outputs = test::write_outputs(ref, "logits", ours, work / "outputs.safetensors");
  std::string log;
  EXPECT_EQ(test::check_in_python(suite.fixture("llama"), (work / "out").string(), outputs, &log), 0) << log;
}

}  // namespace
}  // namespace peft
