// RoBERTa against transformers and HF PEFT (fixtures from tests/parity/make_encoders.py):
// padding-aware positions, the classification head, and LoRA / (IA)3 adapters made by PEFT.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "test_util.h"

#include "peft/model.h"
#include "peft/peft_model.h"
#include "peft/layers.h"
#include "peft/safetensors.h"
#include "peft/tuner.h"

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

// RoBERTa, XLM-RoBERTa, DistilBERT, DeBERTa-v2/v3 and ELECTRA encoders and classifiers.
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
                                           "deberta_v3", "deberta_v3_cls", "deberta_v2", "deberta_tok", "deberta_v1",
                                           "deberta_v1_cls", "electra", "electra_cls", "electra_tok",
                                           "modernbert", "modernbert_cls", "modernbert_tok"));

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
// adapter and computes our logits. RoBERTa, DeBERTa-v3 and ModernBERT (which has no
// default targets in PEFT, so they are named).
class ClassifierTrain : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

TEST_P(ClassifierTrain, LoraLearnsTextClassesAndLoadsInHfPeft) {
  const auto& [name, method] = GetParam();
  const fs::path dir = case_dir(name), data = case_dir("");
  const fs::path out = fs::path(PEFT_SCRATCH_DIR) / (name + "_train");
  fs::remove_all(out);
  auto base = test::run_cli({"eval", dir.string(), "--data", (data / "cls_eval.jsonl").string()});
  ASSERT_EQ(base.exit_code, 0) << base.output;
  const double base_loss = nlohmann::json::parse(base.output.substr(base.output.rfind('{')))["eval_loss"];
  auto r = test::run_cli({"train", "model=" + dir.string(), "train_file=" + (data / "cls_train.jsonl").string(),
                          "eval_file=" + (data / "cls_eval.jsonl").string(), "output_dir=" + out.string(),
                          "max_steps=60", "learning_rate=1e-2", "eval_steps=20", "per_device_train_batch_size=8",
                          "progress=false", "method=" + method});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto eval = last_eval(out);
  EXPECT_LT(eval["eval_loss"].get<double>(), 0.7 * base_loss) << eval.dump();
  EXPECT_GE(eval["eval_accuracy"].get<double>(), 0.6) << eval.dump();  // chance: 1/3

  const SafetensorsFile ref((dir / "reference.safetensors").string());
  test::expect_classifier_adapter_matches_hf(dir, out, ref.get("input_ids"), ref.get("attention_mask"));
}

INSTANTIATE_TEST_SUITE_P(
    Encoders, ClassifierTrain,
    ::testing::Values(std::pair<std::string, std::string>{"roberta_cls", R"({"task_type": "SEQ_CLS", "r": 8})"},
                      std::pair<std::string, std::string>{"deberta_v3_cls", R"({"task_type": "SEQ_CLS", "r": 8})"},
                      std::pair<std::string, std::string>{
                          "modernbert_cls", R"({"task_type": "SEQ_CLS", "r": 8, "target_modules": ["Wqkv", "Wi"]})"}),
    [](const auto& info) { return info.param.first; });

