// Model parity against transformers (fixtures from tests/parity/make_models.py), the CLI
// against the C++ API, and the errors bad model folders must give.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/generate.h"
#include "peft/model.h"
#include "peft/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace peft {
namespace {

// fp32 logits must match transformers this closely (max abs diff).
constexpr double kLogitTol = 1e-4;

fs::path case_dir(const std::string& name) { return fs::path(PEFT_PARITY_DIR) / name; }

struct Reference {
  explicit Reference(const std::string& name) : file((case_dir(name) / "reference.safetensors").string()) {}
  bool has(const std::string& k) const { return file.contains(k); }
  at::Tensor operator[](const std::string& k) const { return file.get(k); }
  SafetensorsFile file;
};

ModelInputs inputs_from(const Reference& ref) {
  ModelInputs in;
  if (ref.has("input_ids")) in.input_ids = ref["input_ids"];
  if (ref.has("attention_mask")) in.attention_mask = ref["attention_mask"];
  if (ref.has("token_type_ids")) in.token_type_ids = ref["token_type_ids"];
  if (ref.has("pixel_values")) in.pixel_values = ref["pixel_values"];
  return in;
}

// Max abs difference over real (unmasked) positions; `mask` [b, s] or undefined.
double max_diff(const at::Tensor& got, const at::Tensor& want, const at::Tensor& mask = {}) {
  EXPECT_EQ(got.sizes(), want.sizes());
  auto d = (got.to(at::kFloat) - want.to(at::kFloat)).abs();
  if (mask.defined() && d.dim() == 3) d = d * mask.to(at::kFloat).unsqueeze(-1);
  return d.max().item<double>();
}

// Output name a case's reference checks, with the mask to apply.
void expect_outputs_match(const Reference& ref, const ModelOutputs& out) {
  at::Tensor mask = ref.has("attention_mask") ? ref["attention_mask"] : at::Tensor();
  int checked = 0;
  for (const auto& [key, got] : {std::pair{"logits", out.logits}, std::pair{"last_hidden_state", out.last_hidden_state},
                                 std::pair{"pooler_output", out.pooler_output}}) {
    if (!ref.has(key)) continue;
    ASSERT_TRUE(got.defined()) << key;
    EXPECT_LE(max_diff(got, ref[key], mask), kLogitTol) << key;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

class Parity : public ::testing::TestWithParam<std::string> {};

TEST_P(Parity, OutputsMatchTransformers) {
  c10::InferenceMode guard;
  Reference ref(GetParam());
  auto model = load_model(case_dir(GetParam()).string());
  expect_outputs_match(ref, model->forward(inputs_from(ref)));
}

TEST_P(Parity, ParameterCountMatchesTransformers) {
  Reference ref(GetParam());
  auto model = load_model(case_dir(GetParam()).string());
  EXPECT_EQ(model->num_parameters(), ref["num_parameters"].item<int64_t>());
}

class GenerationParity : public ::testing::TestWithParam<std::string> {};

TEST_P(GenerationParity, GreedyGenerationMatchesTransformers) {
  Reference ref(GetParam());
  auto model = load_model(case_dir(GetParam()).string());
  auto prompt = ref["gen_input_ids"];
  auto want = ref["gen_output_ids"];
  GenerationConfig cfg;
  cfg.max_new_tokens = want.size(1) - prompt.size(1);
  ASSERT_EQ(cfg.max_new_tokens, 32);
  auto p = prompt[0];
  auto got = generate(*model, {std::vector<int64_t>(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + p.numel())}, cfg);
  auto w = want[0];
  EXPECT_EQ(got[0], std::vector<int64_t>(w.data_ptr<int64_t>(), w.data_ptr<int64_t>() + w.numel()));
}

// Rows of several sequences told apart by restarting position ids (HF's padding-free
// collator): each sequence attends only within itself, as in transformers.
TEST_P(GenerationParity, PackedSequencesMatchTransformers) {
  c10::InferenceMode guard;
  Reference ref(GetParam());
  auto model = load_model(case_dir(GetParam()).string());
  ModelInputs in;
  in.input_ids = ref["packed_input_ids"];
  in.position_ids = ref["packed_position_ids"];
  EXPECT_LE(max_diff(model->forward(in).logits, ref["packed_logits"]), kLogitTol);
}

// `peft forward` writes what the C++ API computes; `peft inspect` counts what
// transformers counts.
std::string run(const std::string& cmd, int* status) { return test::run_command(cmd, status); }

TEST_P(Parity, CliForwardMatchesApi) {
  const auto dir = case_dir(GetParam());
  const auto out = fs::path(PEFT_SCRATCH_DIR) / ("cli_forward_" + GetParam() + ".safetensors");
  fs::create_directories(out.parent_path());
  std::string cmd = std::string(PEFT_CLI) + " forward " + dir.string() + " --out " + out.string();
  if (fs::exists(dir / "ids.json")) cmd += " --ids " + (dir / "ids.json").string();
  if (fs::exists(dir / "token_type_ids.json")) cmd += " --token-type-ids " + (dir / "token_type_ids.json").string();
  if (fs::exists(dir / "pixels.safetensors")) cmd += " --pixels " + (dir / "pixels.safetensors").string();
  int status = 0;
  auto log = run(cmd, &status);
  ASSERT_EQ(status, 0) << log;
  Reference ref(GetParam());
  SafetensorsFile got(out.string());
  ModelOutputs o;
  if (got.contains("logits")) o.logits = got.get("logits");
  if (got.contains("last_hidden_state")) o.last_hidden_state = got.get("last_hidden_state");
  if (got.contains("pooler_output")) o.pooler_output = got.get("pooler_output");
  if (ref.has("attention_mask")) EXPECT_TRUE(got.get("attention_mask").equal(ref["attention_mask"]));
  expect_outputs_match(ref, o);
}

TEST_P(Parity, CliInspectCountsParameters) {
  int status = 0;
  auto log = run(std::string(PEFT_CLI) + " inspect " + case_dir(GetParam()).string(), &status);
  ASSERT_EQ(status, 0) << log;
  Reference ref(GetParam());
  EXPECT_THAT(log, HasSubstr(std::string("(") + std::to_string(ref["num_parameters"].item<int64_t>()) + ")"));
}

#define PEFT_DECODER_CASES "llama_mha", "llama_gqa_tied", "llama3_rope", "llama_sharded", "mistral", "qwen2", "gpt2", "gpt2_odd"
INSTANTIATE_TEST_SUITE_P(Models, Parity,
                         ::testing::Values(PEFT_DECODER_CASES, "bert", "bert_cls", "vit", "vit_cls"));
INSTANTIATE_TEST_SUITE_P(Decoders, GenerationParity, ::testing::Values(PEFT_DECODER_CASES));

TEST(Generate, CliGreedyMatchesTransformers) {
  Reference ref("gpt2");
  auto prompt = ref["gen_input_ids"];
  const auto ids = fs::path(PEFT_SCRATCH_DIR) / "gen_prompt.json";
  fs::create_directories(ids.parent_path());
  std::ofstream(ids) << nlohmann::json({std::vector<int64_t>(prompt.data_ptr<int64_t>(),
                                                             prompt.data_ptr<int64_t>() + prompt.numel())})
                            .dump();
  int status = 0;
  auto log = run(std::string(PEFT_CLI) + " generate " + case_dir("gpt2").string() + " --ids " + ids.string() +
                     " --max-new-tokens 32 --no-eos",
                 &status);
  ASSERT_EQ(status, 0) << log;
  auto want = ref["gen_output_ids"][0];
  auto got = nlohmann::json::parse(log.substr(log.find('[')));
  EXPECT_EQ(got[0].get<std::vector<int64_t>>(),
            std::vector<int64_t>(want.data_ptr<int64_t>(), want.data_ptr<int64_t>() + want.numel()));
}

TEST(Generate, LeftPaddedBatchEqualsOneByOne) {
  auto model = load_model(case_dir("llama_gqa_tied").string());
  GenerationConfig cfg;
  cfg.max_new_tokens = 12;
  std::vector<std::vector<int64_t>> prompts = {{5, 9, 13, 2, 7, 40}, {11, 3}, {60, 61, 62}};
  auto batch = generate(*model, prompts, cfg);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(batch[i], generate(*model, {prompts[i]}, cfg)[0]) << i;
}

TEST(Generate, CachedStepsEqualFullRecompute) {
  // The logits of the last position from one full pass equal those from the cache path.
  c10::InferenceMode guard;
  auto model = load_model(case_dir("qwen2").string());
  auto ids = at::tensor(std::vector<int64_t>{3, 17, 29, 4, 88, 12, 6}, at::kLong).unsqueeze(0);
  auto full = model->forward({.input_ids = ids}).logits;
  KVCache cache;
  ModelInputs in;
  in.cache = &cache;
  in.input_ids = ids.narrow(1, 0, 4);
  model->forward(in);
  for (int64_t t = 4; t < 7; ++t) {
    in.input_ids = ids.narrow(1, t, 1);
    auto step = model->forward(in).logits;
    EXPECT_LE(max_diff(step.select(1, 0), full.select(1, t)), 1e-5) << "position " << t;
  }
}

TEST(Generate, SamplingIsSeededAndRespectsTopK) {
  auto model = load_model(case_dir("gpt2").string());
  GenerationConfig cfg;
  cfg.do_sample = true;
  cfg.temperature = 0.8;
  cfg.top_k = 1;  // top-1 sampling is greedy
  cfg.max_new_tokens = 10;
  GenerationConfig greedy;
  greedy.max_new_tokens = 10;
  EXPECT_EQ(generate(*model, {{1, 2, 3}}, cfg), generate(*model, {{1, 2, 3}}, greedy));
  cfg.top_k = 0;
  cfg.top_p = 0.9;
  cfg.seed = 7;
  auto a = generate(*model, {{1, 2, 3}}, cfg), b = generate(*model, {{1, 2, 3}}, cfg);
  EXPECT_EQ(a, b);
  cfg.seed = 8;
  cfg.max_new_tokens = 30;
  cfg.temperature = 5.0;
  auto c = generate(*model, {{1, 2, 3}}, cfg);
  cfg.seed = 9;
  EXPECT_NE(c, generate(*model, {{1, 2, 3}}, cfg)) << "different seeds at high temperature should differ";
}

TEST(Precision, Bfloat16StaysCloseToFloat32) {
  c10::InferenceMode guard;
  Reference ref("llama_mha");
  LoadOptions o;
  o.dtype = at::kBFloat16;
  auto model = load_model(case_dir("llama_mha").string(), o);
  EXPECT_EQ(model->named_parameters().front().second.scalar_type(), at::kBFloat16);
  auto logits = model->forward(inputs_from(ref)).logits;
  EXPECT_EQ(logits.scalar_type(), at::kBFloat16);
  auto want = ref["logits"];
  // bf16 keeps 8 mantissa bits: allow a few percent of the logit scale.
  const double scale = want.abs().max().item<double>();
  EXPECT_LE(max_diff(logits, want, ref["attention_mask"]), 0.05 * scale);
}

// --- bad model folders ---------------------------------------------------------------

fs::path copy_case(const std::string& name, const std::string& as) {
  auto dst = fs::path(PEFT_SCRATCH_DIR) / as;
  fs::remove_all(dst);
  fs::create_directories(dst.parent_path());
  fs::copy(case_dir(name), dst, fs::copy_options::recursive);
  return dst;
}

std::string load_error(const fs::path& dir) {
  try {
    (void)load_model(dir.string());  // only its error matters
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(BadModel, ShapeMismatchNamesFileAndKey) {
  auto dir = copy_case("llama_mha", "bad_shape");
  auto j = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  j["intermediate_size"] = 100;
  std::ofstream(dir / "config.json") << j.dump();
  auto err = load_error(dir);
  EXPECT_THAT(err, HasSubstr("model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has shape [96, 64]"));
  EXPECT_THAT(err, HasSubstr("[100, 64]"));
}

TEST(BadModel, MissingTensorIsNamed) {
  auto dir = copy_case("gpt2", "missing_tensor");
  test::drop_tensor((dir / "model.safetensors").string(), "transformer.h.1.mlp.c_fc.bias");
  EXPECT_THAT(load_error(dir), HasSubstr("missing tensor 'transformer.h.1.mlp.c_fc.bias'"));
}

TEST(BadModel, UnsupportedArchitectureListsSupported) {
  auto dir = copy_case("bert", "bad_arch");
  auto j = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  j["architectures"] = {"MambaForCausalLM"};
  std::ofstream(dir / "config.json") << j.dump();
  auto err = load_error(dir);
  EXPECT_THAT(err, HasSubstr("unsupported architecture 'MambaForCausalLM'"));
  EXPECT_THAT(err, HasSubstr("LlamaForCausalLM"));
}

TEST(BadModel, MissingRequiredConfigKey) {
  auto dir = copy_case("llama_mha", "no_hidden");
  auto j = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  j.erase("hidden_size");
  std::ofstream(dir / "config.json") << j.dump();
  EXPECT_THAT(load_error(dir), HasSubstr("config.json: missing required key 'hidden_size'"));
}

TEST(BadModel, ShardIndexPointingAtWrongFile) {
  auto dir = copy_case("llama_sharded", "bad_index");
  auto j = nlohmann::json::parse(std::ifstream(dir / "model.safetensors.index.json"));
  auto& wm = j["weight_map"];
  std::string first_file = wm.begin().value();
  std::string other;
  for (auto& [k, v] : wm.items())
    if (v != first_file) other = v;
  wm[wm.begin().key()] = other;
  std::ofstream(dir / "model.safetensors.index.json") << j.dump();
  EXPECT_THAT(load_error(dir), HasSubstr("which has no such tensor"));
}

TEST(BadModel, NoWeightsFile) {
  auto dir = copy_case("vit", "no_weights");
  fs::remove(dir / "model.safetensors");
  EXPECT_THAT(load_error(dir), HasSubstr("no model.safetensors or model.safetensors.index.json"));
}

TEST(BadModel, CliReportsErrorAndFails) {
  auto dir = copy_case("vit", "cli_no_weights");
  fs::remove(dir / "model.safetensors");
  int status = 0;
  auto log = run(std::string(PEFT_CLI) + " inspect " + dir.string(), &status);
  EXPECT_NE(status, 0);
  EXPECT_THAT(log, HasSubstr("error: "));
  EXPECT_THAT(log, HasSubstr("no model.safetensors"));
}

}  // namespace
}  // namespace peft

#include "peft/tokenizer.h"

namespace peft {
namespace {

TEST(Generate, CliPromptUsesTheModelFolderTokenizer) {
  // A word-level tokenizer over the gpt2 fixture's 100 ids: "w0".."w99".
  auto dir = copy_case("gpt2", "gpt2_with_tokenizer");
  nlohmann::json vocab = nlohmann::json::object();
  for (int i = 0; i < 100; ++i) vocab[std::string("w").append(std::to_string(i))] = i;
  nlohmann::json tj = {{"version", "1.0"},
                       {"normalizer", nullptr},
                       {"pre_tokenizer", {{"type", "WhitespaceSplit"}}},
                       {"model", {{"type", "WordPiece"}, {"unk_token", "w0"}, {"vocab", vocab}}},
                       {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", false}}}};
  std::ofstream(dir / "tokenizer.json") << tj.dump();
  auto tok = Tokenizer::from_file(dir.string());
  auto model = load_model(dir.string());
  GenerationConfig cfg;
  cfg.max_new_tokens = 6;
  const std::string prompt = "w5 w17 w42";
  auto prompt_ids = tok.encode(prompt).ids;
  ASSERT_EQ(prompt_ids, (std::vector<int64_t>{5, 17, 42}));
  auto row = generate(*model, {prompt_ids}, cfg)[0];
  const std::string want = tok.decode(std::vector<int64_t>(row.begin() + 3, row.end()), true);
  int status = 0;
  auto log = run(std::string(PEFT_CLI) + " generate " + dir.string() + " --prompt '" + prompt +
                     "' --max-new-tokens 6 --no-eos",
                 &status);
  ASSERT_EQ(status, 0) << log;
  auto j = nlohmann::json::parse(log.substr(log.find('{')));
  EXPECT_EQ(j["prompt"], prompt);
  EXPECT_EQ(j["completion"], want);
}

}  // namespace
}  // namespace peft
