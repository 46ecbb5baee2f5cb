// Qwen3, Gemma, Gemma 2, Gemma 3 text, Phi, Phi-3, OPT, GPT-NeoX, BLOOM, Falcon, Granite, OLMo 2,
// StarCoder2, GPT-J, GPTBigCode and StableLM against transformers and HF PEFT (fixtures from
// tests/parity/make_families.py): logits on right-padded batches longer than every
// sliding window, 32 greedy tokens, packed rows, LoRA and IA3 adapters PEFT saved, and
// `peft inspect`'s architecture and parameter count.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <tuple>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "peft/generate.h"
#include "peft/lora.h"
#include "peft/model.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;  // fp32 logits against transformers / HF PEFT

fs::path case_dir(const std::string& name) { return fs::path(PEFT_FAMILIES_DIR) / name; }

fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "families" / name;
  fs::create_directories(p.parent_path());
  return p;
}

at::Tensor logits_of(Model& model, const SafetensorsFile& ref) {
  c10::InferenceMode guard;
  return model.forward(test::inputs_of(ref)).logits;
}

std::vector<int64_t> row(const at::Tensor& t) {
  auto r = t.contiguous();
  return {r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel()};
}

// Copies a case folder and rewrites config.json keys (a variant transformers never saw).
fs::path variant(const std::string& name, const std::string& tag, const nlohmann::json& patch) {
  const auto dir = scratch(name + "_" + tag);
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"}) fs::copy_file(case_dir(name) / f, dir / f);
  nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  cfg.merge_patch(patch);
  std::ofstream(dir / "config.json") << cfg.dump(2);
  return dir;
}

class Family : public ::testing::TestWithParam<std::string> {};

TEST_P(Family, PaddedLogitsMatchTransformers) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  auto model = load_model(case_dir(GetParam()).string());
  EXPECT_LE(test::max_diff(logits_of(*model, ref), ref.get("logits"), ref.get("attention_mask")), kLogitTol);
}

// In bfloat16 the model runs through (no float32 buffer meets a bfloat16 weight), returns
// bfloat16 logits and stays near float32's.
TEST_P(Family, Bfloat16ForwardStaysBfloat16) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  LoadOptions opts;
  opts.dtype = at::kBFloat16;
  auto model = load_model(case_dir(GetParam()).string(), opts);
  const auto logits = logits_of(*model, ref);
  EXPECT_EQ(logits.scalar_type(), at::kBFloat16);
  const auto want = ref.get("logits");
  EXPECT_LE(test::max_diff(logits.to(at::kFloat), want, ref.get("attention_mask")),
            0.05 * want.abs().max().item<double>() + 0.05);
}

TEST_P(Family, PackedSequencesMatchTransformers) {
  c10::InferenceMode guard;
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  auto model = load_model(case_dir(GetParam()).string());
  ModelInputs in;
  in.input_ids = ref.get("packed_input_ids");
  in.position_ids = ref.get("packed_position_ids");
  EXPECT_LE(test::max_diff(model->forward(in).logits, ref.get("packed_logits"), {}), kLogitTol);
}

TEST_P(Family, GreedyGenerationMatchesTransformers) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  auto model = load_model(case_dir(GetParam()).string());
  const auto prompt = ref.get("gen_input_ids"), want = ref.get("gen_output_ids");
  GenerationConfig cfg;
  cfg.max_new_tokens = want.size(1) - prompt.size(1);
  ASSERT_EQ(cfg.max_new_tokens, 32);
  EXPECT_EQ(generate(*model, {row(prompt[0])}, cfg)[0], row(want[0]));
}