// QLoRA on a classifier. transformers quantizes the head too (it is not the output
// embeddings, and the last parameter is its bias), so HF PEFT cannot train it as
// modules_to_save: we refuse that in one line naming the module and the way out, and with
// llm_int8_skip_modules the head stays full precision, LoRA learns the task on the 4-bit
// base, and HF PEFT on a base bitsandbytes quantizes with the same settings gives our logits.
TEST(QloraClassifier, HeadKeptFullPrecisionTrainsAndLoadsInPeftOnBnb) {
  const fs::path dir = case_dir("deberta_v3_cls"), data = case_dir("");
  const fs::path out = fs::path(PEFT_SCRATCH_DIR) / "deberta_qlora";
  fs::remove_all(out);
  std::vector<std::string> args = {"train", "model=" + dir.string(), "train_file=" + (data / "cls_train.jsonl").string(),
                                   "eval_file=" + (data / "cls_eval.jsonl").string(), "output_dir=" + out.string(),
                                   "load_in_4bit=true", "quant_type=nf4", "max_steps=60", "learning_rate=1e-2",
                                   "eval_steps=60", "per_device_train_batch_size=8", "progress=false",
                                   R"(method={"task_type": "SEQ_CLS", "r": 8})"};
  const auto refused = test::run_cli(args);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("'classifier' is stored 4-bit"), std::string::npos) << refused.output;
  EXPECT_NE(refused.output.find("llm_int8_skip_modules=[\"classifier\"]"), std::string::npos) << refused.output;
  EXPECT_EQ(refused.output.find("Traceback"), std::string::npos);

  args.push_back(R"(llm_int8_skip_modules=["classifier"])");
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto eval = last_eval(out);
  EXPECT_LT(eval["eval_loss"].get<double>(), 0.7) << eval.dump();  // chance: ln 3 = 1.10
  EXPECT_GE(eval["eval_accuracy"].get<double>(), 0.6) << eval.dump();

  LoadOptions o;
  o.load_in_4bit = Load4bit{"nf4", false, 64, at::kFloat, {"classifier"}};
  auto base = load_model(dir.string(), o);
  int four_bit = 0;
  for (auto& [name, m] : base->named_modules())
    if (auto* l = dynamic_cast<Linear*>(m); l && l->weight_4bit) {
      EXPECT_NE(name, "classifier");
      ++four_bit;
    }
  EXPECT_EQ(four_bit, 2 * 6 + 1);  // two layers of q, k, v, attention output, intermediate, output; the pooler
  PeftModel peft(base);
  peft.load_adapter(out.string());
  const SafetensorsFile ref((dir / "reference.safetensors").string());
  const auto ours = test::write_outputs(ref, "logits", run(peft, ref).logits, out / "ours.safetensors");
  int status = -1;
  const auto said = test::run_parity_script("make_qlora.py", "check " + dir.string() + " " + out.string() + " " +
                                                                  ours.string() + " --quant-type nf4 --skip-modules classifier",
                                            &status);
  EXPECT_EQ(status, 0) << said;
}

// `peft quantize --skip-modules classifier` writes llm_int8_skip_modules into the folder's
// quantization_config, and transformers + bitsandbytes load the folder as it is, keeping the
// head full precision, with our 4-bit model's logits.
TEST(QloraClassifier, QuantizedFolderRecordsSkippedModulesForTransformers) {
  const fs::path dir = case_dir("deberta_v3_cls"), out = fs::path(PEFT_SCRATCH_DIR) / "deberta_nf4";
  fs::remove_all(out);
  const auto r = test::run_cli({"quantize", dir.string(), out.string(), "--skip-modules", "classifier"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("kept in float32: classifier (--skip-modules)"), std::string::npos) << r.output;
  const auto cfg = nlohmann::json::parse(std::ifstream(out / "config.json"));
  EXPECT_EQ(cfg["quantization_config"]["llm_int8_skip_modules"], nlohmann::json::array({"classifier"}));
  PeftModel peft(load_model(out.string()));
  const SafetensorsFile ref((dir / "reference.safetensors").string());
  const auto ours = test::write_outputs(ref, "logits", run(peft, ref).logits, out / "ours.safetensors");
  int status = -1;
  const auto said = test::run_parity_script("make_qlora.py", "check " + out.string() + " - " + ours.string(), &status);
  EXPECT_EQ(status, 0) << said;
}

// Hostile llm_int8_skip_modules, from `peft train` and from a 4-bit folder's
// quantization_config: one line naming the key, no signal.
TEST(QloraClassifier, HostileSkipModulesAreRefusedByKey) {
  const fs::path dir = case_dir("deberta_v3_cls"), data = case_dir("");
  for (const auto& [value, says] : std::vector<std::pair<std::string, std::string>>{
           {R"(["(unclosed"])", "llm_int8_skip_modules: '(unclosed' is not a valid regular expression"},
           {R"([""])", "llm_int8_skip_modules: an empty or over-long module pattern"},
           {R"("classifier")", "'llm_int8_skip_modules' must be a list of names"},
           {"[1]", "'llm_int8_skip_modules' entries must be a string"}}) {
    const auto r = test::run_cli({"train", "model=" + dir.string(), "train_file=" + (data / "cls_train.jsonl").string(),
                                  "output_dir=" + (fs::path(PEFT_SCRATCH_DIR) / "deberta_skip_bad").string(),
                                  "max_steps=1", "progress=false", "load_in_4bit=true",
                                  "llm_int8_skip_modules=" + value, R"(method={"task_type": "SEQ_CLS"})"});
    EXPECT_EQ(r.exit_code, 1) << value << ": " << r.output;
    EXPECT_NE(r.output.find(says), std::string::npos) << value << ": " << r.output;
  }
  const fs::path folder = fs::path(PEFT_SCRATCH_DIR) / "deberta_nf4_bad";
  fs::remove_all(folder);
  ASSERT_EQ(test::run_cli({"quantize", dir.string(), folder.string(), "--skip-modules", "classifier"}).exit_code, 0);
  const auto good = nlohmann::json::parse(std::ifstream(folder / "config.json"));
  for (const auto& [value, says] : std::vector<std::pair<nlohmann::json, std::string>>{
           {5, "quantization_config.llm_int8_skip_modules: expected a list of module names"},
           {nlohmann::json::array({1}), "quantization_config.llm_int8_skip_modules: expected module names, got 1"},
           {nlohmann::json::array({"[z-a]"}), "llm_int8_skip_modules: '[z-a]' is not a valid regular expression"}}) {
    auto cfg = good;
    cfg["quantization_config"]["llm_int8_skip_modules"] = value;
    std::ofstream(folder / "config.json") << cfg.dump();
    const auto r = test::run_cli({"inspect", folder.string()});
    EXPECT_EQ(r.exit_code, 1) << value << ": " << r.output;
    EXPECT_NE(r.output.find(says), std::string::npos) << value << ": " << r.output;
  }
}

// The reference outputs of a case folder copied to scratch with config.json edited.
ModelOutputs run_edited(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
  const fs::path dir = fs::path(PEFT_SCRATCH_DIR) / (name + "_edited");
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"model.safetensors", "reference.safetensors"}) fs::copy_file(case_dir(name) / f, dir / f);
  auto cfg = nlohmann::json::parse(std::ifstream(case_dir(name) / "config.json"));
  edit(cfg);
  std::ofstream(dir / "config.json") << cfg.dump();
  const SafetensorsFile ref((dir / "reference.safetensors").string());
  PeftModel peft(load_model(dir.string()));
  return run(peft, ref);
}

