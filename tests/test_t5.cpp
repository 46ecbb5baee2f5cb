// T5ForConditionalGeneration (v1.0: relu, tied, rescaled decoder output; v1.1: gated-gelu,
// untied, odd sizes, more decoder than encoder layers) against transformers and HF PEFT
// (fixtures from tests/parity/make_t5.py): logits and loss on padded batches, 32 greedy
// tokens with the encoder-decoder cache, the parameter count, LoRA and (IA)3 adapters HF
// PEFT made (unmerged and merged), HF PEFT's prompt tuning, P-tuning and prefix tuning
// (num_transformer_submodules 2: logits and greedy tokens), {"input", "target"} training
// (one batch's loss against transformers; eval loss lowered on Debian's fortunes with LoRA
// and prefix tuning), ours read by HF PEFT, and the CLI. BartForConditionalGeneration runs
// through the same checks, with its ties, final_logits_bias buffer and fortunes training.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <set>
#include <tuple>
#include <sys/wait.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/generate.h"
#include "peft/model.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/seq2seq.h"
#include "peft/train.h"
#include "peft/tuner.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;  // fp32 logits against transformers / HF PEFT

fs::path base_dir(const std::string& c) { return fs::path(PEFT_T5_DIR) / c; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "t5" / name;
  fs::create_directories(p.parent_path());
  return p;
}
SafetensorsFile reference(const fs::path& dir) { return SafetensorsFile((dir / "reference.safetensors").string()); }

Seq2SeqInputs inputs_of(const SafetensorsFile& ref) {
  Seq2SeqInputs in;
  in.input_ids = ref.get("input_ids");
  in.attention_mask = ref.get("attention_mask");
  in.decoder_input_ids = ref.get("decoder_input_ids");
  if (ref.contains("decoder_attention_mask")) in.decoder_attention_mask = ref.get("decoder_attention_mask");
  return in;
}

// The greedy tokens for `base`'s padded generation batch (gen_input_ids, gen_attention_mask)
// equal `want`'s rows (transformers': decoder_start_token_id, then the tokens).
void expect_greedy_tokens(Model& model, const SafetensorsFile& base, const at::Tensor& want) {
  const auto ids = base.get("gen_input_ids"), mask = base.get("gen_attention_mask");
  std::vector<std::vector<int64_t>> prompts(ids.size(0));
  for (int64_t b = 0; b < ids.size(0); ++b)
    for (int64_t t = 0; t < ids.size(1); ++t)
      if (mask[b][t].item<int64_t>()) prompts[b].push_back(ids[b][t].item<int64_t>());
  ASSERT_NE(prompts[0].size(), prompts[1].size());
  GenerationConfig cfg;
  cfg.max_new_tokens = want.size(1) - 1;
  const auto rows = generate(model, prompts, cfg);
  for (int64_t b = 0; b < ids.size(0); ++b) {
    ASSERT_EQ(want[b][0].item<int64_t>(), as_seq2seq(model)->decoder_start_token_id());
    std::vector<int64_t> w, got(rows[b].begin() + static_cast<long>(prompts[b].size()), rows[b].end());
    for (int64_t t = 1; t < want.size(1); ++t) w.push_back(want[b][t].item<int64_t>());
    EXPECT_EQ(got, w) << "row " << b;
  }
}

