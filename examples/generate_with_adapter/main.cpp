// Loads a causal LM and an HF PEFT adapter folder (from HF PEFT's save_pretrained, `peft
// train`, or the train_lora example) and continues a prompt greedily.
//
//   generate_with_adapter MODEL_DIR ADAPTER_DIR [PROMPT]
//
// With a tokenizer.json in MODEL_DIR the prompt is text; without one it is read as token
// ids ("1 2 3"), and the output is ids.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <peft/generate.h>
#include <peft/model.h>
#include <peft/peft_model.h>
#include <peft/tokenizer.h>

int main(int argc, char** argv) try {
  if (argc < 3) {
    std::cerr << "usage: generate_with_adapter MODEL_DIR ADAPTER_DIR [PROMPT]\n";
    return 2;
  }
  const std::string model_dir = argv[1], adapter_dir = argv[2];
  const bool has_tokenizer = std::filesystem::exists(std::filesystem::path(model_dir) / "tokenizer.json");
  const std::string prompt = argc > 3 ? argv[3] : has_tokenizer ? "Once upon a time" : "3 4 5";

  auto model = peft::load_model(model_dir);
  peft::PeftModel peft(model);
  peft.load_adapter(adapter_dir, "default");  // loaded adapters start active, in inference mode
  peft.train(false);

  peft::GenerationConfig gen;  // greedy
  gen.max_new_tokens = 16;
  if (model->config().contains("eos_token_id") && model->config()["eos_token_id"].is_number_integer())
    gen.eos_token_ids = {model->config()["eos_token_id"].get<int64_t>()};

  std::vector<int64_t> ids;
  std::optional<peft::Tokenizer> tok;
  if (has_tokenizer) {
    tok = peft::Tokenizer::from_file(model_dir);
    ids = tok->encode(prompt).ids;
  } else {
    std::istringstream in(prompt);
    for (int64_t id; in >> id;) ids.push_back(id);
  }
  c10::NoGradGuard no_grad;
  const auto rows = peft::generate(peft.model(), {ids}, gen);
  const std::vector<int64_t> completion(rows[0].begin() + static_cast<long>(ids.size()), rows[0].end());
  if (tok) {
    std::cout << prompt << tok->decode(completion, /*skip_special_tokens=*/true) << "\n";
  } else {
    for (size_t i = 0; i < rows[0].size(); ++i) std::cout << (i ? " " : "") << rows[0][i];
    std::cout << "\n";
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