// Prompts of different lengths in one batch (left-padded, as transformers' generate takes
// them): every row's greedy tokens are transformers'.
TEST_P(Family, BatchedGreedyGenerationMatchesTransformers) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  auto model = load_model(case_dir(GetParam()).string());
  const auto ids = ref.get("batch_gen_input_ids"), mask = ref.get("batch_gen_attention_mask");
  const auto want = ref.get("batch_gen_new_ids");
  std::vector<std::vector<int64_t>> prompts;
  for (int64_t b = 0; b < ids.size(0); ++b) {
    const int64_t n = mask[b].sum().item<int64_t>();
    prompts.push_back(row(ids[b].narrow(0, ids.size(1) - n, n)));
  }
  GenerationConfig cfg;
  cfg.max_new_tokens = want.size(1);
  const auto got = generate(*model, prompts, cfg);
  ASSERT_EQ(got.size(), prompts.size());
  for (size_t b = 0; b < prompts.size(); ++b) {
    auto expected = prompts[b];
    const auto tail = row(want[static_cast<int64_t>(b)]);
    expected.insert(expected.end(), tail.begin(), tail.end());
    EXPECT_EQ(got[b], expected) << "row " << b;
  }
}

TEST_P(Family, ParameterCountMatchesTransformers) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  EXPECT_EQ(load_model(case_dir(GetParam()).string())->num_parameters(), ref.get("num_parameters").item<int64_t>());
}

// LoRA (init_lora_weights=False, so B is not zero) and IA3 (vectors perturbed) as HF PEFT
// saved them; Phi-3's target the fused qkv_proj / gate_up_proj.
TEST_P(Family, HfLoraAdapterMatchesPeft) {
  const auto dir = case_dir(GetParam()) / "lora";
  SafetensorsFile ref((dir / "reference.safetensors").string());
  SafetensorsFile base((case_dir(GetParam()) / "reference.safetensors").string());
  PeftModel peft(load_model(case_dir(GetParam()).string()));
  peft.load_adapter(dir.string());
  c10::InferenceMode guard;
  auto got = peft.forward(test::inputs_of(base)).logits;
  EXPECT_LE(test::max_diff(got, ref.get("logits"), base.get("attention_mask")), kLogitTol);
}

TEST_P(Family, HfIa3AdapterMatchesPeft) {
  const auto dir = case_dir(GetParam()) / "ia3";
  SafetensorsFile ref((dir / "reference.safetensors").string());
  SafetensorsFile base((case_dir(GetParam()) / "reference.safetensors").string());
  PeftModel peft(load_model(case_dir(GetParam()).string()));
  peft.load_adapter(dir.string());
  c10::InferenceMode guard;
  auto got = peft.forward(test::inputs_of(base)).logits;
  EXPECT_LE(test::max_diff(got, ref.get("logits"), base.get("attention_mask")), kLogitTol);
}

TEST_P(Family, CliInspectNamesArchitectureAndCount) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  const auto arch = nlohmann::json::parse(std::ifstream(case_dir(GetParam()) / "config.json"))["architectures"][0];
  auto r = test::run_cli({"inspect", case_dir(GetParam()).string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("architecture: " + arch.get<std::string>()));
  EXPECT_THAT(r.output, HasSubstr(std::string("(") + std::to_string(ref.get("num_parameters").item<int64_t>()) + ")"));
}

// Checkpointed blocks (recomputed in backward) train exactly as kept ones: LoRA on every
// linear layer, three steps on the reference rows, the same losses and gradient norms up to
// rounding.
TEST_P(Family, GradientCheckpointingGivesTheSameSteps) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  const auto ids = ref.get("input_ids"), mask = ref.get("attention_mask");
  const auto data = scratch(GetParam() + "_ckpt.jsonl");
  {
    std::ofstream f(data);
    for (int64_t b = 0; b < ids.size(0); ++b)
      f << nlohmann::json{{"input_ids", row(ids[b].narrow(0, 0, mask[b].sum().item<int64_t>()))}}.dump() << "\n";
  }
  auto c = test::three_lora_steps(case_dir(GetParam()).string(), data.string(), 2, 0.0);
  c.shuffle = false;
  test::expect_checkpointing_keeps_the_steps(c, scratch(GetParam() + "_ckpt").string());
}