at::Tensor logits_of(Model& model, const SafetensorsFile& ref) {
  c10::InferenceMode guard;
  return as_seq2seq(model)->forward_seq2seq(inputs_of(ref)).logits;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

// Our logits for the inputs of `ref`, written for tests/parity/make_t5.py check.
fs::path write_outputs(const SafetensorsFile& ref, const at::Tensor& logits, const std::string& name) {
  const auto outputs = scratch(name + "_outputs.safetensors");
  save_safetensors(outputs.string(), {{"input_ids", ref.get("input_ids")},
                                      {"attention_mask", ref.get("attention_mask")},
                                      {"decoder_input_ids", ref.get("decoder_input_ids")},
                                      {"logits", logits.to(at::kFloat).contiguous()}});
  return outputs;
}

// HF PEFT loads each (base, adapter) strictly and computes the outputs' logits (<= 1e-4);
// one Python process for all of them.
int check_in_python(const std::vector<std::array<std::string, 3>>& cases, std::string* log) {
  std::string args;
  for (const auto& c : cases) args += " " + c[0] + " " + c[1] + " " + c[2];
  int status = 0;
  *log = test::run_parity_script("make_t5.py", "check" + args, &status);
  return status;
}

// Encoder-decoder models on the same fixtures: T5 v1.0, v1.1, mT5, BART (tied, with a
// final_logits_bias; scaled embeddings, untied), mBART (pre-norm) and M2M100 / NLLB
// (sinusoidal positions over each row's non-pad tokens: the padded rows check them).
class Seq2Seq : public ::testing::TestWithParam<std::string> {};

TEST_P(Seq2Seq, PaddedLogitsAndLossMatchTransformers) {
  const auto ref = reference(base_dir(GetParam()));
  auto model = load_model(base_dir(GetParam()).string());
  auto* s2s = as_seq2seq(*model);
  ASSERT_NE(s2s, nullptr);
  // decoder_input_ids are what transformers' forward makes of the labels (T5's and BART's
  // shift, mBART's wrap of each row's last token).
  EXPECT_TRUE(at::equal(s2s->decoder_inputs_from_labels(ref.get("labels")), ref.get("decoder_input_ids")));
  c10::InferenceMode guard;
  const auto out = s2s->forward_seq2seq(inputs_of(ref));
  EXPECT_LE(max_diff(out.logits, ref.get("logits")), kLogitTol);
  EXPECT_LE(max_diff(out.encoder_last_hidden_state, ref.get("encoder_last_hidden_state")), kLogitTol);
  const auto v = out.logits.size(-1);
  const double loss = at::cross_entropy_loss(out.logits.reshape({-1, v}), ref.get("labels").reshape({-1}), {},
                                             at::Reduction::Mean, -100)
                          .item<double>();
  EXPECT_NEAR(loss, ref.get("loss").item<double>(), 1e-5);
  std::cerr << GetParam() << ": max |logits - transformers| " << max_diff(out.logits, ref.get("logits"))
            << ", encoder states " << max_diff(out.encoder_last_hidden_state, ref.get("encoder_last_hidden_state"))
            << ", |loss - transformers| " << std::abs(loss - ref.get("loss").item<double>()) << "\n";
}

// In bfloat16 every stack stays bfloat16 (sinusoids computed in float32 are cast, as
// transformers' buffers are) and the logits stay near float32's.
TEST_P(Seq2Seq, Bfloat16ForwardStaysBfloat16) {
  const auto ref = reference(base_dir(GetParam()));
  LoadOptions opts;
  opts.dtype = at::kBFloat16;
  auto model = load_model(base_dir(GetParam()).string(), opts);
  c10::InferenceMode guard;
  const auto out = as_seq2seq(*model)->forward_seq2seq(inputs_of(ref));
  EXPECT_EQ(out.encoder_last_hidden_state.scalar_type(), at::kBFloat16);
  EXPECT_EQ(out.logits.scalar_type(), at::kBFloat16);
  const auto want = ref.get("logits");
  EXPECT_LE(max_diff(out.logits.to(at::kFloat), want), 0.05 * want.abs().max().item<double>() + 0.05);
}

// The cache: one decoder position a step over the same inputs gives the full forward's logits.
TEST_P(Seq2Seq, CachedStepsEqualTheFullForward) {
  const auto ref = reference(base_dir(GetParam()));
  auto model = load_model(base_dir(GetParam()).string());
  auto* s2s = as_seq2seq(*model);
  c10::InferenceMode guard;
  Seq2SeqCache cache;
  auto in = inputs_of(ref);
  const auto dec = in.decoder_input_ids;
  in.cache = &cache;
  std::vector<at::Tensor> steps;
  for (int64_t t = 0; t < dec.size(1); ++t) {
    in.decoder_input_ids = dec.narrow(1, t, 1);
    const auto o = s2s->forward_seq2seq(in);
    in.encoder_hidden_states = o.encoder_last_hidden_state;
    steps.push_back(o.logits);
  }
  EXPECT_EQ(cache.length(), dec.size(1));
  EXPECT_LE(max_diff(at::cat(steps, 1), ref.get("logits")), kLogitTol);
  std::cerr << GetParam() << ": cached steps, max |logits - transformers| " << max_diff(at::cat(steps, 1), ref.get("logits"))
            << "\n";
}

TEST_P(Seq2Seq, GreedyGenerationOfAPaddedBatchMatchesTransformers) {
  const auto ref = reference(base_dir(GetParam()));
  auto model = load_model(base_dir(GetParam()).string());
  ASSERT_EQ(ref.get("gen_output_ids").size(1), 33);  // decoder_start_token_id + 32 tokens
  expect_greedy_tokens(*model, ref, ref.get("gen_output_ids"));
}

class T5Names : public ::testing::TestWithParam<std::string> {};

TEST_P(T5Names, ParametersHaveTransformersNamesAndCount) {
  auto model = load_model(base_dir(GetParam()).string());
  EXPECT_EQ(model->num_parameters(), reference(base_dir(GetParam())).get("num_parameters").item<int64_t>());
  const auto cfg = nlohmann::json::parse(std::ifstream(base_dir(GetParam()) / "config.json"));
  EXPECT_EQ(model->type_name(), cfg["architectures"][0].get<std::string>());
  std::vector<std::string> names;
  for (const auto& [n, _] : model->named_parameters()) names.push_back(n);
  EXPECT_EQ(names.front(), "shared.weight");
  for (const char* n : {"encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                        "encoder.block.1.layer.1.layer_norm.weight", "decoder.block.0.layer.1.EncDecAttention.q.weight",
                        "decoder.block.1.layer.2.DenseReluDense.wo.weight", "decoder.final_layer_norm.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  // Tied to shared: one tensor, one name, as transformers' named_parameters().
  EXPECT_EQ(std::find(names.begin(), names.end(), "encoder.embed_tokens.weight"), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"),
            names.end());
  const bool v11 = GetParam() != "t5_relu";  // v1.1's layout: t5_v11 and mt5
  EXPECT_EQ(std::find(names.begin(), names.end(), "lm_head.weight") != names.end(), v11);
  EXPECT_EQ(model->find("decoder.block.0.layer.2.DenseReluDense")->type_name(),
            v11 ? "T5DenseGatedActDense" : "T5DenseActDense");
  if (v11) EXPECT_NE(std::find(names.begin(), names.end(), "decoder.block.2.layer.0.SelfAttention.q.weight"), names.end());
}

// HF PEFT's adapters (task_type SEQ_2_SEQ_LM): LoRA on q, v, wo and (IA)3 with PEFT's T5
// defaults (k, v, wo; wo feed-forward), unmerged, merged, and unmerged again.
TEST_P(Seq2Seq, HfAdaptersMatchPeftUnmergedAndMerged) {
  for (const char* method : {"lora", "ia3"}) {
    SCOPED_TRACE(method);
    const auto dir = base_dir(GetParam()) / method;
    const auto ref = reference(dir);
    auto base = load_model(base_dir(GetParam()).string());
    std::map<std::string, at::Tensor> before;
    for (auto& [n, t] : base->named_parameters()) before[n] = t.clone();
    PeftModel peft(base);
    peft.load_adapter(dir.string());
    const double unmerged = max_diff(logits_of(*base, ref), ref.get("logits"));
    EXPECT_LE(unmerged, kLogitTol);
    peft.merge();
    const double merged = max_diff(logits_of(*base, ref), ref.get("merged_logits"));
    EXPECT_LE(merged, kLogitTol);
    std::cerr << GetParam() << " " << method << ": max |logits - HF PEFT| unmerged " << unmerged << ", merged " << merged
              << "\n";
    peft.unmerge();
    for (auto& [n, t] : base->named_parameters())
      if (before.count(n)) EXPECT_LE((t - before[n]).abs().max().item<double>(), 1e-5) << n;
    EXPECT_LE(max_diff(logits_of(*base, ref), ref.get("logits")), kLogitTol);
  }
}

INSTANTIATE_TEST_SUITE_P(Seq2Seq, Seq2Seq,
                         ::testing::Values("t5_relu", "t5_v11", "mt5", "bart", "bart_scaled", "mbart", "m2m100",
                                           "marian", "pegasus"));
INSTANTIATE_TEST_SUITE_P(T5, T5Names, ::testing::Values("t5_relu", "t5_v11", "mt5"));

TEST(T5Adapters, DefaultTargetsAreHfPeftsForT5) {
  PeftModel peft(load_model(base_dir("t5_relu").string()));
  peft.add_adapter("lora", *parse_user_adapter_config(json::parse(R"({"peft_type": "LORA", "r": 2})"), "test"));
  peft.add_adapter("ia3", *parse_user_adapter_config(json::parse(R"({"peft_type": "IA3"})"), "test"));
  std::set<std::string> lora, ia3;
  for (const auto& [k, _] : peft.adapter_state_dict("lora")) lora.insert(k);
  for (const auto& [k, _] : peft.adapter_state_dict("ia3")) ia3.insert(k);
  EXPECT_TRUE(lora.count("base_model.model.decoder.block.1.layer.1.EncDecAttention.v.lora_A.weight"));
  EXPECT_FALSE(lora.count("base_model.model.decoder.block.1.layer.1.EncDecAttention.k.lora_A.weight"));
  EXPECT_TRUE(ia3.count("base_model.model.encoder.block.0.layer.1.DenseReluDense.wo.ia3_l"));
  EXPECT_TRUE(ia3.count("base_model.model.decoder.block.0.layer.0.SelfAttention.k.ia3_l"));
}

// HF PEFT's soft prompts and prefixes (task_type SEQ_2_SEQ_LM, so num_transformer_submodules
// 2): prompt tuning and P-tuning put the first n of their 2n prompts before the encoder's
// input; prefix tuning fills the decoder's self-attention cache, extends its mask (given
// here), and on 3 decoder layers reads HF's wrapped-around rows. p_tuning_encoder: the
// same LSTM P-tuning from its encoder's weights (our training-time path over all 2n rows).
TEST(T5PromptLearning, HfAdaptersMatchPeftLogitsAndGreedyTokens) {
  for (const auto& [base_name, method] : std::vector<std::pair<std::string, std::string>>{
           {"t5_relu", "prompt_tuning"}, {"t5_relu", "p_tuning"}, {"t5_relu", "p_tuning_encoder"},
           {"t5_relu", "prefix_tuning"}, {"t5_v11", "prefix_tuning"}, {"bart", "prompt_tuning"},
           {"bart", "prefix_tuning"}, {"pegasus", "prompt_tuning"}}) {
    SCOPED_TRACE(base_name + " " + method);
    const auto dir = base_dir(base_name) / method;
    const auto ref = reference(dir);
    PeftModel peft(load_model(base_dir(base_name).string()));
    peft.load_adapter(dir.string());
    EXPECT_EQ(peft.config("default").inference_mode, method != "p_tuning_encoder");
    const double diff = max_diff(logits_of(peft.model(), ref), ref.get("logits"));
    EXPECT_LE(diff, kLogitTol);
    ASSERT_EQ(ref.get("gen_output_ids").size(1), 17);  // decoder_start_token_id + 16 tokens
    expect_greedy_tokens(peft.model(), reference(base_dir(base_name)), ref.get("gen_output_ids"));
    std::cerr << base_name << " " << method << ": max |logits - HF PEFT| " << diff << "\n";
  }
}

TEST(T5PromptLearning, SubmoduleCountsThatCannotWorkAreRefusedByName) {
  auto t5 = load_model(base_dir("t5_relu").string());
  PeftModel peft(t5);
  auto refused = [&](PeftModel& p, const char* config, const char* what) {
    try {
      p.add_adapter("x", *parse_user_adapter_config(json::parse(config), "test"));
      ADD_FAILURE() << "accepted " << config;
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), HasSubstr(what));
    }
  };
  refused(peft, R"({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2, "num_transformer_submodules": 1})",
          "num_transformer_submodules must be 2");
  refused(peft, R"({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2, "num_layers": 3})", "num_layers is 3");
  refused(peft, R"({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2, "num_transformer_submodules": 3})",
          "num_transformer_submodules must be 1 or 2");
  PeftModel llama(build_model(json::parse(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 16,
      "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
      "num_key_value_heads": 2})")));
  refused(llama, R"({"peft_type": "P_TUNING", "num_virtual_tokens": 2, "num_transformer_submodules": 2})",
          "num_transformer_submodules 2 is for encoder-decoder models");
  // One submodule on T5 is HF PEFT's too: all n prompts before the encoder's input.
  peft.add_adapter("one", *parse_user_adapter_config(
                              json::parse(R"({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2,
                                              "num_transformer_submodules": 1})"), "test"));
  EXPECT_EQ(peft.adapter_state_dict("one").front().second.size(0), 2);
}

TEST(T5Models, ForwardWithOneSequenceIsRefusedByName) {
  auto model = load_model(base_dir("t5_relu").string());
  ModelInputs in;
  in.input_ids = at::ones({1, 3}, at::kLong);
  try {
    (void)model->forward(in);
    ADD_FAILURE() << "a decoder-only forward ran";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("encoder-decoder"));
  }
  Seq2SeqInputs s;
  s.input_ids = at::ones({1, 3}, at::kLong);
  s.decoder_input_ids = at::full({1, 1}, 101, at::kLong);  // vocabulary is 101
  EXPECT_THROW(as_seq2seq(*model)->forward_seq2seq(s), std::invalid_argument);
}

TEST(T5Models, BadConfigIsRefusedByKey) {
  json cfg = json::parse(std::ifstream(base_dir("t5_v11") / "config.json"));
  cfg["feed_forward_proj"] = "gated-gelu-x";
  try {
    (void)build_model(cfg, "cfg.json");
    ADD_FAILURE() << "accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("feed_forward_proj"));
  }
}

// {"input", "target"} lines through `peft train`'s data path: labels = target ids + </s>,
// -100 on padding, decoder inputs shifted right; the loss of one batch is transformers'.
// T5 and BART (whose decoder starts from </s> and pads with its own id).
class FortunesLoss : public ::testing::TestWithParam<std::string> {};

TEST_P(FortunesLoss, BatchLossOfInputTargetLinesEqualsTransformers) {
  const auto base = base_dir(GetParam());
  const auto ref = reference(base);
  const auto rows = scratch(GetParam() + "_batch.jsonl");
  {
    std::ifstream in(base / "eval.jsonl");
    std::ofstream out(rows);
    std::string line;
    for (int64_t i = 0; i < ref.get("input_ids").size(0) && std::getline(in, line); ++i) out << line << "\n";
  }
  TrainConfig c;
  c.model = base.string();
  c.eval_file = rows.string();
  c.per_device_eval_batch_size = ref.get("input_ids").size(0);
  c.output_dir = scratch(GetParam() + "_batch_eval").string();
  c.progress = false;
  EXPECT_NEAR(evaluate(c, {})["eval_loss"].get<double>(), ref.get("loss").item<double>(), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Seq2Seq, FortunesLoss, ::testing::Values("t5_fortunes", "bart_fortunes"));

// Gradient checkpointing of the encoder's and the decoder's layers trains as kept layers:
// LoRA on every linear layer of both stacks (both factors random, so the encoder's
// gradients reach it only through each decoder layer's cross-attention; dropout 0.1, so
// the recompute must replay the random stream), three steps.
class FortunesCheckpointing : public ::testing::TestWithParam<std::string> {};

TEST_P(FortunesCheckpointing, GivesTheSameSteps) {
  const auto c = test::three_lora_steps(base_dir(GetParam()).string(),
                                        (base_dir(GetParam()) / "train.jsonl").string(), 4, 0.1);
  // The encoder output's gradient is summed over the decoder layers in another order when
  // each layer is recomputed; AdamW's normalized steps carry that rounding into the third
  // step's gradients at about 2e-5 (the first step's agree to 1e-7).
  test::expect_checkpointing_keeps_the_steps(c, scratch(GetParam() + "_ckpt").string(), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Seq2Seq, FortunesCheckpointing, ::testing::Values("t5_fortunes", "bart_fortunes"));

TEST(T5Train, OtherFormatsAndPackingAreRefusedByName) {
  const auto rows = scratch("text_rows.jsonl");
  std::ofstream(rows) << "{\"input\": \"a b\", \"target\": \"c\"}\n{\"text\": \"a b c\"}\n";
  TrainConfig c;
  c.model = base_dir("t5_fortunes").string();
  c.eval_file = rows.string();
  c.output_dir = scratch("text_eval").string();
  c.progress = false;
  try {
    (void)evaluate(c, {});
    ADD_FAILURE() << "a {\"text\"} line was accepted for T5";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("text_rows.jsonl:2"));
    EXPECT_THAT(e.what(), HasSubstr("'input'"));
  }
  std::ofstream(rows) << "{\"text\": \"a b c\"}\n";
  try {
    (void)evaluate(c, {});
    ADD_FAILURE() << "a {\"text\"} file was accepted for T5";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("text_rows.jsonl:1"));
    EXPECT_THAT(e.what(), HasSubstr("\"input\", \"target\""));
  }
  c.train_file = (base_dir("t5_fortunes") / "train.jsonl").string();
  c.packing = true;
  try {
    (void)train(c, false, true);
    ADD_FAILURE() << "packing was accepted for T5";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("encoder-decoder"));
  }
}

// `peft train` with `method` on fortunes (input: a line's first half, target: the rest):
// the eval loss before and after, and the saved adapter, checked as HF PEFT reads it.
struct Trained {
  double before, after;
  std::string adapter_dir;
};
Trained train_on_fortunes(const std::string& name, const char* method, int64_t steps, double lr,
                          const std::string& case_name = "t5_fortunes") {
  const auto base = base_dir(case_name);
  TrainConfig c;
  c.model = base.string();
  c.train_file = (base / "train.jsonl").string();
  c.eval_file = (base / "eval.jsonl").string();
  c.output_dir = scratch(name).string();
  fs::remove_all(c.output_dir);
  c.method = json::parse(method);
  c.max_steps = steps;
  c.per_device_train_batch_size = 8;
  c.learning_rate = lr;
  c.progress = false;
  const double before = evaluate(c, {})["eval_loss"];
  const auto r = train(c);
  const auto saved = json::parse(std::ifstream(fs::path(r.adapter_dir) / "adapter_config.json"));
  EXPECT_EQ(saved["task_type"], "SEQ_2_SEQ_LM");
  return {before, r.evals.back()["eval_loss"], r.adapter_dir};
}

// An adapter made here with random values on the v1.1 model, saved; its logits on the
// inputs of `ref` move away from the base model's.
fs::path fresh_adapter(const std::string& name, const char* config, bool inference_mode, at::Tensor* logits) {
  const auto v11 = base_dir("t5_v11");
  PeftModel fresh(load_model(v11.string()));
  auto cfg = parse_user_adapter_config(json::parse(config), "test");
  cfg->inference_mode = inference_mode;  // P-tuning: prompts from the encoder, saved as its output
  fresh.add_adapter("default", *cfg, 5);
  const auto dir = scratch(name);
  fs::remove_all(dir);
  fresh.save_adapter(dir.string());
  *logits = logits_of(fresh.model(), reference(v11 / "lora"));
  EXPECT_GT(max_diff(*logits, reference(v11).get("logits")), 1e-2) << name;  // the adapter does something
  return dir;
}

// LoRA on q, v, wo and prefix tuning trained on fortunes lower the eval loss; HF PEFT
// loads both, and adapters made here on the v1.1 model (LoRA with both factors random;
// prompt tuning; LSTM P-tuning saved from its encoder over all 2n rows), with our logits.
TEST(T5Train, PeftTrainLowersEvalLossAndOurAdaptersLoadInHfPeft) {
  const auto base = base_dir("t5_fortunes");
  const auto ref = reference(base);
  std::vector<std::array<std::string, 3>> cases;
  std::string losses;
  // A random model whose embeddings and head stay frozen: LoRA about 8.17 -> 7.07, prefix
  // tuning 8.17 -> 7.66.
  using Run = std::tuple<std::string, const char*, int64_t, double, double>;  // name, method, steps, lr, min gain
  for (const auto& [name, method, steps, lr, gain] : std::vector<Run>{
           {"lora", R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q", "v", "wo"]})", 60, 3e-2,
            0.8},
           {"prefix", R"({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 8})", 40, 1e-1, 0.3}}) {
    const auto t = train_on_fortunes("train_" + name, method, steps, lr);
    EXPECT_LT(t.after, t.before - gain) << name << " eval loss " << t.before << " -> " << t.after;
    losses += name + " eval loss " + std::to_string(t.before) + " -> " + std::to_string(t.after) + "; ";
    PeftModel trained(load_model(base.string()));
    trained.load_adapter(t.adapter_dir);
    cases.push_back({base.string(), t.adapter_dir, write_outputs(ref, logits_of(trained.model(), ref), name).string()});
  }
  const auto prefix_cfg = json::parse(std::ifstream(fs::path(cases.back()[1]) / "adapter_config.json"));
  EXPECT_EQ(prefix_cfg["num_transformer_submodules"], 2);

  const auto v11 = base_dir("t5_v11");
  const auto v11_ref = reference(v11 / "lora");
  for (const auto& [name, config, inference_mode] : std::vector<std::tuple<std::string, const char*, bool>>{
           {"fresh_lora", R"({"peft_type": "LORA", "task_type": "SEQ_2_SEQ_LM", "r": 4, "lora_alpha": 8,
                              "init_lora_weights": false, "target_modules": ["q", "v", "wo"]})", true},
           {"fresh_prompt_tuning", R"({"peft_type": "PROMPT_TUNING", "task_type": "SEQ_2_SEQ_LM",
                                       "num_virtual_tokens": 5})", true},
           {"fresh_p_tuning", R"({"peft_type": "P_TUNING", "task_type": "SEQ_2_SEQ_LM", "num_virtual_tokens": 3,
                                  "encoder_reparameterization_type": "LSTM", "encoder_hidden_size": 16})", false}}) {
    at::Tensor logits;
    const auto dir = fresh_adapter(name, config, inference_mode, &logits);
    cases.push_back({v11.string(), dir.string(), write_outputs(v11_ref, logits, name).string()});
  }
  std::string log;
  EXPECT_EQ(check_in_python(cases, &log), 0) << log;
  std::cerr << losses << log;
}

