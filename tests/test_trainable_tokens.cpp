// Trainable tokens (HF PEFT's TRAINABLE_TOKENS, and LoRA's trainable_token_indices)
// against adapters HF PEFT made (tests/parity/make_trainable_tokens.py) on a tiny Llama
// with tied and untied embeddings:
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line;
//  - merge and unmerge give HF's merged logits and restore the weights exactly;
//  - with tied weights lm_head uses the embedding's rows, and only those rows train;
//  - saved again, and trained here with `peft train`, adapters load in HF PEFT (keys
//    exactly HF's) with our logits, all checked in one Python process;
//  - training lowers the eval loss; bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "method_suite.h"
#include "peft/layers.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "peft/trainable_tokens.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

const test::MethodSuite suite("trainable_tokens");
using test::logits;

const std::vector<std::string> kCases = {"tt_tied", "tt_untied", "lora_tt_tied", "lora_tt_dict", "lora_tt_tied_apart"};

class HfTrainableTokens : public ::testing::TestWithParam<std::string> {};

TEST_P(HfTrainableTokens, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfTrainableTokens, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  if (name != "lora_tt_tied_apart") {
    test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-6);
    return;
  }
  // Tied layers with rows of their own both write into the one shared weight, so merging
  // changes the outputs, in HF as here: the merged logits are HF's merged ones.
  c10::InferenceMode guard;
  auto base = load_model(suite.base_of(name).string());
  const at::Tensor before = base->input_embeddings()->weight.clone();
  PeftModel m(base);
  m.load_adapter((suite.fixture(name) / "adapter").string());
  m.merge();
  EXPECT_LE(test::max_diff(m.forward(test::inputs_of(ref)).logits, ref.get("merged_logits"), test::mask_of(ref)),
            kLogitTol);
  m.unmerge();
  EXPECT_TRUE(at::equal(base->input_embeddings()->weight, before));
}

INSTANTIATE_TEST_SUITE_P(TrainableTokens, HfTrainableTokens, ::testing::ValuesIn(kCases));

TrainableTokensLayer* token_layer(PeftModel& m, const std::string& path) {
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
  return host ? dynamic_cast<TrainableTokensLayer*>(host->adapter("default")) : nullptr;
}

TEST(TrainableTokens, TiedHeadSharesTheEmbeddingRowsAndOnlyTheyTrain) {
  for (const std::string name : {"tt_tied", "lora_tt_tied"}) {
    PeftModel m(load_model(suite.base_of(name).string()));
    m.load_adapter((suite.fixture(name) / "adapter").string());
    auto* embed = token_layer(m, "model.embed_tokens");
    auto* head = token_layer(m, "lm_head");
    ASSERT_NE(embed, nullptr) << name;
    ASSERT_NE(head, nullptr) << name << ": the tied lm_head must follow the embedding's rows";
    EXPECT_EQ(head->rows, embed->rows) << name;
    EXPECT_FALSE(head->owner);
    // The rows differ from the base rows they replace, and nothing but them (and LoRA) trains.
    EXPECT_GT((embed->rows->delta - embed->rows->original).abs().max().item<double>(), 0.1);
    int64_t token_tensors = 0;
    for (const auto& t : m.trainable_tensors()) token_tensors += t.is_same(embed->rows->delta);
    EXPECT_EQ(token_tensors, 1) << name;
    EXPECT_EQ(m.trainable_tensors().size(), name == "tt_tied" ? 1u : 9u) << name;  // + 4 layers' A and B
  }
  PeftModel untied(load_model(suite.base_of("tt_untied").string()));
  untied.load_adapter((suite.fixture("tt_untied") / "adapter").string());
  EXPECT_EQ(token_layer(untied, "lm_head"), nullptr) << "an untied head keeps its own weights";
  // Different indices for the tied layers: each has rows of its own (HF trains them apart).
  PeftModel apart(load_model(suite.base_of("lora_tt_tied_apart").string()));
  apart.load_adapter((suite.fixture("lora_tt_tied_apart") / "adapter").string());
  ASSERT_NE(token_layer(apart, "lm_head"), nullptr);
  EXPECT_TRUE(token_layer(apart, "lm_head")->owner);
  EXPECT_EQ(token_layer(apart, "lm_head")->rows->indices, (std::vector<int64_t>{0, 4, 31}));
}

// HF writes a tied embedding's token rows under both the embedding and lm_head: `peft
// inspect` counts them once (HF's trainable figure) and names the copy.
TEST(TrainableTokens, InspectCountsTiedCopiesOnce) {
  const std::string hf = suite.case_json("tt_tied")["trainable"];  // "trainable params: 128 || ..."
  const std::string trainable = hf.substr(18, hf.find(' ', 18) - 18);
  const auto r = test::run_cli({"inspect", (suite.fixture("tt_tied") / "adapter").string()});
  ASSERT_EQ(r.exit_code, 0) << test::describe(r);
  EXPECT_THAT(r.output, HasSubstr("parameters: " + trainable + " (and " + trainable + " more in tied copies)"));
  const auto untied = test::run_cli({"inspect", (suite.fixture("tt_untied") / "adapter").string()});
  EXPECT_THAT(untied.output, Not(HasSubstr("tied copies")));
}

