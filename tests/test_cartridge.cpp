// CARTRIDGE (HF PEFT's CartridgeConfig) against HF PEFT (tests/parity/make_cartridge.py):
//  - HF's adapters load with HF's logits (GQA Llama, GPT-2, frozen rows or none), and ours
//    resaved load in HF PEFT;
//  - the KV-prefix init from text (plain, through a chat template, and for prefix tuning)
//    gives HF's prompt_embeddings;
//  - `peft train` trains the unfrozen rows only, lowers the loss, and HF loads the result;
//  - bad settings are named.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "loss_file.h"
#include "method_suite.h"
#include "peft/cartridge.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/tokenizer.h"
#include "test_util.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using nlohmann::json;

namespace peft {
namespace {

const test::MethodSuite suite("cartridge");
const char* kCases[] = {"cart_llama", "cart_gpt2", "cart_text_llama", "cart_chat_llama", "prefix_text_llama"};

TEST(Cartridge, HfAdaptersLoadAndOursLoadInHf) {
  for (const std::string name : kCases) {
    SCOPED_TRACE(name);
    SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
    PeftModel m(load_model(suite.base_of(name).string()));
    m.load_adapter((suite.fixture(name) / "adapter").string());
    const auto in = test::inputs_of(ref);
    const double diff = test::max_diff(test::logits(m, in), ref.get("logits"), test::mask_of(ref));
    std::cout << name << ": max |logits - HF| " << diff << "\n";
    EXPECT_LE(diff, 1e-4);
    const auto work = suite.scratch("resave_" + name);
    test::expect_resave_round_trip(suite.base_of(name), suite.fixture(name) / "adapter", ref, work / "adapter",
                                   work / "outputs.safetensors", 1e-4);
    SafetensorsFile saved((work / "adapter" / "adapter_model.safetensors").string());
    EXPECT_TRUE(at::equal(saved.get("prompt_embeddings"), ref.get("prompt_embeddings")));
  }
}

// initialize_kv_prefix_from_text: the base's KV cache of the text (plain, or as a system
// message through the chat template) becomes the prefix, as in HF.
TEST(Cartridge, KvPrefixFromTextIsHfs) {
  for (const std::string name : {"cart_text_llama", "cart_chat_llama", "prefix_text_llama"}) {
    SCOPED_TRACE(name);
    SafetensorsFile ref((suite.fixture(name) / "reference.safetensors").string());
    PeftModel m(load_model(suite.base_of(name).string()));
    auto cfg = parse_user_adapter_config(
        json::parse(std::ifstream(suite.fixture(name) / "adapter" / "adapter_config.json")), "adapter_config.json");
    cfg->inference_mode = false;
    m.add_adapter("default", *cfg, 0);
    const auto tok = Tokenizer::from_file(suite.base_of(name).string());
    init_kv_prefix_from_text(m, "default", tok, suite.case_json(name)["text"].get<std::string>());
    const auto prefix = m.adapter_state_dict("default");
    ASSERT_EQ(prefix.size(), 1u);
    EXPECT_EQ(prefix[0].first, "prompt_embeddings");
    const double diff = (prefix[0].second - ref.get("prompt_embeddings")).abs().max().item<double>();
    std::cout << name << ": max |prompt_embeddings - HF| " << diff << "\n";
    EXPECT_LE(diff, 1e-5);
    EXPECT_LE(test::max_diff(test::logits(m, test::inputs_of(ref)), ref.get("logits"), test::mask_of(ref)), 1e-4);
  }
}

// `peft train` from a text-initialized cartridge: the frozen row keeps its init, the others
// move, the eval loss falls (a KV prefix moves a base with N(0, 0.02²) weights slowly: a
// large learning rate), and HF PEFT loads the adapter with our logits.
TEST(Cartridge, PeftTrainTrainsTheUnfrozenRows) {
  const auto work = suite.scratch("train");
  const std::string text = suite.case_json("cart_text_llama")["text"];
  const json method = {{"peft_type", "CARTRIDGE"}, {"num_virtual_tokens", 6}, {"num_frozen_tokens", 1}};
  json cfg = {{"model", suite.fixture("llama").string()},
              {"train_file", test::write_small_counting_data(work).string()},
              {"output_dir", (work / "out").string()}, {"method", method}, {"init_kv_prefix_text", text},
              {"max_steps", 60}, {"learning_rate", 1.0}, {"eval_split", 0.25}, {"eval_steps", 60},
              {"progress", false}};
  std::ofstream(work / "train.json") << cfg.dump(1);
  const auto r = test::run_cli({"train", "--config", (work / "train.json").string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  SafetensorsFile init((suite.fixture("cart_text_llama") / "reference.safetensors").string());
  SafetensorsFile trained((work / "out" / "adapter_model.safetensors").string());
  const auto before = init.get("prompt_embeddings"), after = trained.get("prompt_embeddings");
  ASSERT_EQ(after.sizes(), before.sizes());
  EXPECT_LE((after[0] - before[0]).abs().max().item<double>(), 1e-6) << "the frozen row moved";
  EXPECT_GT((after.narrow(0, 1, 5) - before.narrow(0, 1, 5)).abs().max().item<double>(), 1e-2);
  const double start = test::first_step_loss(work / "out"), end = test::last_eval_loss(work / "out");
  std::cout << "cartridge train: first step loss " << start << ", final eval loss " << end << "\n";
  EXPECT_LT(end, start - 0.1);
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.load_adapter((work / "out").string());
  const auto ours = test::logits(m, test::inputs_of(init));
  const auto outputs = test::write_outputs(init, "logits", ours, work / "outputs.safetensors");
  std::string log;
  EXPECT_EQ(test::check_in_python(suite.fixture("llama"), (work / "out").string(), outputs, &log), 0) << log;
}

TEST(CartridgeErrors, SettingsAreNamed) {
  auto error_of = [](const json& j) {
    try {
      parse_user_adapter_config(j, "method");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_THAT(error_of({{"peft_type", "CARTRIDGE"}, {"num_virtual_tokens", 2}, {"num_frozen_tokens", 3}}),
              HasSubstr("'num_frozen_tokens' (3) must be <= 'num_virtual_tokens' (2)"));
  EXPECT_THAT(error_of({{"peft_type", "CARTRIDGE"}, {"num_virtual_tokens", 2}, {"num_frozen_tokens", -1}}),
              HasSubstr("'num_frozen_tokens' must be >= 0"));
  EXPECT_THAT(error_of({{"peft_type", "CARTRIDGE"}, {"num_virtual_tokens", 2}, {"prefix_projection", true}}),
              HasSubstr("prefix_projection"));
  // A text shorter than the prefix, and the init on another method.
  PeftModel m(load_model(suite.fixture("llama").string()));
  m.add_adapter("default", *parse_user_adapter_config({{"peft_type", "CARTRIDGE"}, {"num_virtual_tokens", 6}}, "m"), 0);
  const auto tok = Tokenizer::from_file(suite.fixture("llama").string());
  try {
    init_kv_prefix_from_text(m, "default", tok, "the cat");
    ADD_FAILURE() << "a 2-token text was accepted for 6 virtual tokens";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("needs at least 6 tokens (num_virtual_tokens); the text gives 2"));
  }
  m.add_adapter("lora", *parse_user_adapter_config({{"peft_type", "LORA"}, {"target_modules", {"q_proj"}}}, "m"), 0);
  try {
    init_kv_prefix_from_text(m, "lora", tok, "the cat sat on the mat and then");
    ADD_FAILURE() << "a KV-prefix init of a LoRA adapter was accepted";
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), HasSubstr("needs a CARTRIDGE or PREFIX_TUNING adapter; 'lora' is LORA"));
  }
}

}  // namespace
}  // namespace peft
