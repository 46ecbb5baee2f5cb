// Decoder sequence classifiers (Llama, Qwen2, Mistral, Qwen3, OPT, GPT-NeoX, BLOOM, Falcon,
// Phi, Gemma, Gemma 2, OLMo 2, StarCoder2, GPT-J, GPTBigCode, StableLM
// *ForSequenceClassification)
// against transformers and HF PEFT (fixtures from tests/parity/make_decoder_cls.py):
// pooling at the last non-pad token with right and left padding, SEQ_CLS adapters made by
// PEFT (score as modules_to_save), and `peft train` on a text+label task.
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
#include "train/evaluate.h"

namespace fs = std::filesystem;

namespace peft {
namespace {

constexpr double kTol = 1e-4;  // fp32 logits, max abs diff

fs::path fixtures() { return fs::path(PEFT_PARITY_DIR) / "decoder_cls"; }

at::Tensor logits(PeftModel& peft, const SafetensorsFile& ref, const std::string& prefix = "") {
  c10::NoGradGuard no_grad;
  ModelInputs in;
  in.input_ids = ref.get(prefix + "input_ids");
  in.attention_mask = ref.get(prefix + "attention_mask");
  return peft.forward(in).logits;
}

double max_diff(const at::Tensor& got, const at::Tensor& want) {
  EXPECT_EQ(got.sizes(), want.sizes());
  return (got - want).abs().max().item<double>();
}

class DecoderCls : public ::testing::TestWithParam<std::pair<std::string, std::string>> {
 protected:
  fs::path dir() const { return fixtures() / GetParam().first; }
};

// Right-padded and left-padded batches give transformers' pooled logits; the rows differ in
// length, so pooling at a fixed position would not match.
TEST_P(DecoderCls, MatchesTransformersWithRightAndLeftPadding) {
  const SafetensorsFile ref((dir() / "reference.safetensors").string());
  auto model = load_model(dir().string());
  EXPECT_EQ(model->type_name(), GetParam().second);
  EXPECT_EQ(model->task(), TaskKind::kSequenceClassification);
  EXPECT_EQ(model->num_parameters(), ref.get("num_parameters").item<int64_t>());
  PeftModel peft(model);
  const auto right = logits(peft, ref);
  EXPECT_EQ(right.sizes(), (std::vector<int64_t>{3, 3}));
  EXPECT_LE(max_diff(right, ref.get("logits")), kTol);
  EXPECT_LE(max_diff(logits(peft, ref, "left."), ref.get("left.logits")), kTol);
}

TEST_P(DecoderCls, SeqClsAdaptersMadeByHfPeftMatch) {
  const SafetensorsFile ref((dir() / "reference.safetensors").string());
  for (const std::string name : {"lora", "ia3"}) {
    SCOPED_TRACE(name);
    PeftModel peft(load_model(dir().string()));
    peft.load_adapter((dir() / "adapters" / name).string(), name);
    peft.set_adapter({name});
    const auto want = ref.get(name + ".logits");
    EXPECT_GT(max_diff(want, ref.get("logits")), 1e-2);  // the adapter and its score copy matter
    EXPECT_LE(max_diff(logits(peft, ref), want), kTol);
    peft.merge();
    EXPECT_LE(max_diff(logits(peft, ref), want), kTol);
  }
}

INSTANTIATE_TEST_SUITE_P(Families, DecoderCls,
                         ::testing::Values(std::pair{"llama_cls", "LlamaForSequenceClassification"},
                                           std::pair{"qwen2_cls", "Qwen2ForSequenceClassification"},
                                           std::pair{"opt_cls", "OPTForSequenceClassification"},
                                           std::pair{"gpt_neox_cls", "GPTNeoXForSequenceClassification"},
                                           std::pair{"bloom_cls", "BloomForSequenceClassification"},
                                           std::pair{"falcon_cls", "FalconForSequenceClassification"},
                                           std::pair{"phi_cls", "PhiForSequenceClassification"},
                                           std::pair{"gemma_cls", "GemmaForSequenceClassification"},
                                           std::pair{"gemma2_cls", "Gemma2ForSequenceClassification"},
                                           std::pair{"olmo2_cls", "Olmo2ForSequenceClassification"},
                                           std::pair{"starcoder2_cls", "Starcoder2ForSequenceClassification"},
                                           std::pair{"gptj_cls", "GPTJForSequenceClassification"},
                                           std::pair{"gpt_bigcode_cls", "GPTBigCodeForSequenceClassification"},
                                           std::pair{"stablelm_cls", "StableLmForSequenceClassification"},
                                           std::pair{"gpt_neo_cls", "GPTNeoForSequenceClassification"},
                                           std::pair{"mistral_cls", "MistralForSequenceClassification"},
                                           std::pair{"qwen3_cls", "Qwen3ForSequenceClassification"},
                                           std::pair{"smollm3_cls", "SmolLM3ForSequenceClassification"}),
                         [](const auto& info) { return info.param.first; });

// Without pad_token_id transformers pools the last position and refuses batches of several
// rows; so do we, with an error naming the key.
TEST(DecoderClsNoPad, SingleRowPoolsLastPositionAndBatchesAreRefused) {
  const fs::path src = fixtures() / "llama_cls", dst = fs::path(PEFT_SCRATCH_DIR) / "decoder_cls_nopad";
  fs::remove_all(dst);
  fs::create_directories(dst);
  fs::copy_file(src / "model.safetensors", dst / "model.safetensors");
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(src / "config.json"));
  cfg["pad_token_id"] = nullptr;
  std::ofstream(dst / "config.json") << cfg.dump(2);
  const SafetensorsFile ref((src / "reference.safetensors").string());
  auto model = load_model(dst.string());
  c10::NoGradGuard no_grad;
  ModelInputs batch;
  batch.input_ids = ref.get("input_ids");
  try {
    model->forward(batch);
    ADD_FAILURE() << "a batch without pad_token_id was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("pad_token_id"), std::string::npos) << e.what();
  }
  ModelInputs row;  // row 0 is the longest (9 tokens): no padding, so its last token is pooled
  row.input_ids = ref.get("input_ids").slice(0, 0, 1);
  EXPECT_LE(max_diff(model->forward(row).logits, ref.get("logits").slice(0, 0, 1)), kTol);
}

// `peft forward` pads ragged rows with config.json's pad_token_id (5 on qwen2_cls), the
// token the classifier pools past; padding with 0 would pool a pad position.
TEST(DecoderClsCli, ForwardPadsRaggedRowsWithPadTokenId) {
  const fs::path dir = fixtures() / "qwen2_cls", scratch = fs::path(PEFT_SCRATCH_DIR) / "decoder_cls_forward";
  fs::remove_all(scratch);
  fs::create_directories(scratch);
  const SafetensorsFile ref((dir / "reference.safetensors").string());
  const auto ids = ref.get("input_ids"), mask = ref.get("attention_mask");
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t b = 0; b < ids.size(0); ++b) {
    const auto n = mask[b].sum().item<int64_t>();
    rows.push_back(std::vector<int64_t>(ids[b].data_ptr<int64_t>(), ids[b].data_ptr<int64_t>() + n));
  }
  std::ofstream(scratch / "ids.json") << rows.dump();
  auto r = test::run_cli({"forward", dir.string(), "--ids", (scratch / "ids.json").string(), "--out",
                          (scratch / "out.safetensors").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const SafetensorsFile got((scratch / "out.safetensors").string());
  EXPECT_LE(max_diff(got.get("logits"), ref.get("logits")), kTol);
}

double eval_loss_of(const test::CliResult& r) {
  return nlohmann::json::parse(r.output.substr(r.output.rfind('{')))["eval_loss"].get<double>();
}

nlohmann::json last_eval(const fs::path& run) {
  std::ifstream f(run / "metrics.jsonl");
  nlohmann::json last;
  for (std::string line; std::getline(f, line);)
    if (auto j = nlohmann::json::parse(line); j.contains("eval_loss")) last = j;
  return last;
}

// `peft eval` computes transformers' single-label cross-entropy of the base model; LoRA
// SEQ_CLS training through `peft train` lowers it and beats chance; HF PEFT loads the
// adapter and computes our logits on a right-padded batch.
TEST(DecoderClsTrain, LoraLearnsTextClassesAndLoadsInHfPeft) {
  const fs::path dir = fixtures() / "llama_text";
  const fs::path out = fs::path(PEFT_SCRATCH_DIR) / "decoder_cls_train";
  fs::remove_all(out);
  auto base = test::run_cli({"eval", dir.string(), "--data", (fixtures() / "cls_eval.jsonl").string()});
  ASSERT_EQ(base.exit_code, 0) << base.output;
  const double base_loss = eval_loss_of(base);
  const SafetensorsFile hf_loss((dir / "eval_loss.safetensors").string());
  EXPECT_NEAR(base_loss, hf_loss.get("eval_loss").item<double>(), kTol);
  auto r = test::run_cli({"train", "model=" + dir.string(), "train_file=" + (fixtures() / "cls_train.jsonl").string(),
                          "eval_file=" + (fixtures() / "cls_eval.jsonl").string(), "output_dir=" + out.string(),
                          "max_steps=60", "learning_rate=2e-2", "eval_steps=20", "per_device_train_batch_size=8",
                          "progress=false", R"(method={"task_type": "SEQ_CLS", "r": 8})"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto eval = last_eval(out);
  EXPECT_LT(eval["eval_loss"].get<double>(), 0.7 * base_loss) << eval.dump();
  EXPECT_GE(eval["eval_accuracy"].get<double>(), 0.6) << eval.dump();  // chance: 1/3
  const auto saved = nlohmann::json::parse(std::ifstream(out / "adapter_config.json"));
  EXPECT_NE(saved["modules_to_save"].dump().find("\"score\""), std::string::npos) << saved.dump();

  // Rows of 7, 3 and 5 tokens, right-padded with pad_token_id 1.
  const std::vector<int64_t> lengths = {7, 3, 5};
  auto ids = at::full({3, 7}, 1, at::kLong), mask = at::zeros({3, 7}, at::kLong);
  for (int64_t b = 0; b < 3; ++b) {
    ids[b].slice(0, 0, lengths[b]).copy_(at::arange(10 + 20 * b, 10 + 20 * b + lengths[b], at::kLong));
    mask[b].slice(0, 0, lengths[b]).fill_(1);
  }
  test::expect_classifier_adapter_matches_hf(dir, out, ids, mask);
}

// transformers' problem_type: regression (MSE) and multi-label (binary cross-entropy with
// logits), inferred from num_labels / float labels or given in config.json, on decoder and
// encoder classifiers: the training loss of a padded batch equals transformers' loss.
class ProblemType : public ::testing::TestWithParam<std::string> {};

TEST_P(ProblemType, LossMatchesTransformers) {
  const fs::path dir = fixtures() / GetParam();
  const SafetensorsFile ref((dir / "loss.safetensors").string());
  PeftModel peft(load_model(dir.string()));
  Batch b;
  b.input_ids = ref.get("input_ids");
  b.attention_mask = ref.get("attention_mask");
  b.targets = ref.get("labels");
  b.num_items = b.input_ids.size(0);
  c10::NoGradGuard no_grad;
  const auto r = batch_loss(peft, b, at::kCPU, /*causal=*/false);
  EXPECT_NEAR(r.sum.item<double>() / static_cast<double>(b.num_items), ref.get("loss").item<double>(), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Heads, ProblemType,
                         ::testing::Values("llama_reg", "llama_multi", "bert_reg", "roberta_multi"));

// Float labels in {"text", "label"} lines: `peft eval` reports transformers' MSE of the base
// model as eval_mse, and LoRA SEQ_CLS training on the 1-label head lowers it.
TEST(DecoderClsTrain, RegressionLowersEvalMse) {
  const fs::path dir = fixtures() / "llama_text_reg";
  const fs::path out = fs::path(PEFT_SCRATCH_DIR) / "decoder_reg_train";
  fs::remove_all(out);
  auto base = test::run_cli({"eval", dir.string(), "--data", (fixtures() / "reg_eval.jsonl").string()});
  ASSERT_EQ(base.exit_code, 0) << base.output;
  const auto base_eval = nlohmann::json::parse(base.output.substr(base.output.rfind('{')));
  const double base_mse = base_eval["eval_mse"].get<double>();
  EXPECT_NEAR(base_mse, SafetensorsFile((dir / "eval_loss.safetensors").string()).get("eval_loss").item<double>(),
              kTol);
  auto r = test::run_cli({"train", "model=" + dir.string(), "train_file=" + (fixtures() / "reg_train.jsonl").string(),
                          "eval_file=" + (fixtures() / "reg_eval.jsonl").string(), "output_dir=" + out.string(),
                          "max_steps=40", "learning_rate=2e-2", "eval_steps=20", "per_device_train_batch_size=8",
                          "progress=false", R"(method={"task_type": "SEQ_CLS", "r": 8})"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto eval = last_eval(out);
  ASSERT_TRUE(eval.contains("eval_mse")) << eval.dump();
  EXPECT_LT(eval["eval_mse"].get<double>(), 0.3 * base_mse) << eval.dump();
  std::cerr << "regression: eval_mse " << base_mse << " -> " << eval["eval_mse"].get<double>() << "\n";
}

// A regression line whose label is not a number (or a list of the wrong length) is an
// error naming the file and line.
TEST(DecoderClsTrain, BadRegressionLabelIsNamedWithItsLine) {
  const fs::path dir = fs::path(PEFT_SCRATCH_DIR) / "decoder_reg_bad";
  fs::create_directories(dir);
  for (const std::string label : {"\"high\"", "[0.5, 1.0]"}) {
    SCOPED_TRACE(label);
    std::ofstream(dir / "bad.jsonl") << "{\"text\": \"warm and bright\", \"label\": 0.5}\n"
                                     << "{\"text\": \"wet\", \"label\": " << label << "}\n";
    auto r = test::run_cli({"eval", (fixtures() / "llama_text_reg").string(), "--data", (dir / "bad.jsonl").string()});
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("bad.jsonl:2"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("regression"), std::string::npos) << r.output;
  }
}

}  // namespace
}  // namespace peft
