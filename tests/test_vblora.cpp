// VB-LoRA (HF PEFT's VBLORA) against adapters HF PEFT made (tests/parity/make_vblora.py):
//  - they load here with HF's logits (<= 1e-4) and trainable-parameter line, on Linear
//    layers and GPT-2's Conv1D, saved with full logits and with save_only_topk_weights
//    (uint8 and int16 indices); merge and unmerge give HF's merged logits;
//  - our top-k file of an adapter equals the one HF writes for the same adapter; a top-k
//    adapter refuses training as HF does; the bank is one tensor, counted once;
//  - resaved, and trained here with `peft train` (which lowers the eval loss), adapters
//    load in HF PEFT with our logits, all checked in one Python process; bad settings and
//    files are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_runner.h"
#include "method_suite.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/train.h"
#include "peft/vblora.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

const test::MethodSuite suite("vblora");
using test::logits;
using test::last_eval_loss;

const std::vector<std::string> kCases = {"vblora_llama", "vblora_llama_topk", "vblora_gpt2"};

VBLoRALayer* vblora_layer(PeftModel& m, const std::string& path) {
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find(path));
  return host ? dynamic_cast<VBLoRALayer*>(host->adapter("default")) : nullptr;
}

class HfVBLoRA : public ::testing::TestWithParam<std::string> {};

TEST_P(HfVBLoRA, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

TEST_P(HfVBLoRA, MergesAndUnmergesAsHf) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  test::expect_merge_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, kLogitTol, 1e-5,
                                [](const PeftModel& p, const std::string& n) {
                                  return dynamic_cast<const VBLoRAConfig&>(p.config("default")).bias != "none" &&
                                         n.ends_with(".bias");
                                });
}

INSTANTIATE_TEST_SUITE_P(VBLoRA, HfVBLoRA, ::testing::ValuesIn(kCases));

// vblora_llama/adapter_topk is HF's save_only_topk_weights file of the same adapter: it
// loads with the same logits, and ours of the full-logits file is that file.
TEST(VBLoRATopk, OursIsHfsFileAndLoadsWithHfLogits) {
  const auto dir = suite.fixture("vblora_llama");
  SafetensorsFile ref((dir / "reference.safetensors").string());
  {
    PeftModel m(load_model(suite.base_of("vblora_llama").string()));
    m.load_adapter((dir / "adapter_topk").string());
    const double diff = test::max_diff(logits(m, test::inputs_of(ref)), ref.get("logits"), test::mask_of(ref));
    std::cout << "vblora_llama adapter_topk: max |logits - HF| = " << diff << "\n";
    EXPECT_LE(diff, kLogitTol);
    // Outside the top k the loaded logits are -inf, as HF's.
    auto* a = vblora_layer(m, "model.layers.0.self_attn.q_proj");
    ASSERT_NE(a, nullptr);
    EXPECT_EQ(a->logits_A.isinf().sum().item<int64_t>(), a->logits_A.numel() / 16 * (16 - 2));
  }
  const auto work = suite.scratch("topk_of_full");
  fs::copy(dir / "adapter", work / "in");
  auto cfg = json::parse(std::ifstream(work / "in" / "adapter_config.json"));
  cfg["save_only_topk_weights"] = true;
  std::ofstream(work / "in" / "adapter_config.json") << cfg.dump(2);
  PeftModel m(load_model(suite.base_of("vblora_llama").string()));
  m.load_adapter((work / "in").string());
  m.save_adapter((work / "out").string());
  SafetensorsFile ours((work / "out" / "adapter_model.safetensors").string());
  SafetensorsFile hf((dir / "adapter_topk" / "adapter_model.safetensors").string());
  EXPECT_EQ(ours.names(), hf.names());
  int indices = 0;
  for (const auto& k : hf.names()) {
    if (!ours.contains(k)) continue;
    EXPECT_EQ(ours.get(k).scalar_type(), hf.get(k).scalar_type()) << k;
    EXPECT_TRUE(at::equal(ours.get(k), hf.get(k))) << k;
    indices += k.ends_with("_topk_indices");
  }
  EXPECT_EQ(indices, 2 * 5 * 2);
  EXPECT_EQ(hf.get("base_model.model.model.layers.0.self_attn.q_proj.vblora_logits_A_topk_indices").scalar_type(),
            at::kByte);
}

