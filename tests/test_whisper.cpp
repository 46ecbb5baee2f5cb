// WhisperForConditionalGeneration against transformers and HF PEFT (fixtures from
// tests/parity/make_whisper.py, a random tiny Whisper): encoder output, logits and the loss
// with labels, cached decoding, greedy generation with the prompt transformers forces
// (language detected or given, task, <|notimestamps|>) and its token suppression, HF
// PEFT's LoRA (unmerged and merged), ours read by HF PEFT, bottleneck adapters placed in
// the audio encoder and trained, and bad input refused by name.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "peft/generate.h"
#include "peft/model.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/seq2seq.h"
#include "peft/tuner.h"
#include "peft/whisper.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;  // fp32 logits against transformers / HF PEFT

fs::path base_dir() { return fs::path(PEFT_WHISPER_DIR) / "whisper_tiny"; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "whisper" / name;
  fs::create_directories(p.parent_path());
  return p;
}
SafetensorsFile reference(const fs::path& dir) { return SafetensorsFile((dir / "reference.safetensors").string()); }

Seq2SeqInputs inputs_of(const SafetensorsFile& ref) {
  Seq2SeqInputs in;
  in.input_features = ref.get("input_features");
  in.decoder_input_ids = ref.get("decoder_input_ids");
  return in;
}

at::Tensor logits_of(Model& model, const SafetensorsFile& ref) {
  c10::InferenceMode guard;
  return as_seq2seq(model)->forward_seq2seq(inputs_of(ref)).logits;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().max().item<double>();
}

double loss_of(const at::Tensor& logits, const at::Tensor& labels) {
  return at::cross_entropy_loss(logits.reshape({-1, logits.size(-1)}).to(at::kFloat), labels.reshape({-1}), {},
                                at::Reduction::Mean, -100)
      .item<double>();
}

TEST(Whisper, EncoderLogitsAndLossMatchTransformers) {
  const auto ref = reference(base_dir());
  auto model = load_model(base_dir().string());
  auto* s2s = as_seq2seq(*model);
  ASSERT_NE(s2s, nullptr);
  // transformers shifts the labels right behind decoder_start_token_id, -100 -> pad.
  EXPECT_TRUE(at::equal(shift_right(ref.get("labels"), s2s->decoder_start_token_id(), s2s->pad_token_id()),
                        ref.get("decoder_input_ids")));
  c10::InferenceMode guard;
  const auto out = s2s->forward_seq2seq(inputs_of(ref));
  const double enc = max_diff(out.encoder_last_hidden_state, ref.get("encoder_last_hidden_state"));
  const double logits = max_diff(out.logits, ref.get("logits"));
  const double loss = std::abs(loss_of(out.logits, ref.get("labels")) - ref.get("loss").item<double>());
  EXPECT_LE(enc, kLogitTol);
  EXPECT_LE(logits, kLogitTol);
  EXPECT_LE(loss, 1e-5);
  std::cerr << "whisper_tiny: max |encoder states - transformers| " << enc << ", |logits - transformers| " << logits
            << ", |loss - transformers| " << loss << "\n";
}

TEST(Whisper, CachedStepsEqualTheFullForward) {
  const auto ref = reference(base_dir());
  auto model = load_model(base_dir().string());
  c10::InferenceMode guard;
  Seq2SeqCache cache;
  auto in = inputs_of(ref);
  const auto dec = in.decoder_input_ids;
  in.cache = &cache;
  std::vector<at::Tensor> steps;
  for (int64_t t = 0; t < dec.size(1); ++t) {
    in.decoder_input_ids = dec.narrow(1, t, 1);
    const auto o = as_seq2seq(*model)->forward_seq2seq(in);
    in.encoder_hidden_states = o.encoder_last_hidden_state;  // the encoder runs once
    in.input_features = at::Tensor();
    steps.push_back(o.logits);
  }
  EXPECT_EQ(cache.length(), dec.size(1));
  EXPECT_LE(max_diff(at::cat(steps, 1), ref.get("logits")), kLogitTol);
}

