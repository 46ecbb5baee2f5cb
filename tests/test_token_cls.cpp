// Token classification (issue 16) against transformers, `tokenizers` and HF PEFT (fixtures
// from tests/parity/make_token_cls.py): Bert/RobertaForTokenClassification logits and loss,
// the word-to-sub-token label alignment, TOKEN_CLS adapters both ways, the entity metrics
// against an independent implementation, and `peft train` on a KJV name-tagging task.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "test_util.h"

#include "peft/model.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "train/data.h"
#include "train/evaluate.h"
#include "train/token_metrics.h"

namespace fs = std::filesystem;

namespace peft {
namespace {

constexpr double kTol = 1e-4;      // fp32 logits, max abs diff over real positions
constexpr double kLossTol = 1e-5;  // the loss of one batch

fs::path fixture(const std::string& name = "") { return fs::path(PEFT_PARITY_DIR) / "token_cls" / name; }

nlohmann::json parse_last_json(const std::string& out) { return nlohmann::json::parse(out.substr(out.rfind('{'))); }

// token_ref.jsonl through our data path, as `peft train` reads it for this model.
std::vector<Example> ref_examples(const Model& model, const Tokenizer& tok, bool label_all_tokens) {
  DataOptions o;
  o.classification = o.token_classification = true;
  o.label_all_tokens = label_all_tokens;
  o.tokenizer = &tok;
  o.label2id = model.config().at("label2id");
  o.num_labels = 5;
  return load_examples(fixture("token_ref.jsonl").string(), o);
}

class TokenCls : public ::testing::TestWithParam<std::string> {};

// Ids and labels of our alignment equal transformers' (word_ids() of the same
// tokenizer.json); logits and the loss of the padded batch equal the model's own.
TEST_P(TokenCls, AlignmentLogitsAndLossMatchTransformers) {
  const fs::path dir = fixture(GetParam());
  const SafetensorsFile ref((dir / "reference.safetensors").string());
  auto model = load_model(dir.string());
  EXPECT_EQ(model->task(), TaskKind::kTokenClassification);
  EXPECT_EQ(model->num_parameters(), ref.get("num_parameters").item<int64_t>());
  const Tokenizer tok = Tokenizer::from_file(dir.string());
  const int64_t pad = ref.get("input_ids")[3][-1].item<int64_t>();  // the shortest row ends in padding
  for (const bool all : {false, true}) {
    SCOPED_TRACE(all ? "label_all_tokens" : "first sub-token");
    const auto data = ref_examples(*model, tok, all);
    std::vector<const Example*> xs;
    for (const auto& e : data) xs.push_back(&e);
    const Batch b = collate(xs, pad, /*causal=*/false);
    ASSERT_TRUE(b.input_ids.equal(ref.get("input_ids"))) << b.input_ids << ref.get("input_ids");
    EXPECT_TRUE(b.attention_mask.equal(ref.get("attention_mask")));
    const at::Tensor want_labels = ref.get(all ? "labels_all" : "labels");
    ASSERT_TRUE(b.labels.equal(want_labels)) << b.labels << want_labels;
    EXPECT_EQ(b.num_items, want_labels.ne(-100).sum().item<int64_t>());
    if (all) continue;
    PeftModel peft(model);
    c10::NoGradGuard no_grad;
    const BatchLoss r = batch_loss(peft, b, at::kCPU, /*causal=*/false);
    EXPECT_LE(test::max_diff(r.logits, ref.get("logits"), b.attention_mask), kTol);
    const double loss = r.sum.item<double>() / static_cast<double>(b.num_items);
    EXPECT_NEAR(loss, ref.get("loss").item<double>(), kLossTol);
  }
}

// TOKEN_CLS LoRA and (IA)3 made by HF PEFT (the classifier as modules_to_save) give
// PEFT's logits, before and after merging.
TEST_P(TokenCls, HfPeftAdaptersMatch) {
  const fs::path dir = fixture(GetParam());
  const SafetensorsFile ref((dir / "reference.safetensors").string());
  const auto in = test::inputs_of(ref);
  for (const std::string name : {"lora", "ia3"}) {
    SCOPED_TRACE(name);
    PeftModel peft(load_model(dir.string()));
    peft.load_adapter((dir / "adapters" / name).string(), name);
    peft.set_adapter({name});
    c10::NoGradGuard no_grad;
    EXPECT_LE(test::max_diff(peft.forward(in).logits, ref.get(name + ".logits"), in.attention_mask), kTol);
    peft.merge();
    EXPECT_LE(test::max_diff(peft.forward(in).logits, ref.get(name + ".logits"), in.attention_mask), kTol);
  }
}

INSTANTIATE_TEST_SUITE_P(Encoders, TokenCls, ::testing::Values("bert", "roberta"));

std::vector<std::string> split_tags(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string t; in >> t;) out.push_back(t);
  return out;
}

// seqeval's README example (f1 0.50), and conlleval's reading of ill-formed tags: an I-
// that continues nothing opens an entity, a type change closes one.
TEST(TokenMetrics, EntitySpansAndF1AsSeqeval) {
  using S = EntitySpan;
  EXPECT_EQ(entity_spans(split_tags("O I-PER I-PER B-PER I-LOC O B-LOC")),
            (std::vector<S>{{"PER", 1, 2}, {"PER", 3, 3}, {"LOC", 4, 4}, {"LOC", 6, 6}}));
  const std::vector<std::string> labels = {"O", "B-MISC", "I-MISC", "B-PER", "I-PER"};
  auto ids = [&](const std::string& s) {
    std::vector<int64_t> out;
    for (const auto& t : split_tags(s)) out.push_back(std::find(labels.begin(), labels.end(), t) - labels.begin());
    return out;
  };
  TokenClassificationMetrics m(labels);
  m.add(ids("O O O B-MISC I-MISC I-MISC O"), ids("O O B-MISC I-MISC I-MISC I-MISC O"));
  m.add(ids("B-PER I-PER O"), ids("B-PER I-PER O"));
  const auto j = m.to_json();
  EXPECT_DOUBLE_EQ(j["eval_f1"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["eval_precision"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["eval_accuracy"].get<double>(), 8.0 / 10.0);
  // Tokens not O: 4 of the 6 predicted are right, 4 of the 5 gold ones found.
  EXPECT_NEAR(j["eval_token_f1"].get<double>(), 2 * (4.0 / 6) * (4.0 / 5) / (4.0 / 6 + 4.0 / 5), 1e-12);
}

// Bad lines name the file, the line and the word; integer tags are label ids.
TEST(TokenClsData, TagsAreCheckedPerLine) {
  auto model = load_model(fixture("bert").string());
  const Tokenizer tok = Tokenizer::from_file(fixture("bert").string());
  DataOptions o;
  o.classification = o.token_classification = true;
  o.tokenizer = &tok;
  o.label2id = model->config().at("label2id");
  o.num_labels = 5;
  const auto ok = parse_examples(R"({"tokens": ["Moses", "spake"], "ner_tags": [1, 0]})", "d.jsonl", o);
  EXPECT_EQ(ok[0].labels, (std::vector<int64_t>{-100, 1, 0, -100}));
  const std::string good = R"({"tokens": ["Moses"], "tags": ["B-PER"]})";
  for (const auto& [line, says] : std::vector<std::pair<std::string, std::string>>{
           {R"({"tokens": ["Moses", "spake"], "tags": ["B-PER", "B-XYZ"]})",
            "d.jsonl:2: tag 'B-XYZ' of word 1 is not a label in config.json's label2id (O, B-PER, I-PER, B-LOC, I-LOC)"},
           {R"({"tokens": ["Moses"], "tags": [5]})", "d.jsonl:2: tag 5 of word 0 is out of range: the model has 5 labels"},
           {R"({"tokens": ["Moses", "x"], "tags": ["O"]})", "d.jsonl:2: 2 tokens but 1 tags"},
           {R"({"text": "Moses", "label": 1})", "d.jsonl:2: token classification needs {\"tokens\", \"tags\"} lines"}}) {
    try {
      parse_examples(good + "\n" + line + "\n", "d.jsonl", o);
      ADD_FAILURE() << line << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
    }
  }
}

// `peft eval` with HF PEFT's LoRA on the KJV eval verses reports the numbers the
// fixture's own Python implementation computed from transformers' predictions.
TEST(TokenClsEval, MetricsMatchIndependentImplementation) {
  auto r = test::run_cli({"eval", fixture("bert").string(), "--data", fixture("token_eval.jsonl").string(),
                          "--adapter", (fixture("bert") / "adapters" / "lora").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto got = parse_last_json(r.output);
  std::ifstream f(fixture("bert") / "metrics.json");
  const auto want = nlohmann::json::parse(f);
  for (const char* k : {"accuracy", "precision", "recall", "f1", "token_f1"})
    EXPECT_NEAR(got[std::string("eval_") + k].get<double>(), want[k].get<double>(), 1e-12) << k << " " << got.dump();
  EXPECT_NEAR(got["eval_loss"].get<double>(), want["loss"].get<double>(), kLossTol);
  EXPECT_GT(want["f1"].get<double>(), 0.0);  // the random adapter finds some entities: spans are compared
}

// The last eval line of a run's metrics.jsonl.
nlohmann::json last_eval(const fs::path& run) {
  std::ifstream f(run / "metrics.jsonl");
  nlohmann::json last;
  for (std::string line; std::getline(f, line);)
    if (auto j = nlohmann::json::parse(line); j.contains("eval_loss")) last = j;
  return last;
}

// LoRA (TOKEN_CLS: the classifier as modules_to_save) on the tiny random BERT learns to
// tag KJV names on held-out verses far above the majority baseline (every word O: entity
// F1 0, token accuracy 0.952); HF PEFT loads the adapter and computes our logits. LoRA on
// the word embeddings gives each sub-token trainable features (with query/value alone the
// random 32-wide model cannot tell names apart and predicts O everywhere).
TEST(TokenClsTrain, LoraLearnsKjvNamesAndLoadsInHfPeft) {
  const fs::path dir = fixture("bert");
  const fs::path out = fs::path(PEFT_SCRATCH_DIR) / "token_cls_train";
  fs::remove_all(out);
  auto r = test::run_cli({"train", "model=" + dir.string(), "train_file=" + fixture("token_train.jsonl").string(),
                          "eval_file=" + fixture("token_eval.jsonl").string(), "output_dir=" + out.string(),
                          "max_steps=150", "learning_rate=1e-2", "per_device_train_batch_size=16", "max_length=64",
                          "progress=false", R"(method={"r": 8, "lora_alpha": 16, "target_modules": ["query", "value", "word_embeddings"]})"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto eval = last_eval(out);
  std::ifstream f(dir / "metrics.json");
  const auto majority = nlohmann::json::parse(f)["majority"];
  EXPECT_GE(eval["eval_f1"].get<double>(), 0.85) << eval.dump();
  EXPECT_GE(eval["eval_token_f1"].get<double>(), 0.85) << eval.dump();
  EXPECT_GT(eval["eval_accuracy"].get<double>(), majority["accuracy"].get<double>() + 0.02) << eval.dump();
  std::ifstream cfg(out / "adapter_config.json");
  const auto adapter = nlohmann::json::parse(cfg);
  EXPECT_EQ(adapter["task_type"], "TOKEN_CLS");
  EXPECT_NE(adapter["modules_to_save"].dump().find("classifier"), std::string::npos);

  const SafetensorsFile ref((dir / "reference.safetensors").string());
  test::expect_classifier_adapter_matches_hf(dir, out, ref.get("input_ids"), ref.get("attention_mask"));
}

}  // namespace
}  // namespace peft
