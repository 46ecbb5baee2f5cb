// Adaption prompts (HF PEFT's ADAPTION_PROMPT, LLaMA-Adapter) against adapters HF PEFT made
// with random prompts and non-zero gates (tests/parity/make_adaption_prompt.py) on a tiny
// Llama with grouped-query attention (4 query, 2 key/value heads), a Mistral (one key/value
// head) and GPT-2:
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line;
//  - greedy generation with the KV cache gives HF's tokens (left-padded batch);
//  - switching, disabling and deleting adapters leave the right prompts in effect;
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
#include "generation_rows.h"
#include "method_suite.h"
#include "peft/adaption_prompt.h"
#include "peft/generate.h"
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

const test::MethodSuite suite("adaption_prompt");
using test::logits;
using test::last_eval_loss;

const std::vector<std::string> kCases = {"ap_llama", "ap_llama_top", "ap_mistral", "ap_gpt2"};

class HfAdaptionPrompt : public ::testing::TestWithParam<std::string> {};

TEST_P(HfAdaptionPrompt, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

using test::unpadded;

// HF's greedy generate (KV cache, left-padded batch): each step's queries meet the prompts
// again, the cache holds the sequence's own keys only.
TEST_P(HfAdaptionPrompt, GreedyGenerationWithCacheIsHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  GenerationConfig cfg;
  cfg.max_new_tokens = 4;
  const auto prompt_mask = ref.get("gen_prompt_mask");
  const auto got = generate(m.model(), unpadded(ref.get("gen_prompt_ids"), prompt_mask), cfg);
  // HF's rows: the left padding, then prompt and new tokens.
  const auto want = unpadded(ref.get("gen_ids"), prompt_mask);
  EXPECT_EQ(got, want);
}

INSTANTIATE_TEST_SUITE_P(AdaptionPrompt, HfAdaptionPrompt, ::testing::ValuesIn(kCases));

// Two adapters on the same modules: only the active one's prompts act (the other's stay on
// layers the active one does not touch, silent); disabling and deleting leave the base.
TEST(AdaptionPromptAdapters, SwitchDisableAndDelete) {
  SafetensorsFile all((suite.fixture("ap_llama") / "reference.safetensors").string());
  SafetensorsFile top((suite.fixture("ap_llama_top") / "reference.safetensors").string());
  const auto in = test::inputs_of(all);
  const auto mask = test::mask_of(all);
  PeftModel m(load_model(suite.fixture("llama").string()));
  at::Tensor base = logits(m, in);
  m.load_adapter((suite.fixture("ap_llama") / "adapter").string(), "all");
  m.load_adapter((suite.fixture("ap_llama_top") / "adapter").string(), "top");
  EXPECT_LE(test::max_diff(logits(m, in), all.get("logits"), mask), kLogitTol);  // the first stays active
  m.set_adapter({"top"});
  EXPECT_LE(test::max_diff(logits(m, in), top.get("logits"), mask), kLogitTol);
  {
    auto off = m.disable_adapters();
    EXPECT_LE(test::max_diff(logits(m, in), base, mask), 1e-6);
  }
  m.set_adapter({"all"});
  EXPECT_LE(test::max_diff(logits(m, in), all.get("logits"), mask), kLogitTol);
  m.delete_adapter("top");
  EXPECT_LE(test::max_diff(logits(m, in), all.get("logits"), mask), kLogitTol);
  m.delete_adapter("all");
  EXPECT_LE(test::max_diff(logits(m, in), base, mask), 1e-6);
}

// Resaved HF adapters and one trained here with `peft train` load in HF PEFT with our
// logits (one Python process); the training lowered the held-out eval loss.
TEST(AdaptionPromptTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
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
    EXPECT_EQ(json::parse(std::ifstream(work / "adapter" / "adapter_config.json")),
              json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json")))
        << name << ": adapter_config.json differs from HF's";
    add_case(suite.base_of(name), work / "adapter", name, work);
  }

  // On the Llama with N(0, 0.2^2) weights: the default tiny Llama's logits are too flat for
  // prompts in the residual stream to move its loss much (HF PEFT: 4.15 -> 4.12).
  const auto work = suite.scratch("train");
  const auto train_base = suite.fixture("llama_train");
  const json method = {{"peft_type", "ADAPTION_PROMPT"}, {"adapter_len", 8}, {"adapter_layers", 2}};
  const auto out = suite.train_with_cli(work, method, 120, 5e-2, {{"eval_split", 0.25}, {"model", train_base.string()}});
  SafetensorsFile file((out / "adapter_model.safetensors").string());
  // The gate started at zero; training opened it.
  EXPECT_GT(file.get("base_model.model.model.layers.1.self_attn.adaption_gate").abs().max().item<double>(), 1e-3);
  TrainConfig c;
  c.model = train_base.string();
  c.train_file = (work / "counting.jsonl").string();
  c.method = method;  // zero gates: the base model's loss
  c.progress = false;
  const double before = evaluate(c, {})["eval_loss"];
  const double after = last_eval_loss(out);
  std::cerr << "adaption prompt eval loss " << before << " -> " << after << "\n";
  EXPECT_GT(after, 0.0);
  EXPECT_LT(after, 0.9 * before) << "eval loss " << before << " -> " << after;
  add_case(train_base, out, "ap_llama", work);

  suite.expect_hf_checks("make_adaption_prompt.py", args);
}

std::string user_config_error(const std::string& s) {
  try {
    parse_user_adapter_config(json::parse(s), "method");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string add_adapter_error(const std::shared_ptr<Model>& model, const std::string& s) {
  PeftModel m(model);
  try {
    m.add_adapter("default", *parse_user_adapter_config(json::parse(s), "method"));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(AdaptionPromptErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAPTION_PROMPT", "adapter_len": 0, "adapter_layers": 1})"),
              HasSubstr("'adapter_len' must be a positive integer"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAPTION_PROMPT", "adapter_len": 2})"),
              HasSubstr("'adapter_layers' must be a positive integer"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "ADAPTION_PROMPT", "adapter_len": 2, "adapter_layers": 1,
                                    "target_modules": ["self_attn"]})"),
              HasSubstr("'target_modules' must be the attention submodules' name"));
  const auto llama = load_model(suite.fixture("llama").string());
  EXPECT_THAT(add_adapter_error(llama, R"({"peft_type": "ADAPTION_PROMPT", "adapter_len": 2, "adapter_layers": 3})"),
              HasSubstr("more adapter layers '3' than the model has '2'"));
  EXPECT_THAT(add_adapter_error(llama, R"({"peft_type": "ADAPTION_PROMPT", "adapter_len": 2, "adapter_layers": 1,
                                          "target_modules": "mlp"})"),
              HasSubstr("'model.layers.1.mlp' is a LlamaMLP, not an attention module"));
  // HF PEFT's table has llama, mistral and gpt2 only.
  auto qwen = json::parse(std::ifstream(suite.fixture("llama") / "config.json"));
  qwen["model_type"] = "qwen2";
  qwen["architectures"] = {"Qwen2ForCausalLM"};
  EXPECT_THAT(add_adapter_error(build_model(qwen), R"({"peft_type": "ADAPTION_PROMPT", "adapter_len": 2, "adapter_layers": 1})"),
              HasSubstr("unsupported model type 'qwen2'"));
}

}  // namespace
}  // namespace peft