// BART's names as transformers': with tie_word_embeddings one table (model.shared) serves
// both stacks and lm_head; without, transformers 5 keeps four. final_logits_bias is a
// buffer: loaded, saved, never a parameter (the counts equal num_parameters()).
TEST(Bart, ParametersBuffersAndTiesAreTransformers) {
  for (const std::string name : {"bart", "bart_scaled"}) {
    SCOPED_TRACE(name);
    auto model = load_model(base_dir(name).string());
    EXPECT_EQ(model->num_parameters(), reference(base_dir(name)).get("num_parameters").item<int64_t>());
    EXPECT_EQ(model->type_name(), "BartForConditionalGeneration");
    std::set<std::string> names;
    for (const auto& [n, _] : model->named_parameters()) names.insert(n);
    EXPECT_EQ(model->named_parameters().front().first, "model.shared.weight");
    const bool tied = name == "bart";
    for (const char* copy : {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"})
      EXPECT_EQ(names.count(copy), tied ? 0u : 1u) << copy;
    for (const char* n : {"model.encoder.embed_positions.weight", "model.encoder.layernorm_embedding.bias",
                          "model.decoder.layers.1.encoder_attn.k_proj.bias", "model.decoder.layers.0.fc2.weight"})
      EXPECT_EQ(names.count(n), 1u) << n;
    const auto buffers = model->named_buffers();
    ASSERT_EQ(buffers.size(), 1u);
    EXPECT_EQ(buffers[0].first, "final_logits_bias");
    EXPECT_EQ(names.count("final_logits_bias"), 0u);
    EXPECT_EQ(model->find("model.shared")->type_name(), "BartScaledWordEmbedding");
  }
  // mBART: the same names plus each stack's final layer_norm, under its own class names.
  auto mbart = load_model(base_dir("mbart").string());
  EXPECT_EQ(mbart->type_name(), "MBartForConditionalGeneration");
  EXPECT_EQ(mbart->find("model.decoder.layers.1")->type_name(), "MBartDecoderLayer");
  EXPECT_EQ(mbart->find("model.shared")->type_name(), "MBartScaledWordEmbedding");
  std::set<std::string> names;
  for (const auto& [n, _] : mbart->named_parameters()) names.insert(n);
  EXPECT_TRUE(names.count("model.encoder.layer_norm.weight") && names.count("model.decoder.layer_norm.bias"));
}

// M2M100 (NLLB's class): mBART's names less layernorm_embedding, positions without
// parameters (transformers' table is a non-persistent buffer), and no final_logits_bias; the
// parameter count is transformers' num_parameters().
TEST(Bart, M2M100HasTransformersNamesAndNoPositionParameters) {
  auto model = load_model(base_dir("m2m100").string());
  EXPECT_EQ(model->type_name(), "M2M100ForConditionalGeneration");
  EXPECT_EQ(model->num_parameters(), reference(base_dir("m2m100")).get("num_parameters").item<int64_t>());
  EXPECT_EQ(model->find("model.encoder.embed_positions")->type_name(), "M2M100SinusoidalPositionalEmbedding");
  EXPECT_EQ(model->find("model.decoder.layers.1")->type_name(), "M2M100DecoderLayer");
  std::set<std::string> names;
  for (const auto& [n, _] : model->named_parameters()) names.insert(n);
  EXPECT_TRUE(names.count("model.encoder.layer_norm.weight") && names.count("model.decoder.layer_norm.bias"));
  for (const auto& n : names) {
    EXPECT_EQ(n.find("embed_positions"), std::string::npos) << n;
    EXPECT_EQ(n.find("layernorm_embedding"), std::string::npos) << n;
  }
  EXPECT_TRUE(model->named_buffers().empty());
  // A width whose sinusoids transformers cannot make (it divides by half of it, less one).
  json cfg = json::parse(std::ifstream(base_dir("m2m100") / "config.json"));
  cfg.update(json{{"d_model", 2}, {"encoder_attention_heads", 1}, {"decoder_attention_heads", 1}});
  try {
    (void)build_model(cfg, "config.json");
    ADD_FAILURE() << "d_model 2 was accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("d_model"));
  }
}

// Marian (opus-mt) and Pegasus: transformers' class names; the sinusoid table is a buffer
// under transformers' parameter name, equal to transformers' (computed for Marian, whose
// save_pretrained leaves it out; read from Pegasus's checkpoint), so the parameter count is
// transformers' less the two tables; tokens are plain nn.Embedding rows.
TEST(Bart, MarianAndPegasusHaveTransformersNamesAndPositionTables) {
  for (const auto& [name, type] : {std::pair{"marian", "MarianMTModel"}, {"pegasus", "PegasusForConditionalGeneration"}}) {
    SCOPED_TRACE(name);
    auto model = load_model(base_dir(name).string());
    const auto ref = reference(base_dir(name));
    const auto cfg = json::parse(std::ifstream(base_dir(name) / "config.json"));
    const std::string arch = name == std::string("marian") ? "Marian" : "Pegasus";
    EXPECT_EQ(model->type_name(), type);
    EXPECT_EQ(model->find("model.encoder")->type_name(), arch + "Encoder");
    EXPECT_EQ(model->find("model.decoder.layers.1.encoder_attn")->type_name(), arch + "Attention");
    EXPECT_EQ(model->find("model.decoder.embed_positions")->type_name(), arch + "SinusoidalPositionalEmbedding");
    EXPECT_EQ(model->find("model.shared")->type_name(), "Embedding");
    const auto table = ref.get("position_table");
    EXPECT_EQ(table.size(0), cfg["max_position_embeddings"].get<int64_t>());
    EXPECT_EQ(model->num_parameters(), ref.get("num_parameters").item<int64_t>() - 2 * table.numel());
    std::map<std::string, at::Tensor> buffers;
    for (const auto& [n, t] : model->named_buffers()) buffers[n] = t;
    ASSERT_EQ(buffers.size(), 3u);  // the two tables and final_logits_bias
    for (const char* stack : {"encoder", "decoder"})
      EXPECT_LE(max_diff(buffers.at(std::string("model.") + stack + ".embed_positions.weight"), table), 1e-7) << stack;
    EXPECT_TRUE(buffers.count("final_logits_bias"));
    std::set<std::string> names;
    for (const auto& [n, _] : model->named_parameters()) names.insert(n);
    EXPECT_EQ(names.count("model.encoder.layer_norm.weight"), arch == "Pegasus" ? 1u : 0u);  // pre-norm's final norm
    for (const auto& n : names) EXPECT_EQ(n.find("layernorm_embedding"), std::string::npos) << n;
  }
  // Marian with separate source and target vocabularies, and a table too large to make.
  json cfg = json::parse(std::ifstream(base_dir("marian") / "config.json"));
  for (const auto& [key, value] : {std::pair{"share_encoder_decoder_embeddings", json(false)},
                                   {"max_position_embeddings", json(int64_t{1} << 24)}}) {
    json bad = cfg;
    bad[key] = value;
    try {
      (void)build_model(bad, "config.json");
      ADD_FAILURE() << key << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), HasSubstr(key));
    }
  }
}