// pos_att_type as the "|"-separated string older configs hold (deberta-v2-xlarge's
// "p2c|c2p") reads as the list; with one type left out the outputs change.
TEST(DebertaV2, PosAttTypeStringReadsAsTheList) {
  const SafetensorsFile ref((case_dir("deberta_v3") / "reference.safetensors").string());
  expect_match(ref, run_edited("deberta_v3", [](nlohmann::json& c) { c["pos_att_type"] = "P2C | c2p"; }), "");
  const auto c2p_only = run_edited("deberta_v3", [](nlohmann::json& c) { c["pos_att_type"] = "c2p"; });
  EXPECT_GT(max_diff(c2p_only.last_hidden_state, ref.get("last_hidden_state"), ref.get("attention_mask")), 5 * kTol);
}

// Checkpointed layers (recomputed in backward) give the gradients of kept ones for every
// parameter, DeBERTa's relative embeddings' LayerNorm and first layer's convolution included.
// ModernBERT: its local and global layers with their own masks and rotary angles.
TEST(EncoderLayers, GradientCheckpointingGivesTheSameGradients) {
  const std::map<std::string, std::string> must_train = {{"deberta_v3", "encoder.LayerNorm.weight"},
                                                        {"deberta_v2", "encoder.conv.conv.weight"},
                                                        {"deberta_v1", "encoder.layer.1.attention.self.q_bias"},
                                                        {"modernbert", "layers.1.attn_norm.weight"}};
  for (const auto& [name, key] : must_train) {
    SCOPED_TRACE(name);
    const SafetensorsFile ref((case_dir(name) / "reference.safetensors").string());
    auto grads = [&](bool checkpoint) {
      auto model = load_model(case_dir(name).string());
      for (auto& [n, p] : model->named_parameters()) p.requires_grad_(true);
      ModelInputs in;
      in.input_ids = ref.get("input_ids");
      in.attention_mask = ref.get("attention_mask");
      in.checkpoint_layers = checkpoint;
      const auto h = model->forward(in).last_hidden_state;
      (h * at::linspace(-1, 1, h.numel()).view(h.sizes())).sum().backward();
      std::map<std::string, at::Tensor> g;
      for (auto& [n, p] : model->named_parameters()) g[n] = p.grad().defined() ? p.grad().clone() : at::Tensor();
      return g;
    };
    const auto kept = grads(false), recomputed = grads(true);
    ASSERT_EQ(kept.size(), recomputed.size());
    for (const auto& [n, g] : kept) {
      ASSERT_TRUE(g.defined()) << n;
      ASSERT_TRUE(recomputed.at(n).defined()) << n;
      EXPECT_LE((recomputed.at(n) - g).abs().max().item<double>(), 1e-5 * (1 + g.abs().max().item<double>())) << n;
    }
    EXPECT_TRUE(kept.count(key));
  }
}