// The other direction: a LoRA on every linear layer that `train` makes (two steps, so its
// B matrices are not zero) loads in HF PEFT on transformers' model, with our logits.
TEST_P(Family, TrainedLoraLoadsInHfPeft) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  const auto ids = ref.get("input_ids"), mask = ref.get("attention_mask");
  const auto data = scratch(GetParam() + "_export.jsonl");
  {
    std::ofstream f(data);
    for (int64_t b = 0; b < ids.size(0); ++b)
      f << nlohmann::json{{"input_ids", row(ids[b].narrow(0, 0, mask[b].sum().item<int64_t>()))}}.dump() << "\n";
  }
  TrainConfig c;
  c.model = case_dir(GetParam()).string();
  c.train_file = data.string();
  c.output_dir = scratch(GetParam() + "_export").string();
  c.method = nlohmann::json::parse(R"({"r": 4, "target_modules": "all-linear"})");
  c.max_steps = 2;
  c.per_device_train_batch_size = 3;
  c.learning_rate = 1e-2;
  c.progress = false;
  fs::remove_all(c.output_dir);
  train(c);
  PeftModel peft(load_model(case_dir(GetParam()).string()));
  peft.load_adapter(c.output_dir);
  at::Tensor logits;
  {
    c10::InferenceMode guard;
    logits = peft.forward(test::inputs_of(ref)).logits;
  }
  const auto outputs = test::write_outputs(ref, "logits", logits, scratch(GetParam() + "_export.safetensors"));
  std::string log;
  EXPECT_EQ(test::check_in_python(case_dir(GetParam()), c.output_dir, outputs, &log), 0) << log;
}

INSTANTIATE_TEST_SUITE_P(Families, Family,
                         ::testing::Values("qwen3", "qwen3_window", "gemma2", "gemma3", "phi3", "phi3_tied",
                                           "opt", "opt_proj", "gpt_neox", "gpt_neox_seq", "bloom",
                                           "bloom_post_ln", "gemma", "phi", "phi_qk", "falcon", "falcon_new",
                                           "falcon_seq", "granite", "olmo2", "starcoder2", "gptj",
                                           "gptj_full", "gpt_bigcode", "gpt_bigcode_mha", "stablelm", "stablelm2",
                                           "gpt_neo", "gpt_neo_local", "cohere", "cohere_qk", "smollm3",
                                           "smollm3_window", "cohere2", "qwen2_window"));

// The references depend on the window: the same weights with the window wider than the
// sequence give other logits, so the parity above is not a full-attention coincidence.
class Window : public ::testing::TestWithParam<std::string> {};

TEST_P(Window, WideningTheWindowChangesLogits) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  auto model = load_model(variant(GetParam(), "wide", {{"sliding_window", 64}}).string());
  EXPECT_GT(test::max_diff(logits_of(*model, ref), ref.get("logits"), ref.get("attention_mask")), 1e-2);
}

INSTANTIATE_TEST_SUITE_P(Families, Window,
                         ::testing::Values("qwen3_window", "gemma2", "gemma3", "phi3", "starcoder2", "smollm3_window",
                                           "cohere2", "qwen2_window"));

// GPT-Neo's local layers are in the references: with the window wider than the rows, or
// every layer global, other logits; attention_types that do not list num_layers layers, or
// list another kind, are refused by key.
TEST(GptNeo, LocalLayersAreAppliedAndAttentionTypesChecked) {
  SafetensorsFile ref((case_dir("gpt_neo_local") / "reference.safetensors").string());
  const nlohmann::json all_global = nlohmann::json::parse(R"([[["global"], 3]])");
  for (const auto& [name, edit] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"wide", {{"window_size", 64}}}, {"global", {{"attention_types", all_global}}}}) {
    auto model = load_model(variant("gpt_neo_local", name, edit).string());
    EXPECT_GT(test::max_diff(logits_of(*model, ref), ref.get("logits"), ref.get("attention_mask")), 1e-2) << name;
  }
  for (const char* bad : {R"([[["global"], 2]])", R"([[["global", "sparse"], 1], [["local"], 1]])", R"([["local", 3]])",
                          R"([[["local"], 1e9]])"}) {
    try {
      (void)load_model(variant("gpt_neo_local", "bad", {{"attention_types", nlohmann::json::parse(bad)}}).string());
      ADD_FAILURE() << bad << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), HasSubstr("config.json: 'attention_types'")) << bad;
    }
  }
}

