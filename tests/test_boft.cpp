// BOFT (HF PEFT 0.21's BOFT on its PyTorch path) against adapters HF PEFT made
// (tests/parity/make_boft.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line: block size or
//    block count, a butterfly factor HF drops to one without its CUDA kernel, GPT-2's lm_head
//    with bias="all", a ViT classifier with modules_to_save;
//  - each layer's block-diagonal rotation and scale equal HF's get_delta_weight;
//  - merge gives HF's merged logits, unmerge restores the weights;
//  - saved again, and trained here with `peft train`, adapters load in HF PEFT with our
//    logits (all in one Python process); training lowers the eval loss; the multiplicative
//    block dropout; Conv1D targets and bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "method_suite.h"
#include "peft/boft.h"
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
const std::vector<std::string> kCases = {"boft_llama", "boft_llama_num", "boft_gpt2", "boft_vit"};

const test::MethodSuite suite("boft");
using test::logits;

// Each layer's block-diagonal rotation and scale equal HF's get_delta_weight.
void expect_rotations_and_scales_of_hf(const std::string& name) {
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  int layers = 0;
  for (const auto& key : ref.names()) {
    if (key.rfind("rotation.", 0) != 0) continue;
    const auto path = key.substr(9);
    auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
    ASSERT_NE(host, nullptr) << path;
    auto* a = dynamic_cast<BOFTLayer*>(host->adapter("default"));
    ASSERT_NE(a, nullptr) << path;
    c10::InferenceMode g;
    const auto R = a->rotation();
    ASSERT_EQ(R.sizes(), ref.get(key).sizes()) << path;
    EXPECT_LE((R - ref.get(key)).abs().max().item<double>(), 1e-5) << path;
    EXPECT_TRUE(at::equal(a->s, ref.get("scale." + path))) << path;
    ++layers;
  }
  EXPECT_GE(layers, 1);
}

// Merged logits are HF's; unmerge restores the weights.
void expect_merge_as_hf(const std::string& name) {
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  // bias="all" (boft_gpt2): the adapter's own biases replace the base's, merged or not.
  const auto own_bias = [](const PeftModel&, const std::string& n) { return n.ends_with(".bias"); };
  if (name != "boft_gpt2") {
    test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5, own_bias);
    return;
  }
  // GPT-2's lm_head is tied to the token embedding: HF's merge rotates the shared weight,
  // so the embedding changes too and the merged logits are not the unmerged ones. Ours
  // are HF's merged logits, and unmerge restores the weights.
  c10::InferenceMode g;
  auto base = load_model(suite.base_of(name).string());
  const auto wte = base->find("transformer.wte")->slots().at(0).tensor->clone();
  PeftModel m(base);
  m.load_adapter((suite.fixture(name) / "adapter").string());
  m.merge();
  const double diff = test::max_diff(logits(m, test::inputs_of(ref)), ref.get("merged_logits"), test::mask_of(ref));
  std::cout << name << ": max |merged logits - HF's| = " << diff << "\n";
  EXPECT_LE(diff, kLogitTol);
  EXPECT_GT((*base->find("transformer.wte")->slots().at(0).tensor - wte).abs().max().item<double>(), 1e-3);
  m.unmerge();
  EXPECT_LE((*base->find("transformer.wte")->slots().at(0).tensor - wte).abs().max().item<double>(), 1e-5);
}

// One test per case (each test is a process under ctest; loading libtorch dominates).
class HfBoft : public ::testing::TestWithParam<std::string> {};

