// CPT, Context-aware Prompt Tuning (HF PEFT 0.21's CPTConfig), against adapters HF PEFT made
// (tests/parity/make_cpt.py: a tiny Llama with loss type none, GPT-2 with "decay"):
//  - HF's adapters load with HF's logits, with and without an attention mask (<= 1e-4),
//    and print HF's trainable-parameter line;
//  - a new adapter starts from cpt_token_ids' word embeddings with a zero delta; the
//    epsilons and the projection of HF's perturbed delta are HF's;
//  - the CPT loss of one batch (labels and input_type_mask, or HF's default types) and
//    the masked gradient of the delta are HF's;
//  - resaved, and trained with `peft train` on lines with "input_type_mask", adapters load
//    in HF PEFT with our logits (one Python process); the trained delta stays in its balls;
//  - mismatched lengths, an unknown loss type, another task type, ids outside the
//    vocabulary and bad "input_type_mask" data are named.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "loss_file.h"
#include "method_suite.h"
#include "peft/cpt.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "suite_checks.h"
#include "test_util.h"
#include "train/data.h"
#include "tuners/cpt/prompt.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

const test::MethodSuite suite("cpt");
using test::logits;

class HfCpt : public ::testing::TestWithParam<std::string> {};

TEST_P(HfCpt, LoadsWithHfLogitsAndTrainableLine) {
  suite.expect_loads_as_hf(GetParam(), kLogitTol);
  // Without an attention mask too.
  SafetensorsFile ref((suite.fixture(GetParam()) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(GetParam()).string()));
  m.load_adapter((suite.fixture(GetParam()) / "adapter").string());
  ModelInputs in;
  in.input_ids = ref.get("input_ids");
  const double diff = test::max_diff(logits(m, in), ref.get("logits_nomask"), at::Tensor());
  std::cout << GetParam() << ": max |logits - HF| without a mask = " << diff << "\n";
  EXPECT_LE(diff, kLogitTol);
}

// A new adapter of the case's config, as training makes it.
struct Fresh {
  explicit Fresh(const std::string& name) : m(load_model(suite.base_of(name).string())) {
    auto cfg = parse_user_adapter_config(suite.case_json(name)["config"], "method");
    cfg->inference_mode = false;
    m.add_adapter("default", *cfg);
    prompt = dynamic_cast<CptPrompt*>(m.input_adapter("default"));
  }
  PeftModel m;
  CptPrompt* prompt = nullptr;
};

TEST_P(HfCpt, NewAdapterAndProjectionAreHfs) {
  SafetensorsFile ref((suite.fixture(GetParam()) / "reference.safetensors").string());
  Fresh f(GetParam());
  ASSERT_NE(f.prompt, nullptr);
  EXPECT_EQ(f.m.trainable_parameters_line(), suite.case_json(GetParam())["trainable"].get<std::string>());
  EXPECT_TRUE(at::equal(f.prompt->embedding, ref.get("init_embedding"))) << "the template's word embeddings";
  EXPECT_EQ(f.prompt->delta.abs().max().item<double>(), 0.0);
  EXPECT_TRUE(at::equal(f.prompt->epsilon(), ref.get("epsilon")));
  {
    c10::NoGradGuard g;
    f.prompt->delta.copy_(ref.get("raw_delta"));
  }
  const auto projected = f.prompt->projected_delta();
  EXPECT_LE((projected - ref.get("projected_delta")).abs().max().item<double>(), 1e-7);
  // Some rows were clipped, some not: the case tests both.
  const auto clipped = (projected - ref.get("raw_delta")).abs().amax(1) > 0;
  EXPECT_TRUE(clipped.any().item<bool>());
  EXPECT_FALSE(clipped.all().item<bool>());
}