// Cohere's logit_scale and per-head q/k norms are in the references: without either, other
// logits; a null logit_scale (transformers would multiply by None) is refused by key.
TEST(Cohere, LogitScaleAndQkNormsAreApplied) {
  SafetensorsFile ref((case_dir("cohere_qk") / "reference.safetensors").string());
  for (const auto& [name, edit] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"unscaled", {{"logit_scale", 1.0}}}, {"no_qk_norm", {{"use_qk_norm", false}}}}) {
    auto model = load_model(variant("cohere_qk", name, edit).string());
    EXPECT_GT(test::max_diff(logits_of(*model, ref), ref.get("logits"), ref.get("attention_mask")), 1e-2) << name;
  }
  const auto null_scale = variant("cohere_qk", "null_scale", nlohmann::json::object());
  auto cfg = nlohmann::json::parse(std::ifstream(null_scale / "config.json"));
  cfg["logit_scale"] = nullptr;  // merge_patch would drop the key instead
  std::ofstream(null_scale / "config.json") << cfg.dump(2);
  try {
    (void)load_model(null_scale.string());
    ADD_FAILURE() << "a null logit_scale was accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("config.json: 'logit_scale' must be a number"));
  }
}

// Cohere 2's global layer has no rotary: with every layer sliding (in a window wider than
// the rows, so only the rotary differs), other logits. A null sliding_window with sliding
// layers (transformers would silently run them global and without rotary) is refused by key.
TEST(Cohere2, GlobalLayersHaveNoRotaryAndNullWindowIsRefused) {
  SafetensorsFile ref((case_dir("cohere2") / "reference.safetensors").string());
  const nlohmann::json all_sliding = {"sliding_attention", "sliding_attention", "sliding_attention", "sliding_attention"};
  auto wide = load_model(variant("cohere2", "global_wide", {{"sliding_window", 64}}).string());
  auto rotary = load_model(variant("cohere2", "rotary", {{"sliding_window", 64}, {"layer_types", all_sliding}}).string());
  EXPECT_GT(test::max_diff(logits_of(*rotary, ref), logits_of(*wide, ref), ref.get("attention_mask")), 1e-2);
  const auto null_window = variant("cohere2", "null_window", nlohmann::json::object());
  auto cfg = nlohmann::json::parse(std::ifstream(null_window / "config.json"));
  cfg["sliding_window"] = nullptr;  // merge_patch would drop the key instead
  std::ofstream(null_window / "config.json") << cfg.dump(2);
  try {
    (void)load_model(null_window.string());
    ADD_FAILURE() << "a null sliding_window was accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("config.json: 'sliding_window' is null"));
  }
}

