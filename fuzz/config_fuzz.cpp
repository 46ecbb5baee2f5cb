// Feeds arbitrary bytes, as JSON, to what reads a user's JSON: config.json of every model
// family, peft train's config (and key=value overrides), and a chat line rendered through
// a chat template. Every outcome must be a result or a std::exception; never a crash, a
// sanitizer report, a hang or a leak.
#include <cstdint>
#include <string>

#include "models/model_config.h"
#include "peft/jinja.h"
#include "peft/train.h"
#include "util/json_file.h"

namespace {

template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const std::exception&) {
  }
}

const peft::ChatTemplate& chatml() {
  static const auto t = peft::ChatTemplate::parse(
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
      "You are helpful.<|im_end|>\\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
      "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
      "fuzz");
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json j;
  try {
    j = peft::parse_json(text, "fuzz");
  } catch (const std::exception&) {
    return 0;
  }
  expect_clean([&] { peft::LlamaConfig::from_json(j, "Llama", "fuzz"); });
  expect_clean([&] { peft::LlamaConfig::from_json(j, "Qwen3", "fuzz"); });
  expect_clean([&] { peft::LlamaConfig::from_json(j, "Phi3", "fuzz"); });
  expect_clean([&] { peft::GemmaConfig::from_json(j, "Gemma2", "fuzz"); });
  expect_clean([&] { peft::GemmaConfig::from_json(j, "Gemma3", "fuzz"); });
  expect_clean([&] { peft::GPT2Config::from_json(j, "fuzz"); });
  expect_clean([&] { peft::BertConfig::from_json(j, "fuzz"); });
  expect_clean([&] { peft::ViTConfig::from_json(j, "fuzz"); });
  expect_clean([&] { peft::TrainConfig::from_json(j, "fuzz"); });
  expect_clean([&] {
    if (j.is_object() && j.size() < 64)
      for (const auto& [k, v] : j.items())
        peft::TrainConfig::from_json(peft::TrainConfig::with_overrides(nlohmann::json::object(), {k + "=" + v.dump()}),
                                     "fuzz");
  });
  expect_clean([&] {
    const auto messages = peft::parse_ordered_json(text, "fuzz");
    peft::render_chat(chatml(), messages.is_object() && messages.contains("messages") ? messages["messages"] : messages,
                      true, nlohmann::ordered_json::object());
  });
  return 0;
}