// forced_bos_token_id (mBART-50's target language) makes the first generated token that id,
// and the rest follow from it as in transformers' greedy generate.
TEST(Bart, ForcedBosTokenStartsGenerationAsTransformers) {
  auto model = load_model(base_dir("mbart").string());
  const auto ref = reference(base_dir("mbart"));
  const auto want = ref.get("gen_forced_output_ids");
  ASSERT_EQ(want[0][1].item<int64_t>(), 7);
  const auto ids = ref.get("gen_input_ids"), mask = ref.get("gen_attention_mask");
  std::vector<std::vector<int64_t>> prompts(ids.size(0));
  for (int64_t b = 0; b < ids.size(0); ++b)
    for (int64_t t = 0; t < ids.size(1); ++t)
      if (mask[b][t].item<int64_t>()) prompts[b].push_back(ids[b][t].item<int64_t>());
  GenerationConfig cfg;
  cfg.max_new_tokens = want.size(1) - 1;
  cfg.forced_bos_token_id = 7;
  const auto rows = generate(*model, prompts, cfg);
  for (int64_t b = 0; b < ids.size(0); ++b) {
    std::vector<int64_t> w, got(rows[b].begin() + static_cast<long>(prompts[b].size()), rows[b].end());
    for (int64_t t = 1; t < want.size(1); ++t) w.push_back(want[b][t].item<int64_t>());
    EXPECT_EQ(got, w) << "row " << b;
  }
  cfg.forced_bos_token_id = 103;  // the vocabulary's size
  EXPECT_THROW((void)generate(*model, prompts, cfg), std::invalid_argument);
}

