// X-LoRA (HF PEFT 0.21's XLORA) against X-LoRA adapters HF PEFT made over three LoRA
// adapters on the tiny Llama (tests/parity/make_xlora.py):
//  - they load here with HF's logits (<= 1e-4), HF's scalings of the inputs (the
//    classifier's output after the scaling pass) and HF's trainable-parameter line: the
//    defaults, a deeper layerwise classifier with top-k, temperature and softmax over the
//    kept experts, a non-zero scaling-pass value without softmax;
//  - a KV-cached decode (the scaling pass keeps its own cache) gives the full forward's
//    logits, and greedy generate() gives HF's tokens (HF's generate with use_cache=False);
//  - a new X-LoRA from the LoRA folders has HF's classifier (file keys, shapes, nn.Linear's
//    init bounds), experts frozen;
//  - `peft train` trains the classifier only; resaved and trained adapters load in HF PEFT
//    with our logits (one Python process); bad settings and folders are named, among them
//    adapter names other than "0", "1", ... (HF fails on them) and the incomplete classifier
//    HF PEFT 0.21's save_pretrained writes (fixtures file the whole classifier).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "peft/generate.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/xlora.h"
#include "generation_rows.h"
#include "loss_file.h"
#include "method_suite.h"
#include "suite_checks.h"
#include "test_util.h"

using ::testing::AllOf;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;
const std::vector<std::string> kCases = {"xlora_llama", "xlora_llama_opts", "xlora_llama_pass"};

const test::MethodSuite suite("xlora");

std::string lora_dir(int i) { return (suite.fixture("loras") / ("lora_" + std::to_string(i))).string(); }

XLoraClassifier* classifier_of(PeftModel& m, const std::string& name = "default") {
  return dynamic_cast<XLoraClassifier*>(m.input_adapter(name));
}

class HfXLora : public ::testing::TestWithParam<std::string> {};

TEST_P(HfXLora, LoadsWithHfLogitsAndTrainableLine) { suite.expect_loads_as_hf(GetParam(), kLogitTol); }

// The classifier's output for the inputs, after the scaling pass: HF's get_latest_scalings().
TEST_P(HfXLora, ScalingsAreHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  test::logits(m, test::inputs_of(ref));
  auto* c = classifier_of(m);
  ASSERT_NE(c, nullptr);
  const auto got = c->state().latest;
  const auto want = ref.get("scalings");
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_EQ(got.size(2), suite.case_json(name)["n_layers"].get<int64_t>());
  const double d = (got.to(at::kFloat) - want).abs().max().item<double>();
  std::cout << name << ": max |scalings - HF| = " << d << "\n";
  EXPECT_LE(d, 1e-5);
}

TEST_P(HfXLora, CannotMergeAndDisablesToTheBase) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  const auto in = test::inputs_of(ref);
  const auto base = test::logits(m, in);
  m.load_adapter((suite.fixture(name) / "adapter").string());
  EXPECT_THROW(m.merge(), std::logic_error);
  {
    auto off = m.disable_adapters();
    EXPECT_LE(test::max_diff(test::logits(m, in), base, test::mask_of(ref)), 1e-6);
  }
  EXPECT_LE(test::max_diff(test::logits(m, in), ref.get("logits"), test::mask_of(ref)), kLogitTol);
}

// Prefill then one token at a time with a KV cache: the scaling pass keeps its own cache
// beside the model's, so every position gets the full forward's logits (HF reruns both
// passes over the whole sequence instead: it requires use_cache=False).
TEST_P(HfXLora, CachedDecodeMatchesFullForward) { test::expect_cached_decode_matches_full(suite, GetParam()); }

// `peft generate`'s greedy decode (KV-cached, a left-padded batch) gives HF's tokens
// (HF's generate with use_cache=False).
TEST_P(HfXLora, GreedyGenerationIsHfs) {
  const auto name = GetParam();
  SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
  PeftModel m(load_model(suite.base_of(name).string()));
  m.load_adapter((suite.fixture(name) / "adapter").string());
  GenerationConfig cfg;
  cfg.max_new_tokens = 5;
  const auto mask = ref.get("gen_prompt_mask");
  EXPECT_EQ(generate(m.model(), test::unpadded(ref.get("gen_prompt_ids"), mask), cfg),
            test::unpadded(ref.get("gen_ids"), mask));
}

INSTANTIATE_TEST_SUITE_P(XLora, HfXLora, ::testing::ValuesIn(kCases));