TEST(VBLoRATopk, TopkAdapterRefusesTraining) {
  const auto name = "vblora_llama_topk";
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  SafetensorsFile file((suite.fixture(name) / "adapter" / "adapter_model.safetensors").string());
  EXPECT_EQ(file.get("base_model.model.model.layers.1.mlp.gate_proj.vblora_logits_B_topk_indices").scalar_type(),
            at::kShort);  // 300 vectors: int16
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  m.train(true);
  try {
    m.forward(test::inputs_of(ref));
    FAIL() << "a top-k adapter must not train";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("save_only_topk_weights"));
  }
}

// A fresh adapter: every layer holds the one bank tensor, counted once (HF's line), and it
// starts off the base model (the logits mix a random bank).
TEST(VBLoRAFresh, OneBankSharedAndCountedOnce) {
  for (const auto& name : kCases) {
    SCOPED_TRACE(name);
    auto cfg = parse_adapter_config(json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json")),
                                    name);
    PeftModel m(load_model(suite.base_of(name).string()));
    m.add_adapter("default", *cfg);
    EXPECT_EQ(m.trainable_parameters_line(), suite.case_json(name)["trainable"].get<std::string>());
    const at::TensorImpl* bank = nullptr;
    int layers = 0;
    for (auto& [path, mod] : m.model().named_modules())
      if (auto* a = vblora_layer(m, path)) {
        auto* slot = a->trainable_slots()[2];
        if (!bank) bank = slot->unsafeGetTensorImpl();
        EXPECT_EQ(slot->unsafeGetTensorImpl(), bank) << path;
        EXPECT_TRUE(slot->requires_grad());
        ++layers;
      }
    EXPECT_GE(layers, 2);
  }
}

// Resaved HF adapters (both file forms) and one trained here with `peft train` load in HF
// PEFT with our logits (one Python process); the training lowered the held-out eval loss.
TEST(VBLoRATrain, PeftTrainLowersEvalLossAndOurAdaptersLoadInHf) {
  std::vector<std::string> args;
  auto add_case = [&](const fs::path& base, const fs::path& adapter, const std::string& ref_case,
                      const fs::path& work) {
    const auto triple = suite.check_case(base, adapter, ref_case, work);
    args.insert(args.end(), triple.begin(), triple.end());
  };
  for (const auto& name : kCases) {
    const auto work = suite.scratch("resave_" + name);
    PeftModel m(load_model(suite.base_of(name).string()));
    m.load_adapter((suite.fixture(name) / "adapter").string());
    m.save_adapter((work / "adapter").string());
    add_case(suite.base_of(name), work / "adapter", name, work);
  }

  const auto work = suite.scratch("train");
  const json method = {{"peft_type", "VBLORA"}, {"r", 4},          {"num_vectors", 32},
                       {"vector_length", 16},   {"topk", 2},       {"target_modules", "all-linear"},
                       {"save_only_topk_weights", true}};
  const auto out = suite.train_with_cli(work, method, 120, 2e-2, {{"eval_split", 0.25}});
  SafetensorsFile file((out / "adapter_model.safetensors").string());
  EXPECT_EQ(file.get("base_model.vblora_vector_bank").sizes(), at::IntArrayRef({32, 16}));
  EXPECT_EQ(file.get("base_model.model.model.layers.0.self_attn.q_proj.vblora_logits_A_topk_indices").scalar_type(),
            at::kByte);
  TrainConfig c;
  c.model = suite.fixture("llama").string();
  c.train_file = (work / "counting.jsonl").string();
  c.method = method;  // an untrained adapter: a small random bank, near the base model
  c.progress = false;
  const double before = evaluate(c, {})["eval_loss"];
  const double after = last_eval_loss(out);
  std::cerr << "vblora eval loss " << before << " -> " << after << "\n";
  EXPECT_GT(after, 0.0);
  // 120 steps on the tiny counting task take it from 4.14 to about 3.88 (seed 0).
  EXPECT_LT(after, before - 0.15) << "eval loss " << before << " -> " << after;
  add_case(suite.fixture("llama"), out, "vblora_llama", work);

  suite.expect_hf_checks("make_vblora.py", args);
}