// SmolLM3's NoPE layers are in the references: with rotary on every layer (no_rope_layers
// all 1, or no_rope_layer_interval past the last layer), other logits. no_rope_layers that
// do not list one 0/1 per layer are refused by key.
TEST(SmolLM3, NoPeLayersAreAppliedAndChecked) {
  for (const char* name : {"smollm3", "smollm3_window"}) {
    SCOPED_TRACE(name);
    SafetensorsFile ref((case_dir(name) / "reference.safetensors").string());
    auto model = load_model(variant(name, "all_rope", {{"no_rope_layers", {1, 1, 1, 1}}}).string());
    EXPECT_GT(test::max_diff(logits_of(*model, ref), ref.get("logits"), ref.get("attention_mask")), 1e-2);
  }
  SafetensorsFile ref((case_dir("smollm3") / "reference.safetensors").string());
  auto interval = variant("smollm3", "interval", nlohmann::json::object());
  auto cfg = nlohmann::json::parse(std::ifstream(interval / "config.json"));
  cfg.erase("no_rope_layers");  // read from the interval, as the released configs may
  cfg["no_rope_layer_interval"] = 4;
  std::ofstream(interval / "config.json") << cfg.dump(2);
  EXPECT_LE(test::max_diff(logits_of(*load_model(interval.string()), ref), ref.get("logits"), ref.get("attention_mask")),
            1e-4);
  for (const char* bad : {"[1, 0, 1]", R"([1, 0, 1, "0"])", "1", "[1, 0, 1, 0.5]"}) {
    try {
      (void)load_model(variant("smollm3", "bad", {{"no_rope_layers", nlohmann::json::parse(bad)}}).string());
      ADD_FAILURE() << bad << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), HasSubstr("config.json: 'no_rope_layers'")) << bad;
    }
  }
}

// Gemma 2's soft-capping is in the references too: without it, other logits.
TEST(Gemma2, SoftCappingIsApplied) {
  SafetensorsFile ref((case_dir("gemma2") / "reference.safetensors").string());
  for (const char* key : {"attn_logit_softcapping", "final_logit_softcapping"}) {
    auto model = load_model(variant("gemma2", key, {{key, nullptr}}).string());
    EXPECT_GT(test::max_diff(logits_of(*model, ref), ref.get("logits"), ref.get("attention_mask")), 1e-2) << key;
  }
}

// Granite's four scalings are all in the references: each set to 1 gives other logits.
TEST(Granite, EveryScalingIsApplied) {
  SafetensorsFile ref((case_dir("granite") / "reference.safetensors").string());
  for (const char* key : {"embedding_multiplier", "residual_multiplier", "attention_multiplier", "logits_scaling"}) {
    auto model = load_model(variant("granite", key, {{key, 1.0}}).string());
    EXPECT_GT(test::max_diff(logits_of(*model, ref), ref.get("logits"), ref.get("attention_mask")), 1e-2) << key;
  }
}