// mBART's decoder inputs start with each label row's last real token (its language id),
// -100 read as padding, whatever decoder_start_token_id says.
TEST(Bart, MbartDecoderInputsWrapTheLastToken) {
  auto model = load_model(base_dir("mbart").string());
  const auto labels = at::tensor({7, 8, 9, 30, -100, -100, 5, 6, 40, 41, 42, 43}, at::kLong).view({2, 6});
  const auto got = as_seq2seq(*model)->decoder_inputs_from_labels(labels);
  EXPECT_TRUE(at::equal(got, at::tensor({30, 7, 8, 9, 30, 1, 43, 5, 6, 40, 41, 42}, at::kLong).view({2, 6}))) << got;
}

// A checkpoint without final_logits_bias (transformers ignores its absence) loads with the
// bias at zero: the logits are the reference's minus its bias. save_pretrained writes the
// buffer, and the saved folder gives the same logits again.
TEST(Bart, MissingLogitsBiasIsZeroAndSavedBack) {
  const auto base = base_dir("bart");
  const auto ref = reference(base);
  const SafetensorsFile weights((base / "model.safetensors").string());
  ASSERT_TRUE(weights.contains("final_logits_bias"));
  const auto bias = weights.get("final_logits_bias");
  ASSERT_GT(bias.abs().max().item<double>(), 0.1);  // the fixture's bias is not zero
  const auto dir = scratch("bart_no_bias");
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(base / "config.json", dir / "config.json");
  NamedTensors kept;
  for (const auto& n : weights.names())
    if (n != "final_logits_bias") kept.emplace_back(n, weights.get(n));
  save_safetensors((dir / "model.safetensors").string(), kept);
  auto model = load_model(dir.string());
  EXPECT_LE(max_diff(logits_of(*model, ref), ref.get("logits") - bias), kLogitTol);
  const auto saved = scratch("bart_saved");
  fs::remove_all(saved);
  auto full = load_model(base.string());
  save_pretrained(*full, saved.string());
  const SafetensorsFile written((saved / "model.safetensors").string());
  ASSERT_TRUE(written.contains("final_logits_bias"));
  EXPECT_TRUE(at::equal(written.get("final_logits_bias"), bias));
  EXPECT_LE(max_diff(logits_of(*load_model(saved.string()), ref), ref.get("logits")), kLogitTol);
}