// With no target_modules, LoRA and (IA)3 (and its feedforward modules) pick the
// modules HF PEFT's tables give deberta-v2 and deberta: the fixtures' adapters were made with the
// defaults and their adapter_config.json records what PEFT chose.
TEST(DebertaV2, DefaultTargetsFollowPeft) {
  auto leaf_names = [](const auto& list) {
    std::set<std::string> out;
    for (const auto& t : list) out.insert(t.template get<std::string>());
    return out;
  };
  for (const auto& [name, method] : std::vector<std::pair<std::string, std::string>>{
           {"deberta_v3", "lora"}, {"deberta_v3", "ia3"}, {"deberta_v1", "lora"}, {"deberta_v1", "ia3"}}) {
    SCOPED_TRACE(name + " " + method);
    const auto hf = nlohmann::json::parse(std::ifstream(case_dir(name) / "adapters" / method / "adapter_config.json"));
    nlohmann::ordered_json ours = {{"peft_type", hf["peft_type"]}};
    PeftModel peft(load_model(case_dir(name).string()));
    peft.add_adapter("default", *parse_user_adapter_config(ours, "test"));
    const auto saved = peft.config("default").to_json();
    EXPECT_EQ(leaf_names(saved["target_modules"]), leaf_names(hf["target_modules"]));
    if (hf.contains("feedforward_modules"))
      EXPECT_EQ(leaf_names(saved["feedforward_modules"]), leaf_names(hf["feedforward_modules"]));
  }
}

// Each edit of `base` is refused by build_model in one line holding its key.
void expect_refused_by_key(const nlohmann::json& base, const std::vector<std::pair<nlohmann::json, std::string>>& bad) {
  for (const auto& [edit, key] : bad) {
    nlohmann::json j = base;
    j.update(edit);
    try {
      build_model(j, "config.json");
      ADD_FAILURE() << edit.dump() << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << edit.dump() << ": " << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << e.what();
    }
  }
}

// Settings transformers would divide by zero or mis-shape with are refused, naming the key.
TEST(DebertaV2, HostileConfigsAreRefusedByKey) {
  const nlohmann::json base = {{"architectures", {"DebertaV2ForSequenceClassification"}},
                               {"model_type", "deberta-v2"}, {"vocab_size", 50}, {"hidden_size", 16},
                               {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"intermediate_size", 24},
                               {"max_position_embeddings", 16}, {"relative_attention", true}};
  build_model(base, "config.json");  // the base itself is fine
  const std::vector<std::pair<nlohmann::json, std::string>> bad = {
      {{{"position_buckets", 1}}, "position_buckets"},
      {{{"position_buckets", 30}}, "position_buckets"},
      {{{"max_relative_positions", int64_t{1} << 40}}, "max_relative_positions"},
      {{{"conv_kernel_size", 2}}, "conv_kernel_size"},
      {{{"conv_kernel_size", 3}, {"conv_groups", 5}}, "conv_groups"},
      {{{"pos_att_type", 7}}, "pos_att_type"},
      {{{"pos_att_type", {"c2p", 1}}}, "pos_att_type"},
      {{{"pooler_hidden_size", 8}}, "pooler_hidden_size"},
      {{{"attention_head_size", 0}}, "attention_head_size"},
      {{{"type_vocab_size", -1}}, "type_vocab_size"},
      {{{"conv_act", "nope"}}, "nope"},
  };
  expect_refused_by_key(base, bad);
}

// Configs as the released ModernBERT checkpoints hold them (transformers 4: no layer_types
// or rope_parameters; global_attn_every_n_layers, global_rope_theta, local_rope_theta) read
// as the same model; a wider local window or another rotary base changes the outputs, so
// both are in use.
TEST(ModernBert, OlderConfigKeysReadAsTheSameModel) {
  const SafetensorsFile ref((case_dir("modernbert") / "reference.safetensors").string());
  expect_match(ref, run_edited("modernbert", [](nlohmann::json& c) {
                 c.erase("layer_types");
                 c.erase("rope_parameters");
                 c["global_rope_theta"] = 160000.0;
                 c["local_rope_theta"] = 10000.0;
               }), "");
  const auto h = ref.get("last_hidden_state");
  const auto mask = ref.get("attention_mask");
  const auto wide = run_edited("modernbert", [](nlohmann::json& c) { c["local_attention"] = 64; });
  EXPECT_GT(max_diff(wide.last_hidden_state, h, mask), 5 * kTol);
  for (const char* key : {"global_rope_theta", "local_rope_theta"}) {
    const auto theta = run_edited("modernbert", [key](nlohmann::json& c) {
      c.erase("rope_parameters");
      c[key] = 10.0;
    });
    EXPECT_GT(max_diff(theta.last_hidden_state, h, mask), 5 * kTol) << key;
  }
}