// What we do not implement is refused by name, never computed some other way.
TEST(Families, UnsupportedArchitectureNamesItAndListsSupported) {
  const auto dir = variant("qwen3", "mpt", {{"architectures", {"MptForCausalLM"}}, {"model_type", "mpt"}});
  try {
    (void)load_model(dir.string());
    FAIL() << "loaded an unsupported architecture";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    EXPECT_THAT(msg, HasSubstr("MptForCausalLM"));
    for (const char* arch : {"Qwen3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Phi3ForCausalLM"})
      EXPECT_THAT(msg, HasSubstr(arch));
  }
  auto r = test::run_cli({"inspect", dir.string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("unsupported architecture 'MptForCausalLM'"));
}

TEST(Families, UnsupportedSettingsAreRefusedByName) {
  const std::vector<std::tuple<std::string, nlohmann::json, std::string>> cases = {
      {"phi3", {{"rope_parameters", {{"rope_type", "longrope"}, {"short_factor", {1.0}}, {"long_factor", {1.0}}}}},
       "longrope"},
      {"phi3", {{"rope_parameters", {{"partial_rotary_factor", 0.5}}}}, "partial_rotary_factor"},
      {"qwen3_window", {{"layer_types", {"full_attention", "chunked_attention", "full_attention"}}}, "chunked_attention"},
      {"qwen3", {{"layer_types", {"sliding_attention", "full_attention"}}}, "sliding_window"},
      {"gemma3", {{"layer_types", {"full_attention"}}}, "layer_types"},
      {"gemma3", {{"use_bidirectional_attention", true}}, "use_bidirectional_attention"},
      {"falcon", {{"alibi", true}}, "alibi"},
      {"falcon_new", {{"parallel_attn", false}}, "parallel_attn"},
      {"falcon", {{"num_ln_in_parallel_attn", 2}}, "num_ln_in_parallel_attn"},
  };
  int i = 0;
  for (const auto& [name, patch, want] : cases) {
    const auto dir = variant(name, "bad" + std::to_string(i++), patch);
    try {
      (void)load_model(dir.string());
      ADD_FAILURE() << name << " " << patch.dump() << " loaded";
    } catch (const std::exception& e) {
      EXPECT_THAT(std::string(e.what()), HasSubstr(want)) << patch.dump();
    }
  }
}

// With no target_modules, LoRA takes HF PEFT's defaults for the model_type.
TEST(Families, LoraDefaultTargetsFollowPeft) {
  const std::vector<std::pair<std::string, std::set<std::string>>> cases = {
      {"qwen3", {"q_proj", "v_proj"}}, {"gemma2", {"q_proj", "v_proj"}}, {"gemma3", {"q_proj", "v_proj"}},
      {"gemma", {"q_proj", "v_proj"}}, {"opt", {"q_proj", "v_proj"}},   {"gpt_neox", {"query_key_value"}}, {"bloom", {"query_key_value"}},
      {"gpt_neo", {"q_proj", "v_proj"}}};
  for (const auto& [name, want] : cases) {
    PeftModel peft(load_model(case_dir(name).string()));
    peft.add_adapter("default", LoraConfig::from_json(nlohmann::ordered_json::parse(R"({"peft_type": "LORA", "r": 2})"),
                                                      "test"));
    std::set<std::string> targets;
    for (const auto& [path, m] : peft.model().named_modules())
      if (auto* l = dynamic_cast<AdaptableLayer*>(m); l && l->adapter("default"))
        targets.insert(path.substr(path.rfind('.') + 1));
    EXPECT_EQ(targets, want) << name;
  }
}

// Prefix tuning as HF PEFT saved it: the prefix's keys/values sit in the cache and its
// ones in front of the mask, so positions start after the prefix (OPT counts them over
// the mask, GPT-NeoX from the cache length).
class Prefixed : public ::testing::TestWithParam<std::string> {};

TEST_P(Prefixed, HfPrefixAdapterMatchesPeft) {
  const auto dir = case_dir(GetParam()) / "prefix";
  SafetensorsFile ref((dir / "reference.safetensors").string());
  SafetensorsFile base((case_dir(GetParam()) / "reference.safetensors").string());
  PeftModel peft(load_model(case_dir(GetParam()).string()));
  peft.load_adapter(dir.string());
  c10::InferenceMode guard;
  auto got = peft.forward(test::inputs_of(base)).logits;
  EXPECT_LE(test::max_diff(got, ref.get("logits"), base.get("attention_mask")), kLogitTol);
}

INSTANTIATE_TEST_SUITE_P(Families, Prefixed, ::testing::Values("opt", "opt_proj", "gpt_neox", "bloom"));

// OPT counts positions over the attention mask: a left-padded row gives the logits of the
// same tokens unpadded (whose logits the parity tests above check), where positions counted
// from the sequence start would shift every real token by the padding.
TEST(Opt, LeftPaddingKeepsPositions) {
  c10::InferenceMode guard;
  SafetensorsFile ref((case_dir("opt_proj") / "reference.safetensors").string());
  auto model = load_model(case_dir("opt_proj").string());
  const auto ids = ref.get("input_ids").narrow(0, 0, 1);
  ModelInputs alone;
  alone.input_ids = ids;
  const auto want = model->forward(alone).logits;
  ModelInputs padded;
  padded.input_ids = at::cat({at::full({1, 3}, 1, at::kLong), ids}, 1);
  padded.attention_mask = at::cat({at::zeros({1, 3}, at::kLong), at::ones_like(ids)}, 1);
  const auto got = model->forward(padded).logits.narrow(1, 3, ids.size(1));
  EXPECT_LE((got - want).abs().max().item<double>(), kLogitTol);
  ModelInputs shifted = padded;  // the same input with positions from the start: not equal
  shifted.position_ids = at::arange(padded.input_ids.size(1), at::kLong).unsqueeze(0);
  EXPECT_GT((model->forward(shifted).logits.narrow(1, 3, ids.size(1)) - want).abs().max().item<double>(), 1e-2);
}

// BLOOM's files name the width n_embed (bloom-560m) or hidden_size: both load alike.
TEST(Bloom, NEmbedNamesTheWidth) {
  SafetensorsFile ref((case_dir("bloom") / "reference.safetensors").string());
  auto model = load_model(variant("bloom", "n_embed", {{"hidden_size", nullptr}, {"n_embed", 48}}).string());
  EXPECT_LE(test::max_diff(logits_of(*model, ref), ref.get("logits"), ref.get("attention_mask")), kLogitTol);
}

// Pythia's files as transformers 4 wrote them: the head under embed_out, causal-mask
// buffers, rotary_pct / rotary_emb_base instead of rope_parameters.
TEST(GptNeox, TransformersV4CheckpointLoads) {
  SafetensorsFile ref((case_dir("gpt_neox") / "reference.safetensors").string());
  auto model = load_model((case_dir("gpt_neox") / "v4").string());
  EXPECT_LE(test::max_diff(logits_of(*model, ref), ref.get("logits"), ref.get("attention_mask")), kLogitTol);
}

// Saved as transformers saves it: the head's key is embed_out, and the folder loads again.
TEST(GptNeox, SavesTheHeadAsEmbedOut) {
  SafetensorsFile ref((case_dir("gpt_neox") / "reference.safetensors").string());
  auto model = load_model(case_dir("gpt_neox").string());
  const auto out = scratch("gpt_neox_saved");
  fs::remove_all(out);
  save_pretrained(*model, out.string());
  SafetensorsFile saved((out / "model.safetensors").string());
  EXPECT_TRUE(saved.contains("embed_out.weight"));
  EXPECT_FALSE(saved.contains("lm_head.weight"));
  EXPECT_LE(test::max_diff(logits_of(*load_model(out.string()), ref), ref.get("logits"), ref.get("attention_mask")),
            kLogitTol);
}

// Only the first partial_rotary_factor of each head rotates: rotating all of it (the
// factor set to 1) gives other logits on the same weights.
TEST(GptNeox, PartialRotaryIsApplied) {
  SafetensorsFile ref((case_dir("gpt_neox") / "reference.safetensors").string());
  auto model = load_model(variant("gpt_neox", "full_rope", {{"rope_parameters", {{"partial_rotary_factor", 1.0}}}}).string());
  EXPECT_GT(test::max_diff(logits_of(*model, ref), ref.get("logits"), ref.get("attention_mask")), 1e-2);
  for (double bad : {0.0, 1.5, 0.2}) {  // 0.2 of 16 dims: 3, not an even count
    try {
      (void)load_model(variant("gpt_neox", "bad_rope", {{"rope_parameters", {{"partial_rotary_factor", bad}}}}).string());
      ADD_FAILURE() << bad << " loaded";
    } catch (const std::exception& e) {
      EXPECT_THAT(std::string(e.what()), HasSubstr("partial_rotary_factor")) << bad;
    }
  }
}

TEST(Opt, UnsupportedSettingsAreRefusedByName) {
  const auto dir = variant("opt", "no_affine", {{"layer_norm_elementwise_affine", false}});
  try {
    (void)load_model(dir.string());
    ADD_FAILURE() << "loaded LayerNorms without weights";
  } catch (const std::exception& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr("layer_norm_elementwise_affine"));
  }
}

}  // namespace
}  // namespace peft