// A new X-LoRA of each case's config: HF's classifier (file keys and shapes, nn.Linear's
// default init within ±1/√fan_in), HF's trainable line; the experts stay frozen.
TEST(XLora, NewAdapterHasHfsClassifier) {
  for (const auto& name : kCases) {
    auto cfg = json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json"));
    PeftModel m(load_model(suite.base_of(name).string()));
    m.add_adapter("default", *parse_adapter_config(cfg, "new"), 5);
    EXPECT_EQ(m.trainable_parameters_line(), suite.case_json(name)["trainable"].get<std::string>()) << name;
    const auto mine = m.adapter_state_dict("default");
    SafetensorsFile hf((suite.fixture(name) / "adapter" / "adapter_model.safetensors").string());
    ASSERT_EQ(mine.size(), hf.names().size()) << name;
    for (const auto& [key, t] : mine) {
      ASSERT_TRUE(hf.contains(key)) << name << ": " << key;
      EXPECT_EQ(t.sizes(), hf.get(key).sizes()) << key;
      const double fan_in = static_cast<double>(key.ends_with(".weight") ? t.size(1) : 0);
      if (fan_in > 0) {
        const double bound = 1.0 / std::sqrt(fan_in);
        EXPECT_LE(t.abs().max().item<double>(), bound) << key;
        // U(-b, b) has standard deviation b/√3.
        if (t.numel() >= 64) {
          EXPECT_NEAR(t.std().item<double>(), bound / std::sqrt(3.0), 0.35 * bound) << key;
        }
      }
    }
    // Only the classifier trains.
    int64_t trainable = 0;
    for (const auto& t : m.trainable_tensors()) trainable += t.numel();
    int64_t classifier = 0;
    for (const auto& [_, t] : mine) classifier += t.numel();
    EXPECT_EQ(trainable, classifier) << name;
    SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
    const auto out = test::logits(m, test::inputs_of(ref));
    EXPECT_TRUE(at::isfinite(out).all().item<bool>()) << name;
  }
}

// Resaved HF adapters hold exactly HF's keys (the classifier) and, with one trained here by
// `peft train` (which moves only the classifier), load in HF PEFT with our logits.
TEST(XLoraTrain, PeftTrainTrainsTheClassifierAndHfLoadsOurs) {
  std::vector<std::string> args;
  for (const auto& name : kCases) test::resave_for_hf_check(suite, name, &args);
  const auto work = suite.scratch("train");
  const json method = {{"peft_type", "XLORA"},
                       {"hidden_size", 32},
                       {"adapters", {{"0", lora_dir(0)}, {"1", lora_dir(1)}, {"2", lora_dir(2)}}},
                       {"xlora_depth", 2},
                       {"xlora_size", 16},
                       {"xlora_dropout_p", 0.0}};
  const auto out = suite.train_with_cli(work, method, 40, 0.05, {{"eval_split", 0.25}, {"eval_steps", 40}});
  const double start = test::first_step_loss(out), end = test::last_eval_loss(out);
  std::cout << "xlora train: first step loss " << start << ", final eval loss " << end << "\n";
  EXPECT_LT(end, start);
  // The experts are read from their folders again: unchanged.
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.load_adapter(out.string());
  SafetensorsFile lora0((std::filesystem::path(lora_dir(0)) / "adapter_model.safetensors").string());
  const std::string key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";
  auto* host = dynamic_cast<AdaptableLayer*>(m.model().find("model.layers.0.self_attn.q_proj"));
  ASSERT_NE(host, nullptr);
  const auto* layer = dynamic_cast<const XLoraLayer*>(host->adapter("default"));
  ASSERT_NE(layer, nullptr);
  EXPECT_TRUE(at::equal(layer->experts[0].B.cpu(), lora0.get(key)));
  const auto triple = suite.check_case(suite.fixture("llama"), out, "xlora_llama", work);
  args.insert(args.end(), triple.begin(), triple.end());
  suite.expect_hf_checks("make_xlora.py", args);
}

using test::user_config_error;

std::string xlora_json(const std::string& extra) {
  return R"({"peft_type": "XLORA", "hidden_size": 32, "adapters": {"0": ")" + lora_dir(0) + R"(", "1": ")" +
         lora_dir(1) + "\"}" + extra + "}";
}

