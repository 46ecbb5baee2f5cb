// The PEFT methods beyond LoRA.
//  - Against HF PEFT (fixtures from tests/parity/make_tuners.py): IA3, LN tuning, prompt
//    tuning, P-tuning, prefix tuning, LoHa and LoKr adapters made by PEFT load here with PEFT's
//    outputs, ours load in PEFT, merges match, generation with the cache matches, and
//    our prompt encoders compute what PEFT's do.
//  - Methods HF PEFT lacks (bottleneck adapters, AdaptFormer, SSF, BitFit, VPT) against
//    tests/parity/tuner_reference.py, plain PyTorch from the papers' equations.
//  - Zero-init (the base model's output at step 0), SSF merging, bad input.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/generate.h"
#include "peft/layers.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

using test::inputs_of;
using test::mask_of;
using test::max_diff;
using test::output_key;
using test::output_of;

constexpr double kLogitTol = 1e-4;  // fp32 outputs vs the references

fs::path parity(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / name; }
fs::path case_dir(const std::string& c) { return fs::path(PEFT_PARITY_DIR).parent_path() / "parity_tuners" / c; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "tuners" / name;
  fs::create_directories(p.parent_path());
  return p;
}
json case_info(const std::string& c) { return json::parse(std::ifstream(case_dir(c) / "case.json")); }
fs::path base_of(const std::string& c) { return parity(case_info(c)["base"].get<std::string>()); }

// --- HF PEFT fixtures ------------------------------------------------------------------

class HfTunerParity : public ::testing::TestWithParam<std::string> {};

TEST_P(HfTunerParity, HfAdapterLoadsAndMatchesPeft) {
  c10::InferenceMode guard;
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  PeftModel peft(load_model(base_of(GetParam()).string()));
  peft.load_adapter((case_dir(GetParam()) / "adapter").string());
  const auto key = output_key(ref);
  EXPECT_LE(max_diff(output_of(peft.forward(inputs_of(ref)), key), ref.get(key), mask_of(ref)), kLogitTol);
  // Disabled, it is the base model again.
  auto base_out = output_of(load_model(base_of(GetParam()).string())->forward(inputs_of(ref)), key);
  auto off = peft.disable_adapters();
  EXPECT_LE(max_diff(output_of(peft.forward(inputs_of(ref)), key), base_out, mask_of(ref)), 1e-6);
}

TEST_P(HfTunerParity, SavedHereLoadsInPeftWithSameOutputs) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  test::expect_resave_round_trip(base_of(GetParam()), case_dir(GetParam()) / "adapter", ref,
                                 scratch("resaved_" + GetParam()), scratch("out_" + GetParam() + ".safetensors"),
                                 kLogitTol);
}

TEST_P(HfTunerParity, TrainableLineMatchesPeft) {
  auto j = nlohmann::ordered_json::parse(case_info(GetParam())["adapter_config"].dump());
  auto cfg = parse_adapter_config(j, "case.json");
  cfg->inference_mode = false;  // as PEFT counted it: a fresh, trainable adapter
  PeftModel peft(load_model(base_of(GetParam()).string()));
  peft.add_adapter("default", *cfg);
  std::string want;
  std::getline(std::ifstream(case_dir(GetParam()) / "trainable.txt"), want);
  EXPECT_EQ(peft.trainable_parameters_line(), want);
}

const std::vector<std::string> kHfCases = {
    "ia3_llama",          "ia3_gpt2",           "ia3_bert_cls",      "ln_tuning_llama",       "ln_tuning_bert_cls",
    "prompt_tuning_llama", "prompt_tuning_text_gpt2", "prompt_tuning_bert_cls", "p_tuning_mlp_llama",
    "p_tuning_lstm_gpt2", "prefix_llama",       "prefix_proj_gpt2",  "prefix_gqa",        "prefix_bert_cls", "loha_llama",
    "lokr_llama",         "lokr_decompose_both_llama"};
INSTANTIATE_TEST_SUITE_P(Tuners, HfTunerParity, ::testing::ValuesIn(kHfCases));

