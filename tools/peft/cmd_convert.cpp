// peft convert MODEL.gguf OUT_DIR: a GGUF model as an ordinary Hugging Face folder.
#include <filesystem>
#include <iostream>

#include "common.h"
#include "io/checkpoint_reader.h"
#include "peft/gguf.h"
#include "peft/gguf_llama.h"
#include "util/atomic_file.h"

namespace fs = std::filesystem;

namespace peft::cli {

void register_convert(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "convert",
      "Write a GGUF model (llama architecture, any of F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1/Q2_K..Q6_K) as a Hugging "
      "Face folder: model.safetensors, config.json, tokenizer.json and tokenizer_config.json (with the chat "
      "template), dequantized and renamed exactly as transformers loads it.\n"
      "Example: peft convert SmolLM2-135M-Instruct.Q4_1.gguf ./smollm2");
  auto model = std::make_shared<ModelArgs>();
  auto out = std::make_shared<std::string>();
  auto force = std::make_shared<bool>(false);
  model->add_to(cmd);
  cmd->add_option("out_dir", *out, "Output folder (must not hold weights yet)")->required();
  cmd->add_flag("--force", *force, "Replace the weights already in out_dir");
  cmd->callback([=] {
    const ModelPath where = resolve_model_path(model->dir);
    if (where.gguf.empty()) throw std::invalid_argument(model->dir + ": not a GGUF model (nothing to convert)");
    check_save_target(*out, *force);
    auto m = model->load();
    save_pretrained(*m, *out, *force);
    const HfTokenizerFiles tok = hf_tokenizer_from_gguf(GgufFile(where.gguf).header());
    write_json_atomic((fs::path(*out) / "tokenizer.json").string(), tok.tokenizer, -1);
    write_json_atomic((fs::path(*out) / "tokenizer_config.json").string(), tok.tokenizer_config);
    std::cerr << "wrote " << *out << " (" << m->type_name() << ", " << m->num_parameters() << " parameters, "
              << c10::toString(m->dtype()) << ")\n";
  });
}

}  // namespace peft::cli