TEST_P(HfCpt, LossAndMaskedGradientAreHfs) {
  SafetensorsFile ref((suite.fixture(GetParam()) / "reference.safetensors").string());
  Fresh f(GetParam());
  ASSERT_NE(f.prompt, nullptr);
  {
    c10::NoGradGuard g;
    f.prompt->delta.copy_(ref.get("raw_delta"));
  }
  ASSERT_TRUE(f.prompt->delta.requires_grad());
  const auto loss = cpt_loss(f.m.model(), ref.get("input_ids"), ref.get("attention_mask"), ref.get("labels"),
                             ref.get("input_type_mask"));
  ASSERT_TRUE(loss.defined());
  std::cout << GetParam() << ": loss " << loss.item<double>() << ", HF " << ref.get("loss").item<double>() << "\n";
  EXPECT_LE(std::abs(loss.item<double>() - ref.get("loss").item<double>()), 1e-5);
  loss.backward();
  const auto grad = f.prompt->delta.grad(), want = ref.get("delta_grad");
  ASSERT_TRUE(grad.defined());
  EXPECT_LE((grad - want).abs().max().item<double>(), 1e-5 * std::max(1.0, want.abs().max().item<double>()));
  // Label rows (type % 4 == 0) get none, as HF's hook leaves them.
  EXPECT_TRUE(at::equal(grad.abs().sum(1) == 0, want.abs().sum(1) == 0));
  EXPECT_TRUE((want.abs().sum(1) == 0).any().item<bool>());
  // Without input_type_mask: HF's default, 4 on every input token.
  {
    c10::NoGradGuard g;
    f.prompt->delta.copy_(ref.get("raw_delta"));
    const auto plain = cpt_loss(f.m.model(), ref.get("input_ids"), ref.get("attention_mask"), ref.get("labels"),
                                at::Tensor());
    EXPECT_LE(std::abs(plain.item<double>() - ref.get("loss_default").item<double>()), 1e-5);
  }
}

INSTANTIATE_TEST_SUITE_P(Cpt, HfCpt, ::testing::Values("cpt_llama", "cpt_gpt2"));

// --- ours in HF PEFT ----------------------------------------------------------------------

// 64 counting rows of 16 ids in HF's CPT layout of one query: an input template (type 1),
// the input (2), an output template (3) and the label tokens (4).
fs::path write_typed_data(const fs::path& dir) {
  const auto p = dir / "typed.jsonl";
  std::ofstream f(p);
  std::mt19937 rng(5);
  for (int i = 0; i < 64; ++i) {
    json ids = json::array(), types = json::array();
    for (int t = 0, s = 1 + static_cast<int>(rng() % 40); t < 16; ++t) {
      ids.push_back(s + t);
      types.push_back(t < 2 ? 1 : t < 8 ? 2 : t < 10 ? 3 : 4);
    }
    f << json{{"input_ids", ids}, {"input_type_mask", types}}.dump() << "\n";
  }
  return p;
}

TEST(CptTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  std::vector<std::string> triples;
  for (const std::string name : {"cpt_llama", "cpt_gpt2"}) test::resave_for_hf_check(suite, name, &triples);
  const auto work = suite.scratch("train");
  auto method = suite.case_json("cpt_llama")["config"];
  const auto out = suite.train_with_cli(work, method, 60, 1e-1,
                                        {{"train_file", write_typed_data(work).string()}, {"eval_split", 0.25},
                                         {"eval_steps", 60}});
  ASSERT_TRUE(fs::exists(out / "adapter_model.safetensors"));
  const double start = test::first_step_loss(out), end = test::last_eval_loss(out);
  std::cout << "cpt train: first step loss " << start << ", final eval loss " << end << "\n";
  EXPECT_LT(end, start - 0.02);  // the deltas are confined to small balls: a small but clear drop
  // The trained delta (beside the file, for training on) stays in each token's ball, and
  // the label rows (no gradient, radius 1e-10) stay at the template's embeddings.
  SafetensorsFile enc((out / "prompt_encoder.safetensors").string());
  Fresh f("cpt_llama");
  const auto norms = at::linalg_vector_norm(enc.get("delta_embedding.weight"), 2, at::IntArrayRef{1});
  const auto eps = f.prompt->epsilon();
  EXPECT_TRUE((norms <= eps * (1 + 1e-5)).all().item<bool>()) << norms << eps;
  EXPECT_GT(norms.max().item<double>(), 0.0) << "training moved nothing";
  const auto triple = suite.check_case(suite.fixture("llama"), out, "cpt_llama", work);
  triples.insert(triples.end(), triple.begin(), triple.end());
  test::MethodSuite::expect_hf_checks("make_cpt.py", triples);
}