TEST(TrainableTokens, OursLoadInHf) {
  // HF's adapters saved again here, and adapters `peft train` made, one Python check for all.
  const auto work = suite.scratch("ours");
  std::vector<std::array<fs::path, 3>> checks;
  auto add_check = [&](const fs::path& base, const fs::path& adapter, const std::string& tag) {
    SafetensorsFile ref((suite.fixture("tt_tied") / "reference.safetensors").string());  // the inputs
    PeftModel m(load_model(base.string()));
    m.load_adapter(adapter.string());
    checks.push_back({base, adapter, test::write_outputs(ref, "logits", logits(m, test::inputs_of(ref)),
                                                         work / (tag + "_outputs.safetensors"))});
  };
  for (const auto& name : kCases) {
    PeftModel m(load_model(suite.base_of(name).string()));
    m.load_adapter((suite.fixture(name) / "adapter").string());
    m.save_adapter((work / name).string());
    add_check(suite.base_of(name), work / name, name);
  }
  fs::create_directories(work / "train_tt");
  fs::create_directories(work / "train_lora");
  const std::vector<int64_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 20, 21, 22, 23};
  const json tt = {{"peft_type", "TRAINABLE_TOKENS"}, {"token_indices", ids}};
  const auto tt_out = suite.train_with_cli(work / "train_tt", tt, 4, 5e-2, {{"model", suite.fixture("llama_tied").string()}});
  const json lora = {{"peft_type", "LORA"}, {"r", 4}, {"target_modules", {"q_proj", "v_proj"}},
                     {"trainable_token_indices", {{"embed_tokens", ids}, {"lm_head", {3, 9}}}}};
  const auto lora_out = suite.train_with_cli(work / "train_lora", lora, 4, 5e-2);
  // Training moved the chosen rows off the base rows (the adapter started as a no-op).
  {
    PeftModel m(load_model(suite.fixture("llama_tied").string()));
    m.load_adapter(tt_out.string());
    auto* rows = token_layer(m, "model.embed_tokens")->rows.get();
    EXPECT_GT((rows->delta - rows->original).abs().max().item<double>(), 1e-3);
  }
  add_check(suite.fixture("llama_tied"), tt_out, "trained_tt");
  add_check(suite.fixture("llama"), lora_out, "trained_lora");
  std::vector<std::string> argv = {std::string(PEFT_SOURCE_DIR) + "/tests/parity/make_trainable_tokens.py", "check"};
  for (const auto& c : checks)
    for (const auto& p : c) argv.push_back(p.string());
  int status = 0;
  const auto log = test::run_python(argv, &status);
  EXPECT_EQ(status, 0) << log;
  std::cout << log;
}

TEST(TrainableTokens, TrainingLowersEvalLoss) {
  const auto work = suite.scratch("learns");
  TrainConfig c;
  c.model = suite.fixture("llama_tied").string();
  c.train_file = test::write_small_counting_data(work).string();
  c.eval_split = 0.25;
  c.output_dir = (work / "out").string();
  json indices = json::array();
  for (int i = 0; i < 48; ++i) indices.push_back(i);
  c.method = {{"peft_type", "TRAINABLE_TOKENS"}, {"token_indices", indices}};
  c.max_steps = 60;
  c.learning_rate = 5e-2;
  c.progress = false;
  auto before_cfg = c;
  before_cfg.eval_file = c.train_file;
  const double before = evaluate(before_cfg, {})["eval_loss"];
  const double after = train(c).evals.back()["eval_loss"];
  std::cout << "eval loss " << before << " -> " << after << "\n";
  EXPECT_LT(after, 0.8 * before) << "eval loss " << before << " -> " << after;
}

std::string add_error(const std::string& model, const std::string& method) {
  try {
    PeftModel m(load_model(suite.fixture(model).string()));
    m.add_adapter("default", *parse_user_adapter_config(json::parse(method), "method"));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(TrainableTokens, BadSettingsAreNamed) {
  EXPECT_THAT(add_error("llama", R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": []})"),
              HasSubstr("'token_indices' is empty"));
  EXPECT_THAT(add_error("llama", R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [1, -2]})"),
              HasSubstr("got -2"));
  EXPECT_THAT(add_error("llama", R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [3, 64]})"),
              HasSubstr("token index 64 is outside the 64 rows of 'model.embed_tokens'"));
  EXPECT_THAT(add_error("llama", R"({"peft_type": "TRAINABLE_TOKENS", "token_indices": [3], "target_modules": ["input_layernorm"]})"),
              HasSubstr("only an Embedding or a bias-free Linear head"));
  EXPECT_THAT(add_error("llama", R"({"peft_type": "LORA", "trainable_token_indices": "all"})"),
              HasSubstr("'trainable_token_indices' must be a list of token ids"));
  EXPECT_THAT(add_error("llama", R"({"peft_type": "LORA", "trainable_token_indices": {"wte": [1]}})"),
              HasSubstr("'wte' matches no module of LlamaForCausalLM"));
  EXPECT_THAT(add_error("llama", R"({"peft_type": "LORA", "trainable_token_indices": {"embed_tokens": [1]},
                                     "modules_to_save": ["embed_tokens"]})"),
              HasSubstr("'embed_tokens' is in modules_to_save too"));
  EXPECT_THAT(add_error("llama", R"({"peft_type": "LORA", "target_modules": ["embed_tokens"],
                                     "trainable_token_indices": [1]})"),
              HasSubstr("'model.embed_tokens' is both a LoRA target and in trainable_token_indices"));
  EXPECT_THAT(add_error("llama_tied", R"({"peft_type": "LORA", "ensure_weight_tying": true,
                                          "trainable_token_indices": {"embed_tokens": [1], "lm_head": [2]}})"),
              HasSubstr("with ensure_weight_tying they must be equal"));
}

}  // namespace
}  // namespace peft
