// LoRA against HF PEFT (fixtures from tests/parity/make_adapters.py): adapters made by
// PEFT load here with PEFT's outputs; ours load in PEFT with ours; merging, unmerging,
// merge_and_unload, the trainable-parameter line, inits, several adapters, bad input.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;   // fp32 outputs vs HF PEFT
constexpr double kWeightTol = 1e-5;  // base weights after merge + unmerge

fs::path adapters_dir() { return fs::path(PEFT_PARITY_DIR).parent_path() / "parity_adapters"; }
fs::path case_dir(const std::string& c) { return adapters_dir() / c; }
fs::path scratch(const std::string& name) {
  auto p = fs::path(PEFT_SCRATCH_DIR) / "lora" / name;
  fs::create_directories(p.parent_path());
  return p;
}

nlohmann::json case_info(const std::string& c) { return nlohmann::json::parse(std::ifstream(case_dir(c) / "case.json")); }
fs::path base_dir(const std::string& c) { return fs::path(PEFT_PARITY_DIR) / case_info(c)["base"].get<std::string>(); }

std::string run(const std::string& cmd, int* status) { return test::run_command(cmd, status); }

using test::check_in_python;
using test::inputs_of;
using test::mask_of;
using test::max_diff;
using test::output_key;
using test::output_of;
using test::write_outputs;

class LoraParity : public ::testing::TestWithParam<std::string> {};

TEST_P(LoraParity, HfAdapterLoadsAndMatchesPeft) {
  c10::InferenceMode guard;
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  PeftModel peft(load_model(base_dir(GetParam()).string()));
  peft.load_adapter((case_dir(GetParam()) / "adapter").string());
  const auto key = output_key(ref);
  EXPECT_LE(max_diff(output_of(peft.forward(inputs_of(ref)), key), ref.get(key), mask_of(ref)), kLogitTol);
}

TEST_P(LoraParity, MergeMatchesAndUnmergeRestores) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  // Biases loaded from the adapter (bias = all / lora_only) legitimately differ.
  test::expect_merge_round_trip(base_dir(GetParam()), case_dir(GetParam()) / "adapter", ref, kLogitTol, kWeightTol,
                                [](const PeftModel& peft, const std::string& n) {
                                  return dynamic_cast<const LoraConfig&>(peft.config("default")).bias != "none" &&
                                         n.find("bias") != std::string::npos;
                                });
}

TEST_P(LoraParity, TrainableLineMatchesPeft) {
  auto j = case_info(GetParam())["config"];
  j["peft_type"] = "LORA";
  auto cfg = LoraConfig::from_json(nlohmann::ordered_json::parse(j.dump()), "case.json");
  PeftModel peft(load_model(base_dir(GetParam()).string()));
  peft.add_adapter("default", cfg);
  std::string want;
  std::getline(std::ifstream(case_dir(GetParam()) / "trainable.txt"), want);
  EXPECT_EQ(peft.trainable_parameters_line(), want);
}

TEST_P(LoraParity, SavedHereLoadsInPeftWithSameOutputs) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  test::expect_resave_round_trip(base_dir(GetParam()), case_dir(GetParam()) / "adapter", ref,
                                 scratch("resaved_" + GetParam()),
                                 scratch("outputs_" + GetParam() + ".safetensors"), kLogitTol);
}

TEST_P(LoraParity, MergeAndUnloadLoadsInTransformers) {
  SafetensorsFile ref((case_dir(GetParam()) / "reference.safetensors").string());
  PeftModel peft(load_model(base_dir(GetParam()).string()));
  peft.load_adapter((case_dir(GetParam()) / "adapter").string());
  auto plain = peft.merge_and_unload();
  const auto key = output_key(ref);
  at::Tensor out;
  {
    c10::InferenceMode guard;
    out = output_of(plain->forward(inputs_of(ref)), key);
  }
  EXPECT_LE(max_diff(out, ref.get("merged_" + key), mask_of(ref)), kLogitTol);
  const auto dir = scratch("merged_" + GetParam());
  fs::remove_all(dir);
  save_pretrained(*plain, dir.string());
  std::string log;
  auto outputs = write_outputs(ref, key, out, scratch("merged_outputs_" + GetParam() + ".safetensors"));
  EXPECT_EQ(check_in_python(dir, "-", outputs, &log), 0) << log;
}

INSTANTIATE_TEST_SUITE_P(Peft, LoraParity,
                         ::testing::Values("lora_list", "lora_regex_rs", "lora_dora", "lora_all_linear_bias",
                                           "lora_layers", "lora_gpt2", "lora_gpt2_dora", "lora_embedding",
                                           "lora_bert_cls", "lora_vit_cls", "lora_exclude", "lora_sharded_base"));

// --- created here ------------------------------------------------------------------

