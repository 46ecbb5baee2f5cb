// RoBERTa against transformers and HF PEFT (fixtures from tests/parity/make_encoders.py):
// padding-aware positions, the classification head, and LoRA / (IA)3 adapters made by PEFT.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "test_util.h"

#include "peft/model.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"

namespace fs = std::filesystem;

namespace peft {
namespace {

constexpr double kTol = 1e-4;  // fp32, max abs diff over real positions

fs::path case_dir(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / "encoders" / name; }

// Max abs difference; [b, s, h] outputs only over real positions.
double max_diff(const at::Tensor& got, const at::Tensor& want, const at::Tensor& mask) {
  EXPECT_EQ(got.sizes(), want.sizes());
  auto d = (got - want).abs();
  if (d.dim() == 3) d = d * mask.to(at::kFloat).unsqueeze(-1);
  return d.max().item<double>();
}

// Every output the reference holds under `prefix` ("" or "lora.") matches.
void expect_match(const SafetensorsFile& ref, const ModelOutputs& out, const std::string& prefix) {
  const at::Tensor mask = ref.get("attention_mask");
  int checked = 0;
  for (const auto& [key, got] : {std::pair{"logits", out.logits}, std::pair{"last_hidden_state", out.last_hidden_state},
                                 std::pair{"pooler_output", out.pooler_output}}) {
    if (!ref.contains(prefix + key)) continue;
    ASSERT_TRUE(got.defined()) << key;
    EXPECT_LE(max_diff(got, ref.get(prefix + key), mask), kTol) << prefix << key;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

ModelOutputs run(PeftModel& peft, const SafetensorsFile& ref) {
  c10::NoGradGuard no_grad;
  ModelInputs in;
  in.input_ids = ref.get("input_ids");
  in.attention_mask = ref.get("attention_mask");
  return peft.forward(in);
}

// RoBERTa, XLM-RoBERTa, DistilBERT and DeBERTa-v2/v3 encoders and classifiers.
class Encoder : public ::testing::TestWithParam<std::string> {};

TEST_P(Encoder, MatchesTransformers) {
  const SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  auto model = load_model(case_dir(GetParam()).string());
  EXPECT_EQ(model->num_parameters(), ref.get("num_parameters").item<int64_t>());
  const auto cfg = nlohmann::json::parse(std::ifstream(case_dir(GetParam()) / "config.json"));
  EXPECT_EQ(model->type_name(), cfg["architectures"][0].get<std::string>());
  PeftModel peft(model);
  expect_match(ref, run(peft, ref), "");
}

TEST_P(Encoder, PeftAdaptersMatchHfPeft) {
  const SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  for (const std::string name : {"lora", "ia3"}) {
    SCOPED_TRACE(name);
    PeftModel peft(load_model(case_dir(GetParam()).string()));
    peft.load_adapter((case_dir(GetParam()) / "adapters" / name).string(), name);
    peft.set_adapter({name});
    expect_match(ref, run(peft, ref), name + ".");
    peft.merge();  // both methods merge; the outputs stay
    expect_match(ref, run(peft, ref), name + ".");
  }
}

INSTANTIATE_TEST_SUITE_P(Encoders, Encoder,
                         ::testing::Values("roberta", "roberta_cls", "xlmr", "xlmr_cls", "distilbert", "distilbert_cls",
                                           "deberta_v3", "deberta_v3_cls", "deberta_v2", "deberta_tok"));

// Positions count real tokens from pad_token_id + 1: the same sentence right-padded or not
// gives the same outputs on its tokens (absolute positions 0.. would too; left padding
// would not), and a sequence may use max_position_embeddings - pad - 1 tokens.
TEST(RobertaPositions, PaddingDoesNotShiftPositionsAndLimitIsPadAware) {
  auto model = load_model(case_dir("roberta").string());
  c10::NoGradGuard no_grad;
  ModelInputs left;
  left.input_ids = at::tensor({1, 1, 0, 7, 9, 4}, at::kLong).view({1, 6});  // pad pad <s> ...
  left.attention_mask = at::tensor({0, 0, 1, 1, 1, 1}, at::kLong).view({1, 6});
  ModelInputs alone;
  alone.input_ids = at::tensor({0, 7, 9, 4}, at::kLong).view({1, 4});
  auto a = model->forward(left).last_hidden_state.slice(1, 2);
  auto b = model->forward(alone).last_hidden_state;
  EXPECT_LE((a - b).abs().max().item<double>(), kTol);
  EXPECT_EQ(model->max_positions(), 40 - 2);  // max_position_embeddings 40, pad 1
  ModelInputs too_long;
  too_long.input_ids = at::full({1, 39}, 5, at::kLong);
  EXPECT_THROW(model->forward(too_long), std::invalid_argument);
}

// A RoBERTa config whose pad_token_id leaves no positions (or no token) is refused by key.
TEST(RobertaPositions, HostilePadTokenIdIsRefusedByKey) {
  for (const int64_t pad : {-1, 39, 1000}) {
    nlohmann::json j = {{"architectures", {"RobertaModel"}}, {"model_type", "roberta"}, {"vocab_size", 97},
                        {"hidden_size", 40}, {"num_hidden_layers", 1}, {"num_attention_heads", 5},
                        {"intermediate_size", 56}, {"max_position_embeddings", 40}, {"pad_token_id", pad}};
    try {
      build_model(j, "config.json");
      ADD_FAILURE() << "pad_token_id " << pad << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("config.json: pad_token_id must index the vocabulary"), std::string::npos)
          << e.what();
    }
  }
}

// The last eval line of a run's metrics.jsonl.
nlohmann::json last_eval(const fs::path& run) {
  std::ifstream f(run / "metrics.jsonl");
  nlohmann::json last;
  for (std::string line; std::getline(f, line);)
    if (auto j = nlohmann::json::parse(line); j.contains("eval_loss")) last = j;
  return last;
}

// `peft train` with LoRA (SEQ_CLS: the head as modules_to_save) on a 3-class text task
// lowers the eval loss well below the base model's and beats chance; HF PEFT loads the
// adapter and computes our logits.
TEST(RobertaTrain, LoraLearnsTextClassesAndLoadsInHfPeft) {
  const fs::path dir = case_dir("roberta_cls"), data = case_dir("");
  const fs::path out = fs::path(PEFT_SCRATCH_DIR) / "roberta_train";
  fs::remove_all(out);
  auto base = test::run_cli({"eval", dir.string(), "--data", (data / "cls_eval.jsonl").string()});
  ASSERT_EQ(base.exit_code, 0) << base.output;
  const double base_loss = nlohmann::json::parse(base.output.substr(base.output.rfind('{')))["eval_loss"];
  auto r = test::run_cli({"train", "model=" + dir.string(), "train_file=" + (data / "cls_train.jsonl").string(),
                          "eval_file=" + (data / "cls_eval.jsonl").string(), "output_dir=" + out.string(),
                          "max_steps=60", "learning_rate=1e-2", "eval_steps=20", "per_device_train_batch_size=8",
                          "progress=false", R"(method={"task_type": "SEQ_CLS", "r": 8})"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto eval = last_eval(out);
  EXPECT_LT(eval["eval_loss"].get<double>(), 0.7 * base_loss) << eval.dump();
  EXPECT_GE(eval["eval_accuracy"].get<double>(), 0.6) << eval.dump();  // chance: 1/3

  const SafetensorsFile ref((dir / "reference.safetensors").string());
  test::expect_classifier_adapter_matches_hf(dir, out, ref.get("input_ids"), ref.get("attention_mask"));
}

}  // namespace
}  // namespace peft