TEST_P(HfBoft, LoadsRotatesAndMergesAsHf) {
  suite.expect_loads_as_hf(GetParam(), kLogitTol);
  expect_rotations_and_scales_of_hf(GetParam());
  expect_merge_as_hf(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Boft, HfBoft, ::testing::ValuesIn(kCases));

// HF PEFT loads, strictly and with our logits, every HF adapter saved again here (with
// exactly HF's keys) and one trained by `peft train`: one Python process for all of them.
TEST(BoftInHf, ResavedAndTrainedAdaptersLoadInHf) {
  const auto work = suite.scratch("in_hf");
  std::vector<std::string> args;
  const auto add_check = [&](const fs::path& base, const fs::path& adapter, const std::string& ref_case) {
    SafetensorsFile ref((suite.fixture(ref_case) / "reference.safetensors").string());
    PeftModel m(load_model(base.string()));
    m.load_adapter(adapter.string());
    const auto out = work / (adapter.parent_path().filename().string() + "_outputs.safetensors");
    test::write_outputs(ref, "logits", logits(m, test::inputs_of(ref)), out);
    args.insert(args.end(), {base.string(), adapter.string(), out.string()});
  };
  for (const auto& name : kCases) {
    SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
    const auto dir = work / name / "adapter";
    {
      PeftModel m(load_model(suite.base_of(name).string()));
      m.load_adapter((suite.fixture(name) / "adapter").string());
      m.save_adapter(dir.string());
    }
    SafetensorsFile hf((suite.fixture(name) / "adapter" / "adapter_model.safetensors").string());
    SafetensorsFile ours((dir / "adapter_model.safetensors").string());
    // HF also files the weight of a targeted lm_head (lm_head.base_layer.weight, GPT-2's
    // tied embedding); we read past it and do not write it, as the base has it.
    std::set<std::string> want;
    for (const auto& n : hf.names())
      if (n.find(".base_layer.") == std::string::npos) want.insert(n);
    const auto got = ours.names();
    EXPECT_EQ(std::set<std::string>(got.begin(), got.end()), want) << name;
    add_check(suite.base_of(name), dir, name);
  }
  const json method = {{"peft_type", "BOFT"}, {"boft_block_size", 8}, {"target_modules", {"q_proj", "v_proj", "down_proj"}}};
  fs::create_directories(work / "train");
  const auto trained = suite.train_with_cli(work / "train", method, 4);
  SafetensorsFile file((trained / "adapter_model.safetensors").string());
  // init_weights: R = 0, s = 1; training moved both.
  EXPECT_GT(file.get("base_model.model.model.layers.0.self_attn.q_proj.boft_R").abs().max().item<double>(), 1e-4);
  EXPECT_GT((file.get("base_model.model.model.layers.0.self_attn.q_proj.boft_s") - 1).abs().max().item<double>(), 1e-4);
  add_check(suite.fixture("llama"), trained, "boft_llama");

  std::string cmd = std::string(PEFT_PYTHON) + " " + PEFT_SOURCE_DIR + "/tests/parity/make_boft.py check";
  for (const auto& a : args) cmd += " " + a;
  int status = 0;
  const auto log = test::run_command(cmd + " 2>&1", &status);
  std::cout << log;
  EXPECT_EQ(status, 0) << log;
}

TEST(BoftTrain, LowersEvalLoss) {
  const auto work = suite.scratch("learns");
  TrainConfig c;
  c.model = suite.fixture("llama").string();
  c.train_file = test::write_small_counting_data(work).string();
  c.eval_split = 0.25;
  c.output_dir = (work / "out").string();
  c.method = json::parse(R"({"peft_type": "BOFT", "boft_block_size": 8,
      "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]})");
  c.max_steps = 60;
  c.learning_rate = 0.05;
  c.progress = false;
  auto before_cfg = c;
  before_cfg.eval_file = c.train_file;
  const double before = evaluate(before_cfg, {})["eval_loss"];
  const double after = train(c).evals.back()["eval_loss"];
  std::cout << "BOFT eval loss " << before << " -> " << after << "\n";
  EXPECT_LT(after, before - 0.2) << "eval loss " << before << " -> " << after;
}

// HF's MultiplicativeDropoutLayer: in training int(p * D) blocks, chosen at random, are the
// identity; the others keep their rotation; in eval nothing changes.
TEST(Boft, BlockDropoutReplacesBlocksWithIdentity) {
  PeftModel m(load_model(suite.fixture("llama").string()));
  auto cfg = parse_user_adapter_config(
      json::parse(R"({"peft_type": "BOFT", "boft_block_size": 4, "boft_dropout": 0.5, "init_weights": false,
                      "target_modules": ["q_proj"]})"),
      "method");
  m.add_adapter("default", *cfg);
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find("model.layers.0.self_attn.q_proj"));
  auto* a = dynamic_cast<BOFTLayer*>(host->adapter("default"));
  ASSERT_NE(a, nullptr);
  c10::InferenceMode g;
  const auto eval_rot = a->rotation();
  a->training = true;
  const auto eye = at::eye(4);
  for (int trial = 0; trial < 3; ++trial) {
    const auto rot = a->rotation();
    int identity = 0;
    for (int64_t i = 0; i < a->blocks; ++i) {
      const auto blk = rot.slice(0, 4 * i, 4 * i + 4).slice(1, 4 * i, 4 * i + 4);
      if (at::allclose(blk, eye)) ++identity;
      else EXPECT_TRUE(at::equal(blk, eval_rot.slice(0, 4 * i, 4 * i + 4).slice(1, 4 * i, 4 * i + 4)));
    }
    EXPECT_EQ(identity, a->blocks / 2);  // 8 blocks, p 0.5
  }
  a->training = false;
  EXPECT_TRUE(at::equal(a->rotation(), eval_rot));
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