class HfMergeParity : public ::testing::TestWithParam<std::string> {};

TEST_P(HfMergeParity, MergedEqualsUnmergedAndPeftsMerge) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  test::expect_merge_round_trip(base_of(GetParam()), case_dir(GetParam()) / "adapter", ref, kLogitTol, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Tuners, HfMergeParity,
                         ::testing::Values("ia3_llama", "ia3_gpt2", "loha_llama", "lokr_llama", "lokr_decompose_both_llama"));

class HfGeneration : public ::testing::TestWithParam<std::string> {};

// Greedy generation with the KV cache: prefixes sit in the cache from the first step on,
// soft prompts are prepended once; the ids must be PEFT's.
TEST_P(HfGeneration, GreedyWithCacheMatchesPeft) {
  auto g = json::parse(std::ifstream(case_dir(GetParam()) / "generation.json"));
  PeftModel peft(load_model(base_of(GetParam()).string()));
  peft.load_adapter((case_dir(GetParam()) / "adapter").string());
  GenerationConfig gc;
  gc.max_new_tokens = g["max_new_tokens"].get<int64_t>();
  auto out = generate(peft.model(), g["prompts"].get<std::vector<std::vector<int64_t>>>(), gc);
  EXPECT_EQ(out, g["outputs"].get<std::vector<std::vector<int64_t>>>());
}

INSTANTIATE_TEST_SUITE_P(Tuners, HfGeneration,
                         ::testing::Values("prefix_llama", "prefix_proj_gpt2", "prefix_gqa", "prompt_tuning_llama",
                                           "p_tuning_mlp_llama"));

class HfPromptEncoder : public ::testing::TestWithParam<std::string> {};

// PEFT saves a prompt encoder's output only; given the encoder's own weights (MLP, LSTM,
// prefix projection), ours must compute that output.
TEST_P(HfPromptEncoder, EncoderOutputIsTheSavedEmbedding) {
  c10::InferenceMode guard;
  auto j = nlohmann::ordered_json::parse(case_info(GetParam())["adapter_config"].dump());
  auto cfg = parse_adapter_config(j, "case.json");
  cfg->inference_mode = false;
  PeftModel peft(load_model(base_of(GetParam()).string()));
  peft.add_adapter("default", *cfg);
  SafetensorsFile enc((case_dir(GetParam()) / "encoder.safetensors").string());
  int filled = 0;
  peft.input_adapter("default")->visit_slots([&](const std::string& name, Module::ParamSlot& s) {
    ASSERT_TRUE(enc.contains(name)) << name;
    *s.tensor = enc.get(name).clone();
    ++filled;
  });
  EXPECT_EQ(filled, static_cast<int>(enc.names().size()));
  SafetensorsFile saved((case_dir(GetParam()) / "adapter" / "adapter_model.safetensors").string());
  auto ours = peft.input_adapter("default")->saved_tensors();
  ASSERT_EQ(ours.size(), 1u);
  EXPECT_EQ(ours[0].first, "prompt_embeddings");
  EXPECT_LE((ours[0].second - saved.get("prompt_embeddings")).abs().max().item<double>(), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Tuners, HfPromptEncoder,
                         ::testing::Values("p_tuning_mlp_llama", "p_tuning_lstm_gpt2", "prefix_proj_gpt2"));

// --- methods without an HF reference --------------------------------------------------

struct OwnCase {
  std::string name, base;
  const char* config;
};

const std::vector<OwnCase> kOwnCases = {
    {"houlsby_llama", "llama_mha", R"({"peft_type": "BOTTLENECK", "adapter_type": "houlsby", "bottleneck_size": 8})"},
    {"houlsby_bert_cls", "bert_cls",
     R"({"peft_type": "BOTTLENECK", "adapter_type": "houlsby", "reduction_factor": 4, "task_type": "SEQ_CLS"})"},
    {"pfeiffer_gpt2", "gpt2", R"({"peft_type": "BOTTLENECK", "adapter_type": "pfeiffer", "bottleneck_size": 6,
                                  "non_linearity": "gelu_new"})"},
    {"parallel_llama", "llama_mha",
     R"({"peft_type": "BOTTLENECK", "adapter_type": "parallel", "bottleneck_size": 8, "scaling": 0.1})"},
    {"parallel_vit_cls", "vit_cls",
     R"({"peft_type": "BOTTLENECK", "adapter_type": "parallel", "bottleneck_size": 4, "scaling": 0.5,
         "modules_to_save": ["classifier"]})"},
    {"ssf_gpt2", "gpt2", R"({"peft_type": "SSF"})"},
    {"ssf_llama", "llama_mha", R"({"peft_type": "SSF", "target_modules": ["q_proj", "down_proj", "input_layernorm"]})"},
    {"ssf_vit_cls", "vit_cls", R"({"peft_type": "SSF", "modules_to_save": ["classifier"]})"},
    {"bitfit_bert_cls", "bert_cls", R"({"peft_type": "BITFIT", "task_type": "SEQ_CLS"})"},
    {"bitfit_gpt2", "gpt2", R"({"peft_type": "BITFIT", "target_modules": ["c_attn", "c_fc"]})"},
    {"vpt_shallow_vit_cls", "vit_cls", R"({"peft_type": "VPT", "num_virtual_tokens": 3})"},
    {"vpt_deep_vit_cls", "vit_cls", R"({"peft_type": "VPT", "num_virtual_tokens": 2, "deep": true})"},
};