std::string user_config_error(const std::string& s) {
  try {
    parse_user_adapter_config(json::parse(s), "method");
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::string add_adapter_error(const std::string& s) {
  PeftModel m(load_model(suite.fixture("llama").string()));
  try {
    m.add_adapter("default", *parse_user_adapter_config(json::parse(s), "method"));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(VBLoRAErrors, BadSettingsAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "VBLORA", "r": 0})"), HasSubstr("'r'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "VBLORA", "num_vectors": 4, "topk": 5})"),
              HasSubstr("'topk' 5 is more than 'num_vectors' 4"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "VBLORA", "bias": "lora_only"})"), HasSubstr("'bias'"));
  EXPECT_THAT(add_adapter_error(R"({"peft_type": "VBLORA", "vector_length": 12, "target_modules": ["q_proj"]})"),
              HasSubstr("in_features 32, not divisible by vector_length 12"));
  EXPECT_THAT(add_adapter_error(R"({"peft_type": "VBLORA", "vector_length": 16, "target_modules": ["model.norm"]})"),
              HasSubstr("only Linear and Conv1D layers are supported"));
}

// Rewrites `src`'s adapter into `dst` with `edit` applied to its tensors.
void rewrite_adapter(const fs::path& src, const fs::path& dst,
                     const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&)>& edit) {
  fs::copy(src, dst);
  const auto st = (dst / "adapter_model.safetensors").string();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  {
    SafetensorsFile f(st);
    for (const auto& k : f.names()) tensors.emplace_back(k, f.get(k).clone());
  }
  edit(tensors);
  save_safetensors(st, tensors, {{"format", "pt"}});
}

std::string load_error(const fs::path& adapter) {
  PeftModel m(load_model(suite.fixture("llama").string()));
  try {
    m.load_adapter(adapter.string());
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(VBLoRAErrors, BadFilesAreNamed) {
  const auto work = suite.scratch("bad_files");
  const auto topk = suite.fixture("vblora_llama_topk") / "adapter";
  rewrite_adapter(topk, work / "no_bank", [](auto& t) {
    std::erase_if(t, [](const auto& p) { return p.first == "base_model.vblora_vector_bank"; });
  });
  EXPECT_THAT(load_error(work / "no_bank"), HasSubstr("adapter_model.safetensors: no 'base_model.vblora_vector_bank'"));
  const std::string idx = "base_model.model.model.layers.1.self_attn.o_proj.vblora_logits_A_topk_indices";
  rewrite_adapter(topk, work / "bad_index", [&](auto& t) {
    for (auto& [k, v] : t)
      if (k == idx) v.view(-1)[0] = 300;
  });
  EXPECT_THAT(load_error(work / "bad_index"), HasSubstr("'" + idx + "' indexes outside the bank's 300 vectors"));
  const std::string w = "base_model.model.model.layers.1.mlp.gate_proj.vblora_logits_B_topk_weights";
  rewrite_adapter(topk, work / "no_weights", [&](auto& t) {
    std::erase_if(t, [&](const auto& p) { return p.first == w; });
  });
  EXPECT_THAT(load_error(work / "no_weights"), HasSubstr("has no '" + w + "' beside it"));
}

}  // namespace
}  // namespace peft