// --- errors ---------------------------------------------------------------------------

TEST(CptErrors, ConfigsAreChecked) {
  using test::user_config_error;
  EXPECT_THAT(user_config_error(R"({"peft_type": "CPT", "task_type": "CAUSAL_LM", "cpt_token_ids": [1, 2, 3],
                                   "cpt_tokens_type_mask": [1, 2]})"),
              HasSubstr("cpt_token_ids, cpt_mask and cpt_tokens_type_mask must have the same length, got 3, 3 and 2"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "CPT", "task_type": "CAUSAL_LM", "cpt_token_ids": [1, 2],
                                   "cpt_mask": [1]})"),
              HasSubstr("must have the same length, got 2, 1 and 2"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "CPT", "task_type": "CAUSAL_LM", "cpt_token_ids": [1, 2, 3],
                                   "num_virtual_tokens": 5})"),
              HasSubstr("num_virtual_tokens 5 is not the length of cpt_token_ids (3)"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "CPT", "task_type": "CAUSAL_LM", "cpt_token_ids": [1],
                                   "opt_weighted_loss_type": "exp"})"),
              HasSubstr("opt_weighted_loss_type must be 'none' or 'decay', got 'exp'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "CPT", "task_type": "SEQ_CLS", "cpt_token_ids": [1]})"),
              HasSubstr("CPT only supports task_type CAUSAL_LM"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "CPT", "task_type": "CAUSAL_LM", "cpt_token_ids": [1, "a"]})"),
              HasSubstr("'cpt_token_ids' must be a list of integers"));
  EXPECT_THAT(test::add_adapter_error(suite, "llama", R"({"peft_type": "CPT", "task_type": "CAUSAL_LM",
                                                          "cpt_token_ids": [1, 99]})"),
              HasSubstr("cpt_token_ids holds 99, outside the model's 64-token vocabulary"));
  // HF's defaults: the template [0], masks of ones.
  const auto c = CPTConfig::from_json(json::parse(R"({"peft_type": "CPT", "task_type": "CAUSAL_LM"})"), "x");
  EXPECT_EQ(c.cpt_token_ids, std::vector<int64_t>{0});
  EXPECT_EQ(c.num_virtual_tokens, 1);
  EXPECT_EQ(c.cpt_tokens_type_mask, std::vector<int64_t>{1});
}

std::string data_error(const std::string& jsonl) {
  DataOptions o;
  o.vocab_size = 64;
  try {
    parse_examples(jsonl, "d.jsonl", o);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(CptErrors, InputTypeMasksAreChecked) {
  EXPECT_THAT(data_error(R"({"input_ids": [1, 2, 3], "input_type_mask": [1, 4]})"),
              HasSubstr("'input_type_mask' has 2 values for 3 tokens"));
  EXPECT_THAT(data_error(R"({"input_ids": [1, 2, 3], "input_type_mask": [1, -4, 4]})"),
              HasSubstr("'input_type_mask' must be a list of non-negative integers"));
  EXPECT_THAT(data_error("{\"input_ids\": [1, 2, 3], \"input_type_mask\": [1, 2, 4]}\n{\"input_ids\": [1, 2, 3]}\n"),
              HasSubstr("1 of 2 examples have \"input_type_mask\"; give every line one"));
  // Batches carry them, 0 on padding.
  DataOptions o;
  const auto xs = parse_examples("{\"input_ids\": [1, 2, 3], \"input_type_mask\": [1, 2, 4]}\n"
                                 "{\"input_ids\": [5, 6], \"input_type_mask\": [3, 4]}\n",
                                 "d.jsonl", o);
  const auto b = collate({&xs[0], &xs[1]}, 0, true);
  ASSERT_TRUE(b.input_type_mask.defined());
  EXPECT_TRUE(at::equal(b.input_type_mask, at::tensor({1, 2, 4, 3, 4, 0}, at::kLong).view({2, 3})));
}

}  // namespace
}  // namespace peft