std::string own_name(const ::testing::TestParamInfo<OwnCase>& i) { return i.param.name; }
void PrintTo(const OwnCase& c, std::ostream* os) { *os << c.name; }

std::unique_ptr<AdapterConfig> own_config(const OwnCase& c) {
  return parse_adapter_config(nlohmann::ordered_json::parse(c.config), c.name);
}

// Every trainable tensor of the adapter set to random values, so nothing is trivially zero.
void perturb(PeftModel& peft, uint64_t seed) {
  c10::InferenceMode guard(false);
  c10::NoGradGuard ng;
  auto gen = at::detail::createCPUGenerator(seed);
  for (auto& t : peft.trainable_tensors()) t.copy_(t + 0.2 * at::randn(t.sizes(), gen, t.options()));
}

class OwnTuner : public ::testing::TestWithParam<OwnCase> {};

TEST_P(OwnTuner, MatchesPlainPytorchReference) {
  const auto& c = GetParam();
  SafetensorsFile ref((parity(c.base) / "reference.safetensors").string());
  PeftModel peft(load_model(parity(c.base).string()));
  peft.add_adapter("default", *own_config(c), 7);
  perturb(peft, 8);
  const auto dir = scratch("own_" + c.name);
  peft.save_adapter(dir.string());
  const auto key = output_key(ref);
  at::Tensor ours;
  {
    c10::InferenceMode guard;
    ours = output_of(peft.forward(inputs_of(ref)), key);
  }
  const auto want_path = scratch("own_" + c.name + "_ref.safetensors");
  int status = 0;
  auto log = test::run_parity_script("tuner_reference.py",
                                     parity(c.base).string() + " " + dir.string() + " " +
                                         (parity(c.base) / "reference.safetensors").string() + " " + want_path.string(),
                                     &status);
  ASSERT_EQ(status, 0) << log;
  SafetensorsFile want(want_path.string());
  const auto mask = c.name.rfind("vpt", 0) == 0 ? at::Tensor() : mask_of(ref);
  EXPECT_LE(max_diff(ours, want.get(key), mask), kLogitTol);
  // The saved adapter reloads here to the same outputs.
  c10::InferenceMode guard;
  PeftModel again(load_model(parity(c.base).string()));
  again.load_adapter(dir.string());
  EXPECT_LE(max_diff(output_of(again.forward(inputs_of(ref)), key), ours, mask), 1e-6);
}