LoraConfig config_for(const std::string& json) {
  return LoraConfig::from_json(nlohmann::ordered_json::parse(json), "test");
}

TEST(LoraCreated, RandomAdapterSavedHereMatchesInPeft) {
  // init_lora_weights=false: B is random too, so the adapter changes the output.
  auto base_name = "llama_gqa_tied";
  SafetensorsFile ref((fs::path(PEFT_PARITY_DIR) / base_name / "reference.safetensors").string());
  PeftModel peft(load_model((fs::path(PEFT_PARITY_DIR) / base_name).string()));
  peft.add_adapter("default", config_for(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 16, "use_dora": true,
      "target_modules": ["q_proj", "v_proj", "up_proj"], "init_lora_weights": false})"), 42);
  at::Tensor out, base_out;
  {
    c10::InferenceMode guard;
    out = peft.forward(inputs_of(ref)).logits;
    auto off = peft.disable_adapters();
    base_out = peft.forward(inputs_of(ref)).logits;
  }
  EXPECT_GT((out - base_out).abs().max().item<double>(), 1e-2) << "the adapter must change the output";
  EXPECT_LE(max_diff(base_out, ref.get("logits"), ref.get("attention_mask")), kLogitTol) << "disabled = base";
  const auto dir = scratch("created_dora");
  peft.save_adapter(dir.string());
  std::string log;
  auto outputs = write_outputs(ref, "logits", out, scratch("created_dora_outputs.safetensors"));
  EXPECT_EQ(check_in_python(fs::path(PEFT_PARITY_DIR) / base_name, dir.string(), outputs, &log), 0) << log;
}

class InitKeepsBase : public ::testing::TestWithParam<std::string> {};

TEST_P(InitKeepsBase, OutputEqualsBaseRightAfterInit) {
  // PiSSA and OLoRA move the top of W into A and B and leave the residual in W;
  // orthogonal init has B A = 0 with B nonzero.
  c10::InferenceMode guard;
  for (const char* base_name : {"llama_mha", "gpt2"}) {
    if (GetParam() == "olora" && std::string(base_name) == "gpt2") continue;  // see OloraRefusesConv1D
    SafetensorsFile ref((fs::path(PEFT_PARITY_DIR) / base_name / "reference.safetensors").string());
    auto base = load_model((fs::path(PEFT_PARITY_DIR) / base_name).string());
    PeftModel peft(base);
    const std::string targets = std::string(base_name) == "gpt2" ? R"(["c_attn", "c_fc"])" : R"(["q_proj", "down_proj"])";
    peft.add_adapter("default", config_for(R"({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": )" +
                                           targets + R"(, "init_lora_weights": ")" + GetParam() + "\"}"));
    auto* a = dynamic_cast<LoraLinear*>(dynamic_cast<AdaptableLayer*>(
        base->find(std::string(base_name) == "gpt2" ? "transformer.h.0.attn.c_attn" : "model.layers.0.self_attn.q_proj"))
                                            ->adapter("default"));
    ASSERT_NE(a, nullptr);
    EXPECT_GT(a->lora_B.abs().max().item<double>(), 1e-3) << "B must carry part of W";
    EXPECT_LE(max_diff(peft.forward(inputs_of(ref)).logits, ref.get("logits"), ref.get("attention_mask")), kLogitTol)
        << base_name;
  }
}

INSTANTIATE_TEST_SUITE_P(Lora, InitKeepsBase, ::testing::Values("pissa", "olora", "orthogonal"));