TEST(XLoraErrors, BadSettingsAndFoldersAreNamed) {
  EXPECT_THAT(user_config_error(R"({"peft_type": "XLORA", "hidden_size": 32})"), HasSubstr("'adapters'"));
  EXPECT_THAT(user_config_error(R"({"peft_type": "XLORA", "hidden_size": 32, "adapters": {"0": "/nonexistent/x"}})"),
              HasSubstr("adapters.0: no adapter_config.json in '/nonexistent/x'"));
  EXPECT_THAT(user_config_error(xlora_json(R"(, "xlora_depth": 0)")), HasSubstr("'xlora_depth' must be strictly positive"));
  EXPECT_THAT(user_config_error(xlora_json(R"(, "top_k_lora": 3)")),
              HasSubstr("'top_k_lora' must be between 1 and the number of adapters (2)"));
  EXPECT_THAT(user_config_error(xlora_json(R"(, "top_k_lora": 0)")), HasSubstr("'top_k_lora'"));
  EXPECT_THAT(user_config_error(xlora_json(R"(, "softmax_temperature": 0)")), HasSubstr("'softmax_temperature'"));
  EXPECT_THAT(user_config_error(xlora_json(R"(, "xlora_dropout_p": 1.5)")), HasSubstr("'xlora_dropout_p'"));
  EXPECT_THAT(user_config_error(xlora_json(R"(, "target_modules": ["q_proj"])")), HasSubstr("'target_modules'"));
  EXPECT_THAT(user_config_error(xlora_json(R"(, "top_k": 2)")), HasSubstr("top_k"));  // a typo of top_k_lora
  EXPECT_THAT(user_config_error(R"({"peft_type": "XLORA", "hidden_size": 32, "adapters": {"math": ")" + lora_dir(0) +
                                "\"}}"),
              HasSubstr("adapter name 'math' must be an adapter index"));
  // An X-LoRA folder is no LoRA adapter.
  const std::string nested = R"({"peft_type": "XLORA", "hidden_size": 32, "adapters": {"0": ")" +
                             (suite.fixture("xlora_llama") / "adapter").string() + "\"}}";
  EXPECT_THAT(user_config_error(nested), HasSubstr("peft_type 'XLORA' is not LORA"));
  // hidden_size must be the model's.
  {
    PeftModel m(load_model(suite.fixture("llama").string()));
    auto j = json::parse(xlora_json(""));
    j["hidden_size"] = 64;
    try {
      m.add_adapter("default", *parse_user_adapter_config(j, "method"));
      ADD_FAILURE() << "hidden_size 64 accepted";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), HasSubstr("'hidden_size' is 64 but LlamaForCausalLM's hidden size is 32"));
    }
  }
}

// A classifier file of another shape (another number of adapters), and a missing LoRA folder
// at load time, are named.
TEST(XLoraErrors, MismatchedFilesAreNamed) {
  const auto work = suite.scratch("errors");
  // xlora_llama's classifier (3 adapters) with a config naming two.
  std::filesystem::copy(suite.fixture("xlora_llama") / "adapter", work / "two", std::filesystem::copy_options::recursive);
  auto cfg = json::parse(std::ifstream(work / "two" / "adapter_config.json"));
  cfg["adapters"].erase("2");
  std::ofstream(work / "two" / "adapter_config.json") << cfg.dump(2);
  {
    PeftModel m(load_model(suite.fixture("llama").string()));
    try {
      m.load_adapter((work / "two").string());
      ADD_FAILURE() << "a 3-adapter classifier loaded for 2 adapters";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr("internal_xlora_classifier.layers.0.weight' has shape [3, 32]"), HasSubstr("a classifier for 3 adapters, but 'adapters' names 2")));
    }
  }
  std::filesystem::copy(suite.fixture("xlora_llama") / "adapter", work / "gone", std::filesystem::copy_options::recursive);
  cfg = json::parse(std::ifstream(work / "gone" / "adapter_config.json"));
  cfg["adapters"]["1"] = (work / "missing_lora").string();
  std::filesystem::remove_all(work / "gone" / "1");  // and no copy beside the config
  std::ofstream(work / "gone" / "adapter_config.json") << cfg.dump(2);
  {
    PeftModel m(load_model(suite.fixture("llama").string()));
    try {
      m.load_adapter((work / "gone").string());
      ADD_FAILURE() << "a missing LoRA folder loaded";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), HasSubstr("adapters.1: no adapter_config.json in"));
    }
  }
  // The file HF PEFT 0.21 saved itself: its adapter-name filter dropped "layers.0.*".
  std::filesystem::copy(suite.fixture("xlora_llama_opts") / "adapter", work / "hf_saved",
                        std::filesystem::copy_options::recursive);
  std::filesystem::copy_file(suite.fixture("xlora_llama_opts") / "hf_saved_adapter_model.safetensors",
                             work / "hf_saved" / "adapter_model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  {
    PeftModel m(load_model(suite.fixture("llama").string()));
    try {
      m.load_adapter((work / "hf_saved").string());
      ADD_FAILURE() << "HF's incomplete classifier loaded";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr("missing tensor 'base_model.internal_xlora_classifier.layers.0.weight'"),
                                  HasSubstr("save_pretrained leaves out")));
    }
  }
  // The LoRA folders gone: named (the "<i>/" folders HF's save_pretrained writes beside the
  // config hold its classifier, not the LoRA adapters, so they cannot stand in).
  std::filesystem::copy(suite.fixture("xlora_llama") / "adapter", work / "moved",
                        std::filesystem::copy_options::recursive);
  cfg = json::parse(std::ifstream(work / "moved" / "adapter_config.json"));
  for (const auto& k : {"0", "1", "2"}) cfg["adapters"][k] = (work / "nowhere" / k).string();
  std::ofstream(work / "moved" / "adapter_config.json") << cfg.dump(2);
  {
    PeftModel m(load_model(suite.fixture("llama").string()));
    try {
      m.load_adapter((work / "moved").string());
      ADD_FAILURE() << "an X-LoRA whose LoRA folders are gone loaded";
    } catch (const std::exception& e) {
      EXPECT_THAT(e.what(), AllOf(HasSubstr("adapters.0"), HasSubstr("no adapter_config.json in"),
                                  HasSubstr("nowhere/0")));
    }
  }
}

}  // namespace
}  // namespace peft