// With no target_modules, LoRA, (IA)3 (and its feedforward modules) and LN tuning pick HF
// PEFT's bart defaults; the (IA)3 fixture was made with the defaults and records HF's choice.
TEST(Bart, DefaultTargetsAreHfPefts) {
  PeftModel peft(load_model(base_dir("bart").string()));
  for (const char* type : {"LORA", "IA3", "LN_TUNING"})
    peft.add_adapter(type, *parse_user_adapter_config(json{{"peft_type", type}}, "test"));
  auto names = [](const json& list) {
    std::set<std::string> out;
    for (const auto& t : list) out.insert(t.get<std::string>());
    return out;
  };
  EXPECT_EQ(names(peft.config("LORA").to_json()["target_modules"]), (std::set<std::string>{"q_proj", "v_proj"}));
  const auto hf = json::parse(std::ifstream(base_dir("bart") / "ia3" / "adapter_config.json"));
  const auto ia3 = peft.config("IA3").to_json();
  EXPECT_EQ(names(ia3["target_modules"]), names(hf["target_modules"]));
  EXPECT_EQ(names(ia3["feedforward_modules"]), names(hf["feedforward_modules"]));
  EXPECT_EQ(names(peft.config("LN_TUNING").to_json()["target_modules"]),
            (std::set<std::string>{"self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"}));
}

