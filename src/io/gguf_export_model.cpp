// A llama-architecture Hugging Face folder as the model GGUF convert_hf_to_gguf.py writes
// (LlamaModel over TextModel/ModelBase in llama.cpp's conversion/llama.py and
// conversion/base.py): metadata in the converter's order, tensors in its order (shards
// sorted, names sorted within each), q/k rows permuted, 1-D tensors and norms in F32,
// matrices in the requested type.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numbers>
#include <set>

#include "io/gguf_export_internal.h"
#include "peft/gguf_llama.h"

namespace fs = std::filesystem;

namespace peft {
namespace gguf_export {
namespace {

// The safetensors files of the model, as ModelBase.index_tensors picks them: the index's
// files if there is one, else every model*.safetensors; sorted by name.
std::vector<std::string> weight_files(const fs::path& dir) {
  const fs::path index = dir / "model.safetensors.index.json";
  std::set<std::string> names;
  if (fs::exists(index)) {
    const Json map = read_json(index.string()).value("weight_map", Json());
    if (!map.is_object()) fail(index.string(), "no 'weight_map' object");
    for (const auto& [_, file] : map.items()) {
      if (!file.is_string()) fail(index.string(), "weight_map values must be file names");
      names.insert(file.get<std::string>());
    }
  } else {
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string n = e.path().filename().string();
      if (n.starts_with("model") && n.ends_with(".safetensors")) names.insert(n);
    }
  }
  if (names.empty()) {
    if (fs::exists(dir / "pytorch_model.bin"))
      fail((dir / "pytorch_model.bin").string(), "pickle checkpoints are not read; save the model as safetensors");
    fail((dir / "model.safetensors").string(), "missing (no model*.safetensors in the folder)");
  }
  std::vector<std::string> paths;
  for (const auto& n : names) paths.push_back((dir / n).string());
  return paths;
}

struct Source {
  const StFile* file;
  const StTensorInfo* info;
};

// Tensors prepare_tensors skips ("we don't need these").
bool dropped(const std::string& name) {
  for (const std::string d : {".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq"})
    if (name.ends_with(d)) return true;
  return false;
}

// Every tensor to convert, in the converter's order, less those it drops.
std::vector<Source> ordered_tensors(const std::vector<std::unique_ptr<StFile>>& files) {
  std::vector<Source> out;
  std::set<std::string> seen;
  for (const auto& f : files) {
    std::vector<const StTensorInfo*> infos;
    for (const auto& t : f->tensors()) infos.push_back(&t);
    std::sort(infos.begin(), infos.end(), [](auto* a, auto* b) { return a->name < b->name; });
    for (const auto* t : infos) {
      if (!seen.insert(t->name).second) fail(f->path(), "tensor '" + t->name + "' is also in another shard");
      if (!dropped(t->name)) out.push_back({f.get(), t});
    }
  }
  return out;
}

// LlamaModel.generate_extra_tensors for rope_type llama3: the per-frequency factors,
// computed in float32 as the converter's torch code does.
std::vector<float> llama3_rope_factors(const LlamaHparams& hp) {
  const Json& r = hp.rope;
  const float base = static_cast<float>(hp.rope_theta);
  const double factor = r.value("factor", 8.0), low = r.value("low_freq_factor", 1.0), high = r.value("high_freq_factor", 4.0);
  // transformers keeps original_max_position_embeddings in rope_parameters; the converter
  // reads only the top level (so 8192 for transformers 5 configs). Every Llama 3.x has
  // 8192 there, so the files agree; for any other value ours is the one llama.cpp then
  // computes transformers' rotary frequencies with.
  const double old_ctx = r.value("original_max_position_embeddings",
                                 hp.config.value("original_max_position_embeddings", 8192.0));
  const float low_wavelen = static_cast<float>(old_ctx / low), high_wavelen = static_cast<float>(old_ctx / high);
  std::vector<float> out;
  for (int64_t i = 0; i < hp.head_dim; i += 2) {
    const float freq = 1.0f / std::pow(base, static_cast<float>(i) / static_cast<float>(hp.head_dim));
    const float wavelen = static_cast<float>(2 * std::numbers::pi) / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_wavelen) {
      out.push_back(static_cast<float>(factor));
    } else {
      const float smooth = (static_cast<float>(old_ctx) / wavelen - static_cast<float>(low)) / static_cast<float>(high - low);
      out.push_back(1.0f / ((1.0f - smooth) / static_cast<float>(factor) + smooth));
    }
  }
  return out;
}

// TextModel.set_gguf_parameters + LlamaModel.set_gguf_parameters, in their order.
void add_hparams(GgufMetadata& m, const LlamaHparams& hp, GgufExportType type) {
  auto u32 = [&](const std::string& key, int64_t v) { m.add(key, GgufValue::u32(static_cast<uint32_t>(v))); };
  auto f32 = [&](const std::string& key, double v) { m.add(key, GgufValue::f32(static_cast<float>(v))); };
  u32("llama.block_count", hp.n_layer);
  u32("llama.context_length", hp.context_length);
  u32("llama.embedding_length", hp.hidden_size);
  u32("llama.feed_forward_length", hp.intermediate_size);
  u32("llama.attention.head_count", hp.n_head);
  u32("llama.attention.head_count_kv", hp.n_head_kv);
  if (hp.rope["rope_type"] == "linear") {
    m.add("llama.rope.scaling.type", GgufValue::string("linear"));
    f32("llama.rope.scaling.factor", hp.rope["factor"].get<double>());
  }
  f32("llama.rope.freq_base", hp.rope_theta);
  f32("llama.attention.layer_norm_rms_epsilon", hp.rms_norm_eps);
  u32("llama.attention.key_length", hp.head_dim);
  u32("llama.attention.value_length", hp.head_dim);
  u32("general.file_type", file_type(type));
  u32("llama.vocab_size", hp.vocab_size);
  u32("llama.rope.dimension_count", hp.head_dim);
}

// One checkpoint tensor: renamed, checked against the config, q/k rows permuted, encoded.
// Returns whether Q8_0 fell back to F16.
bool add_weight(GgufWriter& w, const Source& s, const LlamaHparams& hp, GgufExportType type) {
  std::string name = s.info->name;
  for (const char* prefix : {"language_model.", "text_model."})  // filter_tensors' renames
    if (const size_t at = name.find(prefix); at != std::string::npos) name.erase(at, std::strlen(prefix));
  const auto t = llama_tensor(name, hp);
  if (!t) fail(s.file->path(), "tensor '" + s.info->name + "' has no name in llama.cpp's llama architecture");
  if (s.info->shape != t->shape)
    fail(s.file->path(), "tensor '" + s.info->name + "' has shape " + shape_string(s.info->shape) +
                             " but config.json implies " + shape_string(t->shape));
  std::vector<float> data = s.file->to_float(*s.info);
  const int64_t cols = t->shape.size() > 1 ? t->shape[1] : 1;
  if (t->permute_heads) llama_permute_qk(data.data(), t->shape[0], sizeof(float) * cols, t->permute_heads);
  bool fell_back = false;
  const bool f32 = t->shape.size() == 1 || t->gguf_name.ends_with("_norm.weight");
  const GgmlType gt = f32 ? GgmlType::F32 : matrix_type(type, t->shape.back(), &fell_back);
  add_float_tensor(w, t->gguf_name, t->shape, gt, data);
  return fell_back;
}

GgufExportReport export_model(const std::string& model_dir, const std::string& out_path,
                              const ModelExportOptions& opt) {
  const fs::path dir(model_dir);
  const std::string cfg_path = (dir / "config.json").string();
  const LlamaHparams hp = llama_hparams(read_json(cfg_path), cfg_path);

  std::vector<std::unique_ptr<StFile>> files;
  for (const auto& p : weight_files(dir)) files.push_back(std::make_unique<StFile>(p));
  const std::vector<Source> sources = ordered_tensors(files);

  GgufWriter w;
  GgufExportReport report;
  size_t fallbacks = 0;
  uint64_t n_params = 0;  // GGUFWriter.get_total_parameter_count: every tensor written
  if (hp.rope["rope_type"] == "llama3") {
    const std::vector<float> f = llama3_rope_factors(hp);
    add_float_tensor(w, "rope_freqs.weight", {static_cast<int64_t>(f.size())}, GgmlType::F32, f);
    n_params += f.size();
  }
  for (const auto& s : sources) {
    fallbacks += add_weight(w, s, hp, opt.type);
    n_params += static_cast<uint64_t>(numel(s.info->shape));
  }

  GgufMetadata& m = w.metadata();
  m.add("general.architecture", GgufValue::string("llama"));
  m.add("general.type", GgufValue::string("model"));
  m.add("general.name", GgufValue::string(opt.name.empty() ? folder_title(model_dir) : opt.name));
  m.add("general.size_label", GgufValue::string(size_label(n_params)));
  add_hparams(m, hp, opt.type);
  m.add("general.quantization_version", GgufValue::u32(2));
  add_bpe_vocab(m, model_dir, hp, opt.tokenizer_pre);
  w.write(out_path);

  report.n_tensors = w.tensor_count();
  if (fallbacks)
    report.notes.push_back(std::to_string(fallbacks) + " matrices with rows not a multiple of 32 long are F16, "
                           "as the converter writes them for q8_0");
  return report;
}

}  // namespace
}  // namespace gguf_export

GgufExportReport export_model_gguf(const std::string& model_dir, const std::string& out_path,
                                   const ModelExportOptions& opt) {
  try {
    return gguf_export::export_model(model_dir, out_path, opt);
  } catch (const nlohmann::json::exception& e) {  // a JSON value of an unexpected type
    throw GgufError(model_dir + ": " + e.what());
  }
}

}  // namespace peft