// Up-projections start at zero, SSF at scale 1 / shift 0, BitFit and LN tuning at the
// base's values, (IA)3 at ones, LoHa/LoKr with a zero factor: the adapted model starts as
// the base model. (VPT adds tokens, so it is not among these.)
class OwnTunerZeroInit : public ::testing::TestWithParam<OwnCase> {};

TEST_P(OwnTunerZeroInit, FreshAdapterStartsAtTheBaseModel) {
  const auto& c = GetParam();
  c10::InferenceMode guard;
  SafetensorsFile ref((parity(c.base) / "reference.safetensors").string());
  PeftModel peft(load_model(parity(c.base).string()));
  const auto key = output_key(ref);
  auto base_out = output_of(peft.forward(inputs_of(ref)), key);
  peft.add_adapter("default", *own_config(c), 7);
  EXPECT_LE(max_diff(output_of(peft.forward(inputs_of(ref)), key), base_out, mask_of(ref)), 1e-6);
  EXPECT_GT(peft.trainable_parameters().first, 0);
}

INSTANTIATE_TEST_SUITE_P(Tuners, OwnTuner, ::testing::ValuesIn(kOwnCases), own_name);

std::vector<OwnCase> zero_init_cases() {
  std::vector<OwnCase> out = {
      // HF PEFT's methods at their default inits.
      {"ia3_llama", "llama_mha", R"({"peft_type": "IA3"})"},
      {"ia3_gpt2", "gpt2", R"({"peft_type": "IA3"})"},
      {"ln_tuning_llama", "llama_mha", R"({"peft_type": "LN_TUNING"})"},
      {"loha_llama", "llama_mha", R"({"peft_type": "LOHA", "target_modules": "all-linear"})"},
      {"lokr_llama", "llama_mha", R"({"peft_type": "LOKR", "target_modules": "all-linear", "decompose_both": true, "r": 2})"},
  };
  for (const auto& c : kOwnCases)
    if (c.name.rfind("vpt", 0) != 0) out.push_back(c);
  return out;
}
INSTANTIATE_TEST_SUITE_P(Tuners, OwnTunerZeroInit, ::testing::ValuesIn(zero_init_cases()), own_name);

class SsfMerge : public ::testing::TestWithParam<std::string> {};

TEST_P(SsfMerge, MergedEqualsUnmergedAndUnmergeRestores) {
  SafetensorsFile ref((parity(GetParam()) / "reference.safetensors").string());
  auto base = load_model(parity(GetParam()).string());
  std::map<std::string, at::Tensor> before;
  for (auto& [n, t] : base->named_parameters()) before[n] = t.clone();
  PeftModel peft(base);
  peft.add_adapter("default", *parse_adapter_config(nlohmann::ordered_json::parse(R"({"peft_type": "SSF"})"), "ssf"));
  perturb(peft, 3);
  c10::InferenceMode guard;
  const auto key = output_key(ref);
  auto unmerged = output_of(peft.forward(inputs_of(ref)), key);
  peft.merge();
  EXPECT_LE(max_diff(output_of(peft.forward(inputs_of(ref)), key), unmerged, mask_of(ref)), kLogitTol);
  peft.unmerge();
  for (auto& [n, t] : base->named_parameters())
    if (before.count(n)) EXPECT_LE((t - before[n]).abs().max().item<double>(), 1e-5) << n;
  // merge_and_unload leaves a plain model with the same outputs and no SSF tensors.
  auto plain = peft.merge_and_unload();
  EXPECT_LE(max_diff(output_of(plain->forward(inputs_of(ref)), key), unmerged, mask_of(ref)), kLogitTol);
  EXPECT_EQ(plain->named_parameters().size(), before.size());
}

INSTANTIATE_TEST_SUITE_P(Tuners, SsfMerge, ::testing::Values("gpt2", "vit_cls", "bert"));

