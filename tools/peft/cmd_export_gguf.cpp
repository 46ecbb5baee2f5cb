// peft export-gguf DIR OUT.gguf: a LoRA adapter or a llama model for llama.cpp.
#include <filesystem>
#include <iostream>

#include "common.h"
#include "peft/gguf_export.h"

namespace fs = std::filesystem;

namespace peft::cli {

namespace {

struct ExportArgs {
  std::string dir, out, base, type, name, tokenizer_pre;
  bool force = false;
};

void run_export(const ExportArgs& a) {
  const bool adapter = fs::is_regular_file(fs::path(a.dir) / "adapter_config.json");
  if (!adapter && !fs::is_regular_file(fs::path(a.dir) / "config.json"))
    throw std::invalid_argument(a.dir + ": neither an adapter (adapter_config.json) nor a model (config.json)");
  if (!adapter && !a.base.empty()) throw std::invalid_argument("--base is for adapters; " + a.dir + " is a model");
  if (adapter && !a.tokenizer_pre.empty()) throw std::invalid_argument("--tokenizer-pre is for models; " + a.dir + " is an adapter");
  if (fs::exists(a.out) && !a.force) throw std::invalid_argument(a.out + ": exists (pass --force to replace it)");
  GgufExportType type = adapter ? GgufExportType::F32 : GgufExportType::F16;
  if (!a.type.empty() && !gguf_export_type_from_name(a.type, &type))
    throw std::invalid_argument("--type " + a.type + ": expected f32, f16, bf16 or q8_0");

  GgufExportReport r;
  if (adapter) r = export_lora_gguf(a.dir, a.out, {a.base, type, a.name});
  else r = export_model_gguf(a.dir, a.out, {type, a.name, a.tokenizer_pre});
  for (const auto& note : r.notes) std::cerr << "note: " << note << "\n";
  std::cerr << "wrote " << a.out << " (" << (adapter ? "LoRA adapter" : "llama model") << ", " << r.n_tensors
            << " tensors, " << gguf_export_type_name(type) << ")\n";
}

}  // namespace

void register_export_gguf(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "export-gguf",
      "Write a LoRA adapter or a merged model for llama.cpp, as llama.cpp's own converters "
      "(convert_lora_to_gguf.py, convert_hf_to_gguf.py) write them for the llama architecture "
      "(LlamaForCausalLM, MistralForCausalLM).\n"
      "  Adapter (DIR has adapter_config.json + adapter_model.safetensors): the GGUF that "
      "`llama-cli -m BASE.gguf --lora OUT.gguf` loads. The base's head counts come from --base (a Hugging Face "
      "folder or the base .gguf) or the local folder in base_model_name_or_path. llama.cpp scales every "
      "tensor by alpha / r, so rank_pattern is kept as is, and an rsLoRA adapter (alpha / sqrt(r)) is written "
      "with adapter.lora.alpha = lora_alpha * sqrt(r) (one rank only). Refused: DoRA, alpha_pattern, lora_bias, "
      "trained biases, modules_to_save, and LoRA on lm_head or embeddings of a base that ties them.\n"
      "  Model (DIR has config.json, model.safetensors or shards, and a byte-level BPE tokenizer.json): the model "
      "GGUF with its tokenizer and chat template; norms and 1-D tensors stay f32.\n"
      "Examples:\n"
      "  peft export-gguf ./my-adapter adapter.gguf --base ./SmolLM2-135M-Instruct\n"
      "  peft merge ./base ./my-adapter ./merged && peft export-gguf ./merged merged.gguf --type q8_0");
  auto a = std::make_shared<ExportArgs>();
  cmd->add_option("dir", a->dir, "Adapter folder or model folder")->required()->check(CLI::ExistingDirectory);
  cmd->add_option("out", a->out, "Output .gguf file")->required();
  cmd->add_option("--base", a->base, "Adapters: the base model (Hugging Face folder or .gguf)");
  cmd->add_option("--type", a->type, "Matrix type: f32, f16, bf16 or q8_0 (default: f32 for adapters, f16 for models)");
  cmd->add_option("--name", a->name, "general.name (default: from the folder's name, as the converters do)");
  cmd->add_option("--tokenizer-pre", a->tokenizer_pre,
                  "Models: tokenizer.ggml.pre when tokenizer.json's pre-tokenizer is not recognized");
  cmd->add_flag("--force", a->force, "Replace OUT if it exists");
  cmd->callback([a] { run_export(*a); });
}

}  // namespace peft::cli