// Settings transformers would mis-shape or index out of range with are refused, naming the key.
TEST(Bart, BadConfigsAreRefusedByKey) {
  const json base = json::parse(std::ifstream(base_dir("bart") / "config.json"));
  for (const auto& [edit, key] : std::vector<std::pair<json, std::string>>{
           {{{"decoder_attention_heads", 5}}, "decoder_attention_heads"},
           {{{"encoder_attention_heads", 0}}, "encoder_attention_heads"},
           {{{"decoder_start_token_id", 101}}, "decoder_start_token_id"},
           {{{"pad_token_id", -1}}, "pad_token_id"},
           {{{"max_position_embeddings", 0}}, "max_position_embeddings"},
           {{{"activation_function", "nope"}}, "nope"},
           {{{"d_model", "32"}}, "d_model"}}) {
    json cfg = base;
    cfg.update(edit);
    try {
      (void)build_model(cfg, "config.json");
      ADD_FAILURE() << edit.dump() << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), HasSubstr(key)) << edit.dump();
    }
  }
}

// LoRA (q_proj, v_proj, fc2) trained on fortunes with BART lowers the eval loss (about
// 8.36 -> 7.42), and HF PEFT loads it with our logits.
TEST(BartTrain, PeftTrainLowersEvalLossAndLoadsInHfPeft) {
  const auto base = base_dir("bart_fortunes");
  const auto ref = reference(base);
  const auto t = train_on_fortunes(
      "bart_lora", R"({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj", "fc2"]})",
      60, 3e-2, "bart_fortunes");
  EXPECT_LT(t.after, t.before - 0.6) << "eval loss " << t.before << " -> " << t.after;
  PeftModel trained(load_model(base.string()));
  trained.load_adapter(t.adapter_dir);
  std::string log;
  EXPECT_EQ(check_in_python({{base.string(), t.adapter_dir,
                              write_outputs(ref, logits_of(trained.model(), ref), "bart_lora").string()}},
                            &log),
            0)
      << log;
  std::cerr << "bart: eval loss " << t.before << " -> " << t.after << "\n" << log;
}