std::string add_error(const std::string& model, const std::string& method) {
  PeftModel m(load_model(suite.fixture(model).string()));
  try {
    m.add_adapter("default", *parse_user_adapter_config(json::parse(method), "method"));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(BoftErrors, BadSettingsAndLayersAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "BOFT", "boft_block_num": 4})"), HasSubstr("'boft_block_num'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "BOFT", "boft_block_size": 0})"), HasSubstr("'boft_block_num'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "BOFT", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "BOFT", "boft_dropout": 1.5})"), HasSubstr("'boft_dropout'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "BOFT", "boft_n_butterfly_factor": 0})"),
              HasSubstr("'boft_n_butterfly_factor'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "BOFT", "boft_blocksize": 8})"), HasSubstr("boft_block_size"));

  // GPT-2's default target: c_attn, a Conv1D, which HF's BOFT refuses too.
  EXPECT_THAT(add_error("gpt2", R"({"peft_type": "BOFT"})"), HasSubstr("'transformer.h.0.attn.c_attn' is a Conv1D"));
  EXPECT_THAT(add_error("llama", R"({"peft_type": "BOFT", "boft_block_size": 5, "target_modules": ["q_proj"]})"),
              HasSubstr("in_features (32) of 'model.layers.0.self_attn.q_proj' must be divisible by boft_block_size (5)"));
  // down_proj has 48 inputs: 32 blocks do not divide them.
  EXPECT_THAT(add_error("llama", R"({"peft_type": "BOFT", "boft_block_size": 0, "boft_block_num": 32,
                                    "target_modules": ["down_proj"]})"),
              HasSubstr("must be divisible by boft_block_num (32)"));

  // A file with two butterfly factors (made where HF's CUDA kernel built) is refused by
  // its boft_R's shape, naming the key.
  const auto dir = suite.scratch("two_factors");
  fs::copy(suite.fixture("boft_llama") / "adapter", dir, fs::copy_options::recursive);
  const auto st = (dir / "adapter_model.safetensors").string();
  NamedTensors tensors;
  {
    SafetensorsFile f(st);
    for (const auto& n : f.names())
      tensors.emplace_back(n, n.ends_with(".boft_R") ? at::cat({f.get(n), f.get(n)}, 0) : f.get(n));
  }
  save_safetensors(st, tensors);
  PeftModel m(load_model(suite.fixture("llama").string()));
  try {
    m.load_adapter(dir.string());
    FAIL() << "a two-factor boft_R loaded";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr(".boft_R' has shape [2, "));
  }
}

}  // namespace
}  // namespace peft
