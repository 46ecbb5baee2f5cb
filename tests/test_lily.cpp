// LILY (HF PEFT 0.21's LILY) against adapters HF PEFT made (tests/parity/make_lily.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line (shared A and B
//    counted once), for list targets with stride_A = 2 and for a regex whose q and o
//    projections form one group;
//  - layers share A and B exactly as HF's _post_injection_hook shares them (one tensor);
//  - a new adapter starts at the base; merging is refused by name; resaved, and trained
//    with `peft train` (which lowers the eval loss and keeps shared tensors shared), adapters
//    load in HF PEFT with our logits (one Python process); bad settings and Conv1D are named.
#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "peft/lily.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "loss_file.h"
#include "method_suite.h"
#include "suite_checks.h"
#include "test_util.h"

using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"lily_llama", "lily_llama_regex"};

const test::MethodSuite suite("lily");

const LilyLayer& lily_at(PeftModel& m, const std::string& path) {
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
  const auto* a = host ? dynamic_cast<const LilyLayer*>(host->adapter("default")) : nullptr;
  if (!a) throw std::runtime_error("no LILY layer at " + path);
  return *a;
}

class HfLily : public ::testing::TestWithParam<std::string> {};

TEST_P(HfLily, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfLily, SharesAAndBAsHf) {
  const auto name = GetParam();
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  const auto shares = suite.case_json(name)["shares"];
  ASSERT_GE(shares.size(), 4u);
  // Two layers hold one A (one B) exactly where HF's layers hold one module.
  int shared_a = 0, shared_b = 0;
  for (const auto& s : shares)
    for (const auto& t : shares) {
      if (s[0] == t[0]) continue;
      const bool same_a = lily_at(m, s[0]).A().is_same(lily_at(m, t[0]).A());
      const bool same_b = lily_at(m, s[0]).B().is_same(lily_at(m, t[0]).B());
      EXPECT_EQ(same_a, s[1] == t[1]) << s.dump() << " " << t.dump();
      EXPECT_EQ(same_b, s[2] == t[2]) << s.dump() << " " << t.dump();
      shared_a += same_a;
      shared_b += same_b;
    }
  EXPECT_GT(shared_b, 0);
  if (name == "lily_llama") EXPECT_GT(shared_a, 0);  // stride_A = 2
}

INSTANTIATE_TEST_SUITE_P(Lily, HfLily, ::testing::ValuesIn(kCases));

// HF's init: B = 0, so a new adapter computes the base's logits; merging is refused.
TEST(Lily, NewAdapterStartsAtTheBaseAndDoesNotMerge) {
  SafetensorsFile ref((suite.fixture("lily_llama") / "reference.safetensors").string());
  PeftModel m(load_model(suite.fixture("llama").string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  m.add_adapter("default", *parse_user_adapter_config(json::parse(R"({"peft_type": "LILY", "r": 4})"), "m"), 3);
  EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-6);
  try {
    m.merge();
    FAIL() << "LILY does not merge";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("(LILY) cannot be merged"));
  }
}

// Resaved HF adapters (the same file keys as HF's) and one trained here with `peft train`
// load in HF PEFT with our logits, in one Python process; the training lowered the loss.
TEST(LilyTrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  std::vector<std::string> args;
  for (const auto& name : kCases) test::resave_for_hf_check(suite, name, &args);
  const auto work = suite.scratch("train");
  const json method = {{"peft_type", "LILY"}, {"r", 8}, {"stride_A", 2}, {"num_B", 2}, {"target_modules", "all-linear"}};
  const auto out = suite.train_with_cli(work, method, 60, 2e-2, {{"eval_split", 0.25}, {"eval_steps", 60}});
  const double start = test::first_step_loss(out), end = test::last_eval_loss(out);
  std::cout << "lily train: first step loss " << start << ", final eval loss " << end << "\n";
  EXPECT_LT(end, start - 0.1);
  // Shared tensors stayed one: every layer's key holds the same trained values.
  SafetensorsFile file((out / "adapter_model.safetensors").string());
  const std::string p = "base_model.model.model.layers.";
  EXPECT_TRUE(at::equal(file.get(p + "0.self_attn.q_proj.lily_B.weight"), file.get(p + "1.self_attn.q_proj.lily_B.weight")));
  EXPECT_TRUE(at::equal(file.get(p + "0.mlp.up_proj.lily_A.weight"), file.get(p + "1.mlp.up_proj.lily_A.weight")));
  EXPECT_GT(file.get(p + "0.self_attn.q_proj.lily_B.weight").abs().max().item<double>(), 1e-4);
  const auto triple = suite.check_case(suite.fixture("llama"), out, "lily_llama", work);
  args.insert(args.end(), triple.begin(), triple.end());
  suite.expect_hf_checks("make_lily.py", args);
}

using test::add_adapter_error;
using test::user_config_error;

TEST(LilyErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "LILY", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "LILY", "num_B": 1})"), HasSubstr("'num_B'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "LILY", "stride_A": 0})"), HasSubstr("'stride_A'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "LILY", "scaling": "x"})"), HasSubstr("'scaling'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "LILY", "layers_pattern": "layers"})"), HasSubstr("layers_pattern"));
  EXPECT_THAT(add_adapter_error(suite, "gpt2", R"({"peft_type": "LILY", "target_modules": ["c_attn"]})"),
              HasSubstr("LILY: target module 'transformer.h.0.attn.c_attn' is a Conv1D"));
}

}  // namespace
}  // namespace peft