TEST(Whisper, ParametersHaveTransformersNamesAndCount) {
  auto model = load_model(base_dir().string());
  EXPECT_EQ(model->num_parameters(), reference(base_dir()).get("num_parameters").item<int64_t>());
  std::vector<std::string> names;
  for (const auto& [n, _] : model->named_parameters()) names.push_back(n);
  EXPECT_EQ(names.front(), "model.encoder.conv1.weight");
  for (const char* n : {"model.encoder.embed_positions.weight", "model.encoder.layers.1.self_attn.v_proj.bias",
                        "model.encoder.layer_norm.bias", "model.decoder.embed_positions.weight",
                        "model.decoder.layers.1.encoder_attn.q_proj.weight",
                        "model.decoder.layers.0.encoder_attn_layer_norm.weight", "model.decoder.layer_norm.weight"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  // k_proj has no bias; proj_out is decoder.embed_tokens (one tensor, one name).
  EXPECT_EQ(std::find(names.begin(), names.end(), "model.encoder.layers.0.self_attn.k_proj.bias"), names.end());
  EXPECT_EQ(std::find(names.begin(), names.end(), "proj_out.weight"), names.end());
}

// The prompt transformers builds from generation_config.json (forced_decoder_ids [[1,
// null], [2, transcribe]]: the language detected from the audio), then 12 greedy tokens
// with suppress_tokens and begin_suppress_tokens; and with language "de", task "translate".
TEST(Whisper, GreedyGenerationMatchesTransformers) {
  const auto ref = reference(base_dir());
  auto model = load_model(base_dir().string());
  auto wcfg = WhisperGenerationConfig::load(base_dir().string());
  EXPECT_EQ(wcfg.suppress_tokens.size(), 5u);
  GenerationConfig cfg;
  cfg.max_new_tokens = 12;
  const auto features = ref.get("input_features");
  for (const auto& [key, language, task] : std::vector<std::array<std::string, 3>>{
           {"gen_default", "", ""}, {"gen_de_translate", "de", "translate"}}) {
    SCOPED_TRACE(key);
    wcfg.language = language;
    wcfg.task = task;
    const auto want = ref.get(key);
    ASSERT_EQ(want.size(1), 4 + 12);  // start, language, task, <|notimestamps|>, 12 tokens
    const auto rows = generate_whisper(*model, features, wcfg, cfg);
    ASSERT_EQ(rows.size(), 2u);
    for (int64_t b = 0; b < 2; ++b) {
      std::vector<int64_t> w(want[b].data_ptr<int64_t>(), want[b].data_ptr<int64_t>() + want.size(1));
      EXPECT_EQ(rows[b], w) << "row " << b;
    }
  }
  // A language outside lang_to_id is refused by name.
  wcfg.language = "xx";
  try {
    (void)generate_whisper(*model, features, wcfg, cfg);
    ADD_FAILURE() << "accepted language xx";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("'xx'"));
  }
}

// HF PEFT's LoRA on q_proj / v_proj of both stacks (cross-attention included).
TEST(WhisperAdapters, HfLoraMatchesPeftUnmergedAndMerged) {
  const auto dir = base_dir() / "lora";
  const auto ref = reference(dir);
  PeftModel peft(load_model(base_dir().string()));
  peft.load_adapter(dir.string());
  const double unmerged = max_diff(logits_of(peft.model(), ref), ref.get("logits"));
  peft.merge();
  const double merged = max_diff(logits_of(peft.model(), ref), ref.get("merged_logits"));
  EXPECT_LE(unmerged, kLogitTol);
  EXPECT_LE(merged, kLogitTol);
  std::cerr << "whisper lora: max |logits - HF PEFT| unmerged " << unmerged << ", merged " << merged << "\n";
}

// Adapters made here load in HF PEFT with the same logits: LoRA on q_proj / v_proj with
// random factors, and all-linear (every Linear but proj_out, as HF PEFT picks them).
TEST(WhisperAdapters, OursLoadInHfPeftWithTheSameLogits) {
  const auto ref = reference(base_dir());
  std::vector<std::array<std::string, 3>> cases;
  for (const auto& [name, config] : std::vector<std::pair<std::string, const char*>>{
           {"lora_qv", R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "init_lora_weights": false,
                          "target_modules": ["q_proj", "v_proj"]})"},
           {"lora_all_linear", R"({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "init_lora_weights": false,
                                  "target_modules": "all-linear"})"}}) {
    PeftModel peft(load_model(base_dir().string()));
    peft.add_adapter("default", *parse_user_adapter_config(json::parse(config), "test"), 5);
    std::set<std::string> keys;
    for (const auto& [k, _] : peft.adapter_state_dict("default")) keys.insert(k);
    EXPECT_TRUE(keys.count("base_model.model.model.decoder.layers.1.encoder_attn.v_proj.lora_B.weight")) << name;
    EXPECT_FALSE(keys.count("base_model.model.proj_out.lora_A.weight")) << name;
    EXPECT_EQ(keys.count("base_model.model.model.encoder.layers.0.fc1.lora_A.weight"), name == "lora_all_linear");
    const auto dir = scratch(name);
    fs::remove_all(dir);
    peft.save_adapter(dir.string());
    const auto logits = logits_of(peft.model(), ref);
    EXPECT_GT(max_diff(logits, ref.get("logits")), 1e-2) << name;  // the adapter does something
    const auto outputs = scratch(name + "_outputs.safetensors");
    save_safetensors(outputs.string(), {{"input_features", ref.get("input_features")},
                                        {"decoder_input_ids", ref.get("decoder_input_ids")},
                                        {"logits", logits.to(at::kFloat).contiguous()}});
    cases.push_back({base_dir().string(), dir.string(), outputs.string()});
  }
  std::string args;
  for (const auto& c : cases) args += " " + c[0] + " " + c[1] + " " + c[2];
  int status = 0;
  const std::string log = test::run_parity_script("make_whisper.py", "check" + args, &status);
  EXPECT_EQ(status, 0) << log;
  std::cerr << log;
}