TEST(SsfMergeErrors, ShiftOnALayerWithoutBiasIsRefused) {
  PeftModel peft(load_model(parity("llama_mha").string()));
  peft.add_adapter("default", *parse_adapter_config(
                                  nlohmann::ordered_json::parse(R"({"peft_type": "SSF", "target_modules": ["q_proj"]})"),
                                  "ssf"));
  perturb(peft, 1);
  try {
    peft.merge();
    FAIL() << "merged a shift into a layer without bias";
  } catch (const std::logic_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("q_proj"));
    EXPECT_THAT(e.what(), HasSubstr("no bias"));
  }
}

TEST(TunerErrors, UnmergeableMethodsSayWhy) {
  PeftModel peft(load_model(parity("llama_mha").string()));
  peft.add_adapter("default", *parse_adapter_config(nlohmann::ordered_json::parse(
                                                        R"({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 3})"),
                                                    "prefix"));
  EXPECT_THROW(peft.merge(), std::logic_error);
  PeftModel b(load_model(parity("llama_mha").string()));
  b.add_adapter("default", *parse_adapter_config(
                               nlohmann::ordered_json::parse(R"({"peft_type": "BOTTLENECK", "bottleneck_size": 4})"), "b"));
  EXPECT_THROW(b.merge(), std::logic_error);
}

TEST(TunerErrors, BadConfigsNameTheField) {
  auto err = [](const char* j) {
    try {
      parse_adapter_config(nlohmann::ordered_json::parse(j), "cfg.json");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(err(R"({"peft_type": "NOPE"})"), HasSubstr("supported: "));
  EXPECT_THAT(err(R"({"peft_type": "PROMPT_TUNING"})"), HasSubstr("num_virtual_tokens"));
  EXPECT_THAT(err(R"({"peft_type": "BOTTLENECK", "adapter_type": "serial"})"), HasSubstr("adapter_type"));
  EXPECT_THAT(err(R"({"peft_type": "IA3", "target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]})"),
              HasSubstr("down_proj"));
  EXPECT_THAT(err(R"({"peft_type": "P_TUNING", "num_virtual_tokens": 2, "encoder_reparameterization_type": "GRU"})"),
              HasSubstr("GRU"));
  EXPECT_THAT(err(R"({"peft_type": "SSF", "init_weights": "yes"})"), HasSubstr("init_weights"));
}

TEST(TunerErrors, MethodOnTheWrongModelIsRefused) {
  auto add = [](const char* model, const char* cfg) {
    try {
      PeftModel peft(load_model(parity(model).string()));
      peft.add_adapter("default", *parse_adapter_config(nlohmann::ordered_json::parse(cfg), "cfg"));
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(add("vit_cls", R"({"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2})"), HasSubstr("KV cache"));
  EXPECT_THAT(add("llama_mha", R"({"peft_type": "VPT"})"), HasSubstr("ViT"));
  EXPECT_THAT(add("bert_cls", R"({"peft_type": "BOTTLENECK", "adapter_type": "parallel"})"), HasSubstr("MLP"));
  EXPECT_THAT(add("llama_mha", R"({"peft_type": "BITFIT"})"), HasSubstr("no bias"));
  EXPECT_THAT(add("llama_mha", R"({"peft_type": "IA3", "target_modules": ["input_layernorm"]})"),
              HasSubstr("Linear and Conv1D"));
}

TEST(TunerErrors, PrefixAdapterForAnotherModelNamesTheShape) {
  PeftModel peft(load_model(parity("llama_gqa_tied").string()));
  try {
    peft.load_adapter((case_dir("prefix_llama") / "adapter").string());
    FAIL() << "loaded an adapter for another model";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("another base model"));
  }
}

TEST(TunerCli, InspectShowsEachMethodsSettings) {
  for (const auto& [c, want] : std::vector<std::pair<std::string, std::string>>{
           {"prefix_llama", "num_virtual_tokens: 6"}, {"ia3_gpt2", "feedforward_modules"}, {"lokr_llama", "decompose_factor"}}) {
    int status = 0;
    auto out = test::run_command(std::string(PEFT_CLI) + " inspect " + (case_dir(c) / "adapter").string(), &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_THAT(out, HasSubstr("method:     " + case_info(c)["peft_type"].get<std::string>())) << out;
    EXPECT_THAT(out, HasSubstr(want)) << out;
  }
  int status = 0;
  auto out = test::run_command(std::string(PEFT_CLI) + " inspect " + parity("gpt2").string() +
                                   " --method '{\"peft_type\": \"IA3\"}'",
                               &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("trainable params: "));
  EXPECT_THAT(out, HasSubstr("mlp.c_proj"));
}

// Soft prompts and adapters of different methods live side by side; switching changes
// which one computes.
TEST(TunerMix, MethodsSwitchAndStack) {
  c10::InferenceMode guard;
  SafetensorsFile ref((case_dir("prefix_llama") / "reference.safetensors").string());
  SafetensorsFile ia3((case_dir("ia3_llama") / "reference.safetensors").string());
  PeftModel peft(load_model(parity("llama_mha").string()));
  peft.load_adapter((case_dir("prefix_llama") / "adapter").string(), "prefix");
  peft.load_adapter((case_dir("ia3_llama") / "adapter").string(), "ia3");
  peft.set_adapter({"ia3"});
  EXPECT_LE(max_diff(peft.forward(inputs_of(ia3)).logits, ia3.get("logits"), mask_of(ia3)), kLogitTol);
  peft.set_adapter({"prefix"});
  EXPECT_LE(max_diff(peft.forward(inputs_of(ref)).logits, ref.get("logits"), mask_of(ref)), kLogitTol);
  peft.delete_adapter("prefix");
  EXPECT_EQ(peft.model().input_adapter, nullptr);
}

}  // namespace
}  // namespace peft

