// peft quantize MODEL OUT_DIR: store a model's Linear weights 4-bit (bitsandbytes' NF4/FP4),
// as a folder transformers + bitsandbytes load with no extra arguments.
#include <ATen/ATen.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "common.h"
#include "io/checkpoint_reader.h"
#include "peft/layers.h"
#include "peft/safetensors.h"
#include "quant/linear_4bit.h"
#include "util/format.h"
#include "util/json_file.h"

namespace fs = std::filesystem;

namespace peft::cli {

namespace {

std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

struct QuantizeArgs {
  std::string model, out;
  std::string quant_type = "nf4";
  bool double_quant = false;
  int64_t blocksize = 64;
  std::string compute_dtype = "float32";
  std::string dtype = "float32";
  std::vector<std::string> skip_modules;
  bool overwrite = false;
};

void quantize(const QuantizeArgs& a) {
  const ModelPath src = resolve_model_path(a.model);
  std::error_code ec;
  if (src.gguf.empty() && fs::exists(a.out) && fs::equivalent(src.folder, a.out, ec))
    throw std::runtime_error(a.out + ": is the model folder itself; write the quantized model to another folder");
  try {
    check_save_target(a.out, a.overwrite);
  } catch (const std::runtime_error& e) {
    // Its advice names merge's flag; this command's is --overwrite.
    std::string m = e.what();
    if (auto p = m.rfind("--force"); p != std::string::npos) m.replace(p, 7, "--overwrite");
    throw std::runtime_error(m);
  }

  ModelArgs m;
  m.dir = a.model;
  m.dtype = a.dtype;
  m.load_in_4bit = true;
  m.quant_type = a.quant_type;
  m.double_quant = a.double_quant;
  m.blocksize = a.blocksize;
  m.compute_dtype = a.compute_dtype;
  m.skip_modules = a.skip_modules;
  // A folder saved 4-bit would load from its stored codes, ignoring these settings.
  if (src.gguf.empty()) {
    const auto config = read_json_file((fs::path(src.folder) / "config.json").string());
    if (auto qc = config.find("quantization_config"); qc != config.end() && !qc->is_null())
      throw std::runtime_error((fs::path(src.folder) / "config.json").string() +
                               ": quantization_config says the model is quantized already");
  }
  auto model = m.load();

  // Parameters and bytes at full precision, the dtype the weights were loaded (and
  // quantized) in; a 4-bit layer counts its weight's elements, not its packed bytes.
  int64_t params = 0, dense_bytes = 0, layers = 0, linear = 0;
  std::vector<std::string> kept;
  for (auto& [name, mod] : model->named_modules()) {
    auto* l = dynamic_cast<Linear*>(mod);
    if (!l) continue;
    ++linear;
    if (l->weight_4bit) ++layers;
    else kept.push_back(name);
  }
  std::map<const void*, const Linear*> four_bit;  // packed storage -> its layer
  for (auto& [name, mod] : model->named_modules())
    if (auto* l = dynamic_cast<Linear*>(mod); l && l->weight_4bit) four_bit[l->weight.data_ptr()] = l;
  for (const auto& [name, t] : model->named_parameters()) {
    auto q = four_bit.find(t.data_ptr());
    if (q != four_bit.end()) {
      const auto& st = q->second->weight_4bit->state;
      params += st.numel();
      dense_bytes += st.numel() * static_cast<int64_t>(c10::elementSize(st.dtype));
    } else {
      params += t.numel();
      dense_bytes += t.numel() * static_cast<int64_t>(t.element_size());
    }
  }
  if (layers == 0) throw std::runtime_error(a.model + ": no Linear layer to quantize (" + model->type_name() + ")");

  save_pretrained(*model, a.out, a.overwrite);
  const int companions = copy_companions(a.model, a.out);
  int64_t stored_bytes = 0;
  {
    SafetensorsFile written((fs::path(a.out) / "model.safetensors").string());
    for (const auto& info : written.header().tensors) stored_bytes += static_cast<int64_t>(info.end - info.begin);
  }

  std::cout << "quantized " << layers << " of " << linear << " Linear layers to " << a.quant_type << " (blocksize "
            << a.blocksize << ", double quant " << (a.double_quant ? "yes" : "no") << ", compute dtype "
            << a.compute_dtype << ")\n";
  if (!kept.empty()) {
    std::cout << "kept in " << a.dtype << ": ";
    for (size_t i = 0; i < kept.size(); ++i) std::cout << (i ? ", " : "") << kept[i];
    std::cout << (a.skip_modules.empty() ? " (as transformers does: the output head, tied weights and the last module)\n"
                                         : " (--skip-modules)\n");
  }
  std::cout << "parameters: " << with_commas(params) << "\n"
            << "bytes: " << with_commas(dense_bytes) << " (" << a.dtype << ") -> " << with_commas(stored_bytes)
            << " (" << fixed(100.0 * static_cast<double>(stored_bytes) / static_cast<double>(dense_bytes), 1)
            << "%)\n"
            << "bytes per parameter: " << fixed(static_cast<double>(dense_bytes) / static_cast<double>(params), 2)
            << " -> " << fixed(static_cast<double>(stored_bytes) / static_cast<double>(params), 3) << "\n"
            << "wrote " << a.out << " (config.json with quantization_config, model.safetensors"
            << (companions ? ", " + std::to_string(companions) + " tokenizer/generation file(s)" : std::string())
            << ")\n";
}

}  // namespace

void register_quantize(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "quantize",
      "Quantize a model's Linear weights to 4 bits (QLoRA's NF4 or FP4, bitsandbytes' format) and write a Hugging "
      "Face folder that transformers + bitsandbytes load as it is (AutoModelForCausalLM.from_pretrained(OUT_DIR)) "
      "and every peft command loads 4-bit. The output head, tied weights and the last module stay full precision, as "
      "in transformers. Tokenizer and generation files are copied.\n"
      "Example: peft quantize ./SmolLM2-135M ./SmolLM2-135M-nf4 --double-quant\n"
      "         peft train model=./SmolLM2-135M-nf4 train_file=data.jsonl   # QLoRA on it");
  auto a = std::make_shared<QuantizeArgs>();
  cmd->add_option("model", a->model, "Model: a Hugging Face folder (config.json + *.safetensors) or a .gguf file")
      ->required()
      ->check(CLI::ExistingPath);
  cmd->add_option("out_dir", a->out, "Output folder (must not hold weights yet, unless --overwrite)")->required();
  cmd->add_option("--quant-type", a->quant_type, "nf4 (QLoRA's normal float) or fp4")
      ->check(CLI::IsMember({"nf4", "fp4"}))
      ->capture_default_str();
  cmd->add_flag("--double-quant", a->double_quant, "Quantize the block scales too (about 0.4 bit per parameter less)");
  cmd->add_option("--blocksize", a->blocksize, "Elements per scale, a power of two in 32..4096 (transformers: 64)")
      ->capture_default_str();
  cmd->add_option("--compute-dtype", a->compute_dtype,
                  "What the 4-bit layers compute in, written as bnb_4bit_compute_dtype: float32 or bfloat16")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}))
      ->capture_default_str();
  cmd->add_option("--skip-modules", a->skip_modules,
                  "Linear layers to keep full precision instead of the default (written as llm_int8_skip_modules), "
                  "e.g. --skip-modules classifier");
  cmd->add_option("--dtype", a->dtype,
                  "Weights are converted to this before quantizing (the quant state records it) and the layers "
                  "kept full precision are stored in it: float32, bfloat16, float16")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}))
      ->capture_default_str();
  cmd->add_flag("--overwrite", a->overwrite, "Replace the weights already in out_dir");
  cmd->callback([a] { quantize(*a); });
}

}  // namespace peft::cli
