#include "common.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/checkpoint_reader.h"
#include "peft/gguf.h"
#include "peft/gguf_llama.h"
#include "util/atomic_file.h"
#include "util/json_file.h"

namespace fs = std::filesystem;

namespace peft::cli {

void ModelArgs::add_to(CLI::App* app) {
  app->add_option("model", dir, "Model: a Hugging Face folder (config.json + *.safetensors) or a .gguf file")
      ->required()
      ->check(CLI::ExistingPath);
  app->add_option("--dtype", dtype, "Compute dtype: float32, bfloat16, float16")->capture_default_str();
  app->add_option("--device", device, "cpu, cuda or cuda:N")->capture_default_str();
  auto* q = app->add_flag("--load-in-4bit", load_in_4bit,
                          "Store the Linear weights 4-bit as they load (QLoRA; bitsandbytes' format; the output "
                          "head stays full precision). A checkpoint saved 4-bit loads 4-bit without it");
  app->add_option("--quant-type", quant_type, "With --load-in-4bit: nf4 or fp4")
      ->check(CLI::IsMember({"nf4", "fp4"}))
      ->capture_default_str()
      ->needs(q);
  app->add_flag("--double-quant", double_quant, "With --load-in-4bit: quantize the block scales too (~0.4 bit/param)")
      ->needs(q);
  app->add_option("--blocksize", blocksize, "With --load-in-4bit: elements per scale, a power of two in 32..4096")
      ->capture_default_str()
      ->needs(q);
  app->add_option("--skip-modules", skip_modules,
                  "With --load-in-4bit: Linear layers kept full precision (llm_int8_skip_modules; names, dotted "
                  "suffixes or regexes), replacing the default (the output head and the last module)")
      ->needs(q);
  app->add_option("--compute-dtype", compute_dtype,
                  "4-bit layers compute in: float32 or bfloat16 (default: the checkpoint's, else float32)")
      ->check(CLI::IsMember({"float32", "bfloat16", "float16"}));
}

std::shared_ptr<Model> ModelArgs::load() const {
  LoadOptions o;
  o.dtype = parse_dtype(dtype);
  o.device = device;
  if (load_in_4bit) o.load_in_4bit = Load4bit{quant_type, double_quant, blocksize, std::nullopt, skip_modules};
  // Alone, --compute-dtype applies to a checkpoint saved 4-bit and quantizes nothing.
  if (!compute_dtype.empty()) o.compute_dtype_4bit = parse_dtype(compute_dtype);
  return load_model(dir, o);
}

void AdapterArgs::add_to(CLI::App* app) {
  app->add_option("--adapter", dirs, "Adapter folder (adapter_config.json + adapter_model.safetensors); repeatable")
      ->check(CLI::ExistingDirectory);
  app->add_option("--adapter-name", names, "Name for each --adapter, in order (default: default, adapter1, ...)");
  app->add_flag("--merged", merged, "Merge the adapters into the base weights before running");
}

std::unique_ptr<PeftModel> AdapterArgs::apply(std::shared_ptr<Model> model) const {
  if (dirs.empty()) {
    if (merged || !names.empty()) throw std::invalid_argument("--merged and --adapter-name need --adapter");
    report_new_heads(*model, nullptr);
    return nullptr;
  }
  if (!names.empty() && names.size() != dirs.size())
    throw std::invalid_argument("give one --adapter-name per --adapter (" + std::to_string(dirs.size()) + ")");
  auto peft = std::make_unique<PeftModel>(model);
  std::vector<std::string> active;
  for (size_t i = 0; i < dirs.size(); ++i) {
    std::string name = names.empty() ? (i == 0 ? "default" : "adapter" + std::to_string(i)) : names[i];
    peft->load_adapter(dirs[i], name);
    active.push_back(name);
  }
  peft->set_adapter(active);
  if (merged) peft->merge();
  report_new_heads(*model, peft.get());
  return peft;
}

at::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "fp16") return at::kHalf;
  throw std::invalid_argument("unknown dtype '" + name + "' (float32, bfloat16, float16)");
}

std::vector<std::vector<int64_t>> read_id_lists(const std::string& path) {
  const nlohmann::json j = read_json_file(path);
  if (!j.is_array() || j.empty()) throw std::runtime_error(path + ": expected a non-empty list of token-id lists");
  std::vector<std::vector<int64_t>> rows;
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& r = j[i];
    if (!r.is_array() || r.empty())
      throw std::runtime_error(path + ": row " + std::to_string(i) + " is not a non-empty list of ids");
    std::vector<int64_t> row;
    for (const auto& v : r) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0)
        throw std::runtime_error(path + ": row " + std::to_string(i) + " has a non-integer or negative id: " +
                                 quote_json(v));
      row.push_back(v.get<int64_t>());
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

void pad_right(const std::vector<std::vector<int64_t>>& rows, int64_t pad, at::Tensor* ids, at::Tensor* mask) {
  size_t len = 0;
  for (const auto& r : rows) len = std::max(len, r.size());
  const auto b = static_cast<int64_t>(rows.size());
  *ids = at::full({b, static_cast<int64_t>(len)}, pad, at::kLong);
  *mask = at::zeros({b, static_cast<int64_t>(len)}, at::kLong);
  for (int64_t i = 0; i < b; ++i) {
    const auto n = static_cast<int64_t>(rows[i].size());
    (*ids)[i].narrow(0, 0, n).copy_(at::tensor(rows[i], at::kLong));
    (*mask)[i].narrow(0, 0, n).fill_(1);
  }
}

namespace {

constexpr const char* kCompanionFiles[] = {
    "tokenizer.json",   "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
    "chat_template.json", "generation_config.json", "tokenizer.model",      "vocab.txt",
    "vocab.json",       "merges.txt",            "added_tokens.json",      "preprocessor_config.json"};

}  // namespace

int copy_companions(const std::string& model_path, const std::string& out_dir) {
  const ModelPath src = resolve_model_path(model_path);
  const fs::path out(out_dir);
  if (!src.gguf.empty()) {
    // A GGUF file carries its tokenizer and chat template in its metadata.
    const HfTokenizerFiles tok = hf_tokenizer_from_gguf(GgufFile(src.gguf).header());
    write_json_atomic((out / "tokenizer.json").string(), tok.tokenizer, -1);
    write_json_atomic((out / "tokenizer_config.json").string(), tok.tokenizer_config);
    return 2;
  }
  std::error_code ec;
  if (fs::equivalent(src.folder, out, ec)) return 0;
  int n = 0;
  for (const char* name : kCompanionFiles)
    if (fs::is_regular_file(fs::path(src.folder) / name)) {
      write_file_atomic((out / name).string(), read_file_bytes((fs::path(src.folder) / name).string()));
      ++n;
    }
  return n;
}

}  // namespace peft::cli