// A hostile forced BOS id, from --forced-bos or from config.json, is one `error:` line naming it.
TEST(BartCli, HostileForcedBosIsOneLine) {
  const auto ids = scratch("mbart_ids.json");
  std::ofstream(ids) << "[[5, 6, 7, 8]]";
  const auto dir = scratch("mbart_bad_forced");
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"model.safetensors", "config.json"}) fs::copy_file(base_dir("mbart") / f, dir / f);
  json cfg = json::parse(std::ifstream(dir / "config.json"));
  cfg["forced_bos_token_id"] = "x";
  std::ofstream(dir / "config.json") << cfg.dump();
  for (const auto& [model, extra, key] : std::vector<std::tuple<fs::path, std::string, std::string>>{
           {base_dir("mbart"), " --forced-bos -5", "forced_bos_token_id"},
           {base_dir("mbart"), " --forced-bos 103", "forced_bos_token_id 103"},
           {dir, "", "config.json: 'forced_bos_token_id'"}}) {
    int status = 0;
    const auto out = test::run_command(std::string(PEFT_CLI) + " generate " + model.string() + " --ids " +
                                           ids.string() + " --max-new-tokens 2" + extra + " 2>&1",
                                       &status);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status << ": " << out;  // an exit, not a signal
    EXPECT_THAT(out, HasSubstr(key)) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  }
}

TEST(T5Cli, InspectAndGenerate) {
  int status = 0;
  const auto base = base_dir("t5_v11");
  auto out = test::run_command(std::string(PEFT_CLI) + " inspect " + base.string(), &status);
  ASSERT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("T5ForConditionalGeneration"));
  EXPECT_THAT(out, HasSubstr(std::to_string(reference(base).get("num_parameters").item<int64_t>())));
  const auto ids = scratch("prompt_ids.json");
  std::ofstream(ids) << "[[5, 6, 7, 8]]";
  out = test::run_command(std::string(PEFT_CLI) + " generate " + base.string() + " --ids " + ids.string() +
                              " --max-new-tokens 4 --no-eos",
                          &status);
  ASSERT_EQ(status, 0) << out;
  const auto rows = json::parse(out.substr(out.find('[')));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].size(), 8u);
}

}  // namespace
}  // namespace peft