// Houlsby bottleneck adapters go after the audio encoder layers' attention output and
// fc2 (none in the decoder), start as the identity, and train: the loss of a fixed batch
// falls with Adam on the adapters alone; saved and loaded they give the same logits.
TEST(WhisperAdapters, BottleneckAdaptersInTheEncoderTrain) {
  const auto ref = reference(base_dir());
  PeftModel peft(load_model(base_dir().string()));
  peft.add_adapter("default", *parse_user_adapter_config(
                                  json::parse(R"({"peft_type": "BOTTLENECK", "adapter_type": "houlsby"})"), "test"));
  std::set<std::string> hosts;
  for (const auto& [k, _] : peft.adapter_state_dict("default")) hosts.insert(k.substr(0, k.find(".adapter_")));
  EXPECT_EQ(hosts, (std::set<std::string>{"base_model.model.model.encoder.layers.0.self_attn.out_proj",
                                          "base_model.model.model.encoder.layers.0.fc2",
                                          "base_model.model.model.encoder.layers.1.self_attn.out_proj",
                                          "base_model.model.model.encoder.layers.1.fc2"}))
      << hosts.size() << " hosts, first " << *hosts.begin();
  EXPECT_EQ(peft.config("default").to_json()["bottleneck_size"], 4);  // d_model 64 / reduction_factor 16
  EXPECT_LE(max_diff(logits_of(peft.model(), ref), ref.get("logits")), kLogitTol);  // zero up-projection

  peft.train(true);
  auto params = peft.trainable_tensors();
  ASSERT_EQ(params.size(), 16u);  // 4 hosts x (down, up) x (weight, bias)
  std::vector<at::Tensor> m(params.size()), v(params.size());
  for (size_t i = 0; i < params.size(); ++i) m[i] = at::zeros_like(params[i]), v[i] = at::zeros_like(params[i]);
  const auto labels = ref.get("labels");
  std::vector<double> losses;
  const double lr = 1e-2, b1 = 0.9, b2 = 0.999;
  for (int step = 1; step <= 30; ++step) {
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    const auto loss = at::cross_entropy_loss(
        as_seq2seq(peft.model())->forward_seq2seq(inputs_of(ref)).logits.reshape({-1, 120}), labels.reshape({-1}), {},
        at::Reduction::Mean, -100);
    loss.backward();
    losses.push_back(loss.item<double>());
    c10::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {  // Adam
      const auto g = params[i].grad();
      m[i].mul_(b1).add_(g, 1 - b1);
      v[i].mul_(b2).addcmul_(g, g, 1 - b2);
      const auto mh = m[i] / (1 - std::pow(b1, step)), vh = v[i] / (1 - std::pow(b2, step));
      params[i].sub_(lr * mh / (vh.sqrt() + 1e-8));
    }
  }
  EXPECT_LT(losses.back(), losses.front() - 1.0) << "loss " << losses.front() << " -> " << losses.back();
  std::cerr << "whisper houlsby: batch loss " << losses.front() << " -> " << losses.back() << " in 30 steps\n";
  peft.train(false);
  const auto dir = scratch("houlsby");
  fs::remove_all(dir);
  peft.save_adapter(dir.string());
  PeftModel again(load_model(base_dir().string()));
  again.load_adapter(dir.string());
  EXPECT_LE(max_diff(logits_of(again.model(), ref), logits_of(peft.model(), ref)), 1e-6);
}

TEST(WhisperModels, BadInputIsRefusedByName) {
  auto model = load_model(base_dir().string());
  auto* s2s = as_seq2seq(*model);
  auto refused = [&](const Seq2SeqInputs& in, const char* what) {
    try {
      (void)s2s->forward_seq2seq(in);
      ADD_FAILURE() << "accepted, expected: " << what;
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), HasSubstr(what));
    }
  };
  Seq2SeqInputs in;
  in.decoder_input_ids = at::full({1, 1}, 100, at::kLong);
  in.input_features = at::zeros({1, 80, 50});
  refused(in, "60 frames");
  in.input_features = at::zeros({1, 80, 60});
  in.input_ids = at::ones({1, 3}, at::kLong);
  refused(in, "input_features");
  in.input_ids = at::Tensor();
  in.decoder_input_ids = at::full({1, 41}, 3, at::kLong);  // max_target_positions 40
  refused(in, "max_target_positions");
  in.decoder_input_ids = at::full({1, 1}, 120, at::kLong);  // vocabulary 120
  refused(in, "out of range");
  ModelInputs one;
  one.input_ids = at::ones({1, 3}, at::kLong);
  EXPECT_THROW((void)model->forward(one), std::invalid_argument);

  json cfg = json::parse(std::ifstream(base_dir() / "config.json"));
  cfg["decoder_attention_heads"] = 5;
  try {
    (void)build_model(cfg, "cfg.json");
    ADD_FAILURE() << "accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("decoder_attention_heads"));
  }
  json gen = json::parse(std::ifstream(base_dir() / "generation_config.json"));
  gen["forced_decoder_ids"] = json::array({json::array({1, "x"})});
  EXPECT_THROW((void)WhisperGenerationConfig::from_json(gen, "gen.json"), std::runtime_error);
}

}  // namespace
}  // namespace peft