// A headless ModernBertModel checkpoint built as a classifier gets transformers' fresh head:
// the prediction head's LayerNorm at ones (not drawn like a Linear weight), and finite logits.
TEST(ModernBert, ClassifierOnHeadlessCheckpointStartsWithNormAtOnes) {
  LoadOptions opts;
  opts.architecture = "ModernBertForSequenceClassification";
  opts.num_labels = 2;
  auto model = load_model(case_dir("modernbert").string(), opts);
  auto params = model->named_parameters();
  std::map<std::string, at::Tensor> by_name(params.begin(), params.end());
  ASSERT_TRUE(by_name.count("head.norm.weight"));
  EXPECT_TRUE(at::equal(by_name.at("head.norm.weight"), at::ones({32})));
  EXPECT_FALSE(by_name.count("head.norm.bias"));  // norm_bias false: no bias at all
  const SafetensorsFile ref((case_dir("modernbert") / "reference.safetensors").string());
  PeftModel peft(model);
  const auto logits = run(peft, ref).logits;
  EXPECT_EQ(logits.sizes(), (at::IntArrayRef{3, 2}));
  EXPECT_TRUE(at::isfinite(logits).all().item<bool>());
  EXPECT_GT(logits.abs().max().item<double>(), 1e-3);
}

// Prompt tuning on the mean-pooled classifier: the virtual tokens count in the mean as the
// mask HF PEFT extends says; `peft train` learns, and HF PEFT loads the prompt with our logits.
TEST(ModernBert, PromptTuningOnMeanPoolingLoadsInHfPeft) {
  const fs::path dir = case_dir("modernbert_cls"), data = case_dir("");
  const fs::path out = fs::path(PEFT_SCRATCH_DIR) / "modernbert_prompt";
  fs::remove_all(out);
  auto r = test::run_cli({"train", "model=" + dir.string(), "train_file=" + (data / "cls_train.jsonl").string(),
                          "eval_file=" + (data / "cls_eval.jsonl").string(), "output_dir=" + out.string(),
                          "max_steps=20", "learning_rate=1e-2", "eval_steps=20", "progress=false",
                          R"(method={"peft_type": "PROMPT_TUNING", "task_type": "SEQ_CLS", "num_virtual_tokens": 4})"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(std::isfinite(last_eval(out)["eval_loss"].get<double>()));
  const SafetensorsFile ref((dir / "reference.safetensors").string());
  test::expect_classifier_adapter_matches_hf(dir, out, ref.get("input_ids"), ref.get("attention_mask"));
}

// Settings transformers would mis-shape or reject are refused, naming the key.
TEST(ModernBert, HostileConfigsAreRefusedByKey) {
  const nlohmann::json base = {{"architectures", {"ModernBertForSequenceClassification"}},
                               {"model_type", "modernbert"}, {"vocab_size", 50}, {"hidden_size", 16},
                               {"num_hidden_layers", 2}, {"num_attention_heads", 2}, {"intermediate_size", 24},
                               {"pad_token_id", 0}};
  build_model(base, "config.json");  // the base itself is fine
  const std::vector<std::pair<nlohmann::json, std::string>> bad = {
      {{{"layer_types", {"full_attention"}}}, "layer_types"},
      {{{"layer_types", {"full_attention", "chunked_attention"}}}, "chunked_attention"},
      {{{"layer_types", "full_attention"}}, "layer_types"},
      {{{"global_attn_every_n_layers", 0}}, "global_attn_every_n_layers"},
      {{{"local_attention", 0}}, "local_attention"},
      {{{"local_attention", -4}}, "local_attention"},
      {{{"classifier_pooling", "max"}}, "classifier_pooling"},
      {{{"rope_parameters", 3}}, "rope_parameters"},
      {{{"rope_parameters", {{"full_attention", "x"}}}}, "rope_parameters.full_attention"},
      {{{"rope_parameters", {{"sliding_attention", {{"rope_type", "yarn"}}}}}}, "rope_parameters"},
      {{{"global_rope_theta", -1.0}}, "global_rope_theta"},
      {{{"num_attention_heads", 3}}, "num_attention_heads"},
      {{{"hidden_size", 18}, {"num_attention_heads", 6}}, "rotary"},
      {{{"hidden_activation", "nope"}}, "nope"},
      {{{"norm_eps", 0.0}}, "norm_eps"},
  };
  expect_refused_by_key(base, bad);
}

}  // namespace
}  // namespace peft