namespace peft {
namespace {

// Prompt tuning's inits: TEXT takes the init text's token embeddings (cut or repeated to
// the virtual tokens, as HF does), SAMPLE_VOCAB rows of the embedding.
TEST(PromptTuningInit, TextAndSampledVocabularyAreEmbeddingRows) {
  const auto tok = scratch("word_tokenizer");
  fs::create_directories(tok);
  json vocab = json::object();
  for (int i = 0; i < 60; ++i) vocab[std::string("w") + std::to_string(i)] = i;
  json tj = {{"version", "1.0"},
             {"pre_tokenizer", {{"type", "WhitespaceSplit"}}},
             {"model", {{"type", "WordPiece"}, {"unk_token", "w0"}, {"vocab", vocab}}}};
  std::ofstream(tok / "tokenizer.json") << tj.dump();
  PeftModel peft(load_model(parity("llama_mha").string()));
  auto text = nlohmann::ordered_json::parse(R"({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 5,
      "prompt_tuning_init": "TEXT", "prompt_tuning_init_text": "w5 w7 w9"})");
  text["tokenizer_name_or_path"] = tok.string();
  peft.add_adapter("text", *parse_adapter_config(text, "text"));
  const auto& emb = peft.model().input_embeddings()->weight;
  auto got = peft.input_adapter("text")->saved_tensors()[0].second;
  auto want = at::embedding(emb, at::tensor(std::vector<int64_t>{5, 7, 9, 5, 7}, at::kLong));
  EXPECT_TRUE(at::equal(got, want));

  peft.add_adapter("sampled", *parse_adapter_config(nlohmann::ordered_json::parse(R"(
      {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 4, "prompt_tuning_init": "SAMPLE_VOCAB"})"), "s"), 3);
  auto rows = peft.input_adapter("sampled")->saved_tensors()[0].second;
  for (int64_t i = 0; i < rows.size(0); ++i)
    EXPECT_EQ((emb - rows[i]).abs().sum(-1).min().item<double>(), 0.0) << "row " << i << " is not an embedding";

  auto bad = text;
  bad["tokenizer_name_or_path"] = "/nonexistent";
  EXPECT_THROW(peft.add_adapter("bad", *parse_adapter_config(bad, "bad")), std::invalid_argument);
}

}  // namespace
}  // namespace peft
