// SHiRA (HF PEFT's SHIRA) against adapters HF PEFT made (tests/parity/make_shira.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, positions read
//    from the file (also a user mask function's, mask_type "magnitude");
//  - a fresh random-mask adapter draws HF's exact positions from random_seed (and from
//    torch's default seed when it is null);
//  - merge and unmerge give HF's merged logits and restore the weights;
//  - resaved, and trained here with `peft train` (which lowers the eval loss), adapters
//    load in HF PEFT with our logits, all checked in one Python process; bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_runner.h"
#include "method_suite.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/shira.h"
#include "peft/train.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

const test::MethodSuite suite("shira");
using test::logits;
using test::last_eval_loss;

const std::vector<std::string> kCases = {"shira_llama", "shira_llama_noseed", "shira_llama_magnitude"};

ShiraLayer* shira_layer(PeftModel& m, const std::string& path) {
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
  return host ? dynamic_cast<ShiraLayer*>(host->adapter("default")) : nullptr;
}

// Every adapted layer's positions equal HF's in-memory shira_indices (int32 [2, n]).
void expect_hf_positions(PeftModel& m, const SafetensorsFile& ref) {
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("indices.", 0) != 0) continue;
    auto* a = shira_layer(m, key.substr(8));
    ASSERT_NE(a, nullptr) << key;
    EXPECT_EQ(a->indices.scalar_type(), at::kInt) << key;
    EXPECT_TRUE(at::equal(a->indices, ref.get(key))) << key;
    ++layers;
  }
  EXPECT_GE(layers, 4);
}

class HfShira : public ::testing::TestWithParam<std::string> {};

TEST_P(HfShira, LoadsWithHfLogitsTrainableLineAndPositions) {
  const auto name = GetParam();
  suite.expect_loads_as_hf(name, kLogitTol);
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  expect_hf_positions(m, ref);
}

TEST_P(HfShira, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shira, HfShira, ::testing::ValuesIn(kCases));

// A fresh adapter of the random cases' configs draws HF's positions itself (HF draws them
// again at load time too, then takes the file's).
TEST(ShiraMask, FreshRandomPositionsAreHfs) {
  for (const std::string name : {"shira_llama", "shira_llama_noseed"}) {
    SCOPED_TRACE(name);
    SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
    auto cfg = parse_adapter_config(
        json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json")), name);
    PeftModel m(load_model(suite.base_of(name).string()));
    m.add_adapter("default", *cfg);
    expect_hf_positions(m, ref);
  }
}

// Resaved HF adapters and one trained here with `peft train` load in HF PEFT with our
// logits (one Python process); the training lowered the held-out eval loss.
TEST(ShiraTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  std::vector<std::string> args;
  auto add_case = [&](const fs::path& base, const fs::path& adapter, const std::string& ref_case,
                      const fs::path& work) {
    const auto triple = suite.check_case(base, adapter, ref_case, work);
    args.insert(args.end(), triple.begin(), triple.end());
  };
  for (const auto& name : kCases) {
    const auto work = suite.scratch("resave_" + name);
    PeftModel m(load_model(suite.base_of(name).string()));
    m.load_adapter((suite.fixture(name) / "adapter").string());
    m.save_adapter((work / "adapter").string());
    add_case(suite.base_of(name), work / "adapter", name, work);
  }

  const auto work = suite.scratch("train");
  // The random tiny Llama's frozen embeddings and head hold the held-out loss above ~3.5
  // (4.15 at the start): about 4.15 -> 3.58 here.
  const json method = {{"peft_type", "SHIRA"}, {"r", 8}, {"random_seed", 3}, {"target_modules", "all-linear"}};
  const auto out = suite.train_with_cli(work, method, 120, 1e-1, {{"eval_split", 0.25}});
  SafetensorsFile file((out / "adapter_model.safetensors").string());
  // init_weights: the weights started at zero; training moved them. The positions are saved.
  EXPECT_GT(file.get("base_model.model.model.layers.0.self_attn.q_proj.shira_weight").abs().max().item<double>(), 1e-4);
  EXPECT_EQ(file.get("base_model.model.model.layers.0.self_attn.q_proj.shira_indices").scalar_type(), at::kInt);
  TrainConfig c;
  c.model = suite.fixture("llama").string();
  c.train_file = (work / "counting.jsonl").string();
  c.method = method;  // zero-initialized: the base model's loss
  c.progress = false;
  const double before = evaluate(c, {})["eval_loss"];
  const double after = last_eval_loss(out);
  std::cerr << "shira eval loss " << before << " -> " << after << "\n";
  EXPECT_GT(after, 0.0);
  EXPECT_LT(after, 0.9 * before) << "eval loss " << before << " -> " << after;
  add_case(suite.fixture("llama"), out, "shira_llama", work);

  suite.expect_hf_checks("make_shira.py", args);
}

std::string user_config_error(const std::string& s) {
  try {
    parse_user_adapter_config(json::parse(s), "method");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string add_adapter_error(const std::string& s) {
  PeftModel m(load_model(suite.fixture("llama").string()));
  try {
    m.add_adapter("default", *parse_user_adapter_config(json::parse(s), "method"));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(ShiraErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "SHIRA", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "SHIRA", "random_seed": "x"})"), HasSubstr("'random_seed'"));
  // HF's ShiraConfig has no layers_to_transform.
  EXPECT_THAT(user_config_error(R"({"peft_type": "SHIRA", "layers_to_transform": [0]})"),
              HasSubstr("layers_to_transform"));
  EXPECT_THAT(add_adapter_error(R"({"peft_type": "SHIRA", "r": 12, "target_modules": ["k_proj"]})"),
              HasSubstr("more than its 512"));
  EXPECT_THAT(add_adapter_error(R"({"peft_type": "SHIRA", "target_modules": ["model.norm"]})"),
              HasSubstr("only Linear layers are supported"));
}

TEST(ShiraErrors, UnknownPositionsAndBadFilesAreNamed) {
  // mask_type without a mask function: positions only from a file.
  {
    PeftModel m(load_model(suite.fixture("llama").string()));
    m.add_adapter("default", *parse_user_adapter_config(
                                 json::parse(R"({"peft_type": "SHIRA", "r": 1, "mask_type": "magnitude",
                                                 "target_modules": ["k_proj"]})"),
                                 "method"));
    SafetensorsFile ref((suite.fixture("shira_llama") / "reference.safetensors").string());
    try {
      logits(m, test::inputs_of(ref));
      FAIL() << "positions are unknown";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), HasSubstr("model.layers.0.self_attn.k_proj.shira_indices' is unknown"));
    }
  }
  // A file whose positions lie outside the weight.
  const auto work = suite.scratch("bad_indices");
  fs::copy(suite.fixture("shira_llama") / "adapter", work / "adapter");
  const auto st = (work / "adapter" / "adapter_model.safetensors").string();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  {
    SafetensorsFile f(st);
    for (const auto& k : f.names()) tensors.emplace_back(k, f.get(k).clone());
  }
  const std::string bad = "base_model.model.model.layers.1.self_attn.v_proj.shira_indices";
  for (auto& [k, t] : tensors)
    if (k == bad) t[0][3] = 999;
  save_safetensors(st, tensors, {{"format", "pt"}});
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.load_adapter((work / "adapter").string());
  SafetensorsFile ref((suite.fixture("shira_llama") / "reference.safetensors").string());
  try {
    logits(m, test::inputs_of(ref));
    FAIL() << "row 999 is outside v_proj";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr(bad + "' has positions outside the [16, 32] weight"));
  }
}

}  // namespace
}  // namespace peft