// HF PEFT's orthogonal init: A and B both nonzero with B A = 0; an odd rank is refused.
TEST(LoraCreated, OrthogonalInitHasZeroProductAndNeedsAnEvenRank) {
  auto base = load_model((fs::path(PEFT_PARITY_DIR) / "llama_mha").string());
  PeftModel peft(base);
  peft.add_adapter("default", config_for(R"({"peft_type": "LORA", "r": 6, "target_modules": ["q_proj"],
      "init_lora_weights": "orthogonal"})"));
  auto* a = dynamic_cast<LoraLinear*>(
      dynamic_cast<AdaptableLayer*>(base->find("model.layers.0.self_attn.q_proj"))->adapter("default"));
  ASSERT_NE(a, nullptr);
  EXPECT_GT(a->lora_A.abs().min().item<double>(), 0.0);
  EXPECT_GT(a->lora_B.abs().max().item<double>(), 1e-3);
  EXPECT_LE(at::matmul(a->lora_B, a->lora_A).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(peft.config("default").to_json()["init_lora_weights"], "orthogonal");
  PeftModel odd(load_model((fs::path(PEFT_PARITY_DIR) / "llama_mha").string()));
  EXPECT_THROW(odd.add_adapter("default", config_for(R"({"peft_type": "LORA", "r": 5, "target_modules": ["q_proj"],
      "init_lora_weights": "orthogonal"})")), std::invalid_argument);
}

TEST(LoraCreated, OloraRefusesConv1D) {
  PeftModel peft(load_model((fs::path(PEFT_PARITY_DIR) / "gpt2").string()));
  EXPECT_THROW(peft.add_adapter("default", config_for(R"({"peft_type": "LORA", "target_modules": ["c_attn"],
      "init_lora_weights": "olora"})")), std::invalid_argument);
}

TEST(LoraCreated, DefaultInitStartsAtTheBaseAndLoraFaFreezesA) {
  c10::InferenceMode guard;
  SafetensorsFile ref((fs::path(PEFT_PARITY_DIR) / "qwen2" / "reference.safetensors").string());
  auto base = load_model((fs::path(PEFT_PARITY_DIR) / "qwen2").string());
  PeftModel peft(base);
  peft.add_adapter("default", config_for(R"({"peft_type": "LORA", "r": 2, "target_modules": "all-linear", "lora_fa": true})"));
  EXPECT_LE(max_diff(peft.forward(inputs_of(ref)).logits, ref.get("logits"), ref.get("attention_mask")), kLogitTol);
  for (auto& [n, t] : base->named_parameters()) {
    const bool is_a = n.find("lora_A") != std::string::npos, is_b = n.find("lora_B") != std::string::npos;
    EXPECT_EQ(t.requires_grad(), is_b) << n;
    (void)is_a;
  }
  EXPECT_EQ(base->find("lm_head.default"), nullptr) << "all-linear must skip the output head";
}

TEST(LoraAdapters, SwitchDisableDeleteAndStack) {
  c10::InferenceMode guard;
  SafetensorsFile ref((case_dir("lora_list") / "reference.safetensors").string());
  SafetensorsFile base_ref((base_dir("lora_list") / "reference.safetensors").string());
  auto base = load_model(base_dir("lora_list").string());
  PeftModel peft(base);
  peft.load_adapter((case_dir("lora_list") / "adapter").string(), "list");
  peft.load_adapter((case_dir("lora_embedding") / "adapter").string(), "emb");
  ASSERT_EQ(peft.active_adapters(), std::vector<std::string>{"list"});
  auto in = inputs_of(ref);
  auto mask = ref.get("attention_mask");
  EXPECT_LE(max_diff(peft.forward(in).logits, ref.get("logits"), mask), kLogitTol);
  peft.set_adapter({"emb"});
  SafetensorsFile emb_ref((case_dir("lora_embedding") / "reference.safetensors").string());
  EXPECT_LE(max_diff(peft.forward(in).logits, emb_ref.get("logits"), mask), kLogitTol);
  {
    auto off = peft.disable_adapters();
    EXPECT_LE(max_diff(peft.forward(in).logits, base_ref.get("logits"), mask), kLogitTol);
  }
  // Both at once: each layer adds every active adapter's delta; merging both equals it.
  peft.set_adapter({"list", "emb"});
  auto both = peft.forward(in).logits;
  EXPECT_GT((both - ref.get("logits")).abs().max().item<double>(), 1e-3);
  peft.merge();
  EXPECT_LE(max_diff(peft.forward(in).logits, both, mask), kLogitTol);
  peft.unmerge();
  peft.delete_adapter("emb");
  EXPECT_EQ(peft.adapters(), std::vector<std::string>{"list"});
  EXPECT_EQ(base->find("model.embed_tokens.emb"), nullptr);
  EXPECT_LE(max_diff(peft.forward(in).logits, ref.get("logits"), mask), kLogitTol);
}

// --- bad input -----------------------------------------------------------------------

std::string load_error(const std::string& base, const fs::path& adapter) {
  try {
    PeftModel peft(load_model((fs::path(PEFT_PARITY_DIR) / base).string()));
    peft.load_adapter(adapter.string());
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

fs::path copy_adapter(const std::string& c, const std::string& as) {
  auto dst = scratch(as);
  fs::remove_all(dst);
  fs::copy(case_dir(c) / "adapter", dst, fs::copy_options::recursive);
  return dst;
}

TEST(LoraBadInput, AdapterForAnotherBaseNamesTheShapeMismatch) {
  auto err = load_error("llama_gqa_tied", case_dir("lora_list") / "adapter");
  EXPECT_THAT(err, HasSubstr("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has shape [4, 64]"));
  EXPECT_THAT(err, HasSubstr("needs [4, 48]"));
}

TEST(LoraBadInput, MissingTensorIsNamed) {
  auto dir = copy_adapter("lora_list", "missing_tensor");
  const std::string drop = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";
  test::drop_tensor((dir / "adapter_model.safetensors").string(), drop);
  EXPECT_THAT(load_error("llama_mha", dir), HasSubstr("missing tensor '" + drop + "'"));
}

TEST(LoraBadInput, UnknownPeftType) {
  auto dir = copy_adapter("lora_list", "unknown_type");
  auto j = nlohmann::json::parse(std::ifstream(dir / "adapter_config.json"));
  j["peft_type"] = "SUPER_LORA";
  std::ofstream(dir / "adapter_config.json") << j.dump();
  EXPECT_THAT(load_error("llama_mha", dir), HasSubstr("unknown or unsupported peft_type 'SUPER_LORA'"));
}

TEST(LoraBadInput, TargetsMatchingNothing) {
  PeftModel peft(load_model((fs::path(PEFT_PARITY_DIR) / "gpt2").string()));
  try {
    peft.add_adapter("default", config_for(R"({"peft_type": "LORA", "target_modules": ["q_proj", "v_proj"]})"));
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), HasSubstr("target_modules: no module is named 'q_proj'"));
    EXPECT_THAT(e.what(), HasSubstr("GPT2LMHeadModel's module names end in: "));
    EXPECT_THAT(e.what(), HasSubstr("c_attn"));
  }
}

TEST(LoraBadInput, ATypoAmongMatchingTargetsIsAWarningWithASuggestion) {
  PeftModel peft(load_model((fs::path(PEFT_PARITY_DIR) / "llama_mha").string()));
  testing::internal::CaptureStderr();
  peft.add_adapter("default", config_for(R"({"peft_type": "LORA", "target_modules": ["q_proj", "v_prj"]})"));
  EXPECT_THAT(testing::internal::GetCapturedStderr(),
              HasSubstr("warning: target_modules: no module is named 'v_prj' (did you mean 'v_proj'?)"));
}

TEST(LoraBadInput, UnknownConfigKeysAreKeptNotFatal) {
  auto dir = copy_adapter("lora_list", "unknown_key");
  auto j = nlohmann::ordered_json::parse(std::ifstream(dir / "adapter_config.json"));
  j["some_future_option"] = 3;
  std::ofstream(dir / "adapter_config.json") << j.dump();
  PeftModel peft(load_model((fs::path(PEFT_PARITY_DIR) / "llama_mha").string()));
  peft.load_adapter(dir.string());
  peft.save_adapter(scratch("unknown_key_resaved").string());
  auto back = nlohmann::json::parse(std::ifstream(scratch("unknown_key_resaved") / "adapter_config.json"));
  EXPECT_EQ(back["some_future_option"], 3);
}

TEST(LoraBadInput, UnsupportedFeatureIsRefused) {
  try {
    config_for(R"({"peft_type": "LORA", "target_modules": ["q_proj"], "use_qalora": true})");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'use_qalora' = true is not supported"));
  }
}

// --- CLI -----------------------------------------------------------------------------

TEST(LoraCli, ForwardWithAdapterMatchesPeftAndMergeWritesCheckpoint) {
  const auto c = std::string("lora_gpt2");
  SafetensorsFile ref((case_dir(c) / "reference.safetensors").string());
  const auto base = base_dir(c);
  for (bool merged : {false, true}) {
    auto out = scratch(std::string("cli_") + (merged ? "merged" : "plain") + ".safetensors");
    int status = 0;
    auto log = run(std::string(PEFT_CLI) + " forward " + base.string() + " --ids " + (base / "ids.json").string() +
                       " --adapter " + (case_dir(c) / "adapter").string() + (merged ? " --merged" : "") + " --out " +
                       out.string(),
                   &status);
    ASSERT_EQ(status, 0) << log;
    EXPECT_LE(max_diff(SafetensorsFile(out.string()).get("logits"), ref.get("logits"), ref.get("attention_mask")),
              kLogitTol);
  }
  int status = 0;
  auto merged_dir = scratch("cli_merge_out");
  fs::remove_all(merged_dir);
  auto log = run(std::string(PEFT_CLI) + " merge " + base.string() + " " + (case_dir(c) / "adapter").string() + " " +
                     merged_dir.string(),
                 &status);
  ASSERT_EQ(status, 0) << log;
  c10::InferenceMode guard;
  auto plain = load_model(merged_dir.string());
  EXPECT_LE(max_diff(plain->forward(inputs_of(ref)).logits, ref.get("merged_logits"), ref.get("attention_mask")),
            kLogitTol);
  log = run(std::string(PEFT_CLI) + " inspect " + (case_dir(c) / "adapter").string(), &status);
  ASSERT_EQ(status, 0) << log;
  EXPECT_THAT(log, HasSubstr("method:     LORA"));
  EXPECT_THAT(log, HasSubstr("rank:       4"));
  EXPECT_THAT(log, HasSubstr("c_attn"));
}

}  // namespace
}  // namespace peft
