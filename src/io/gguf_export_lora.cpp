// A Hugging Face PEFT LoRA adapter as the adapter GGUF convert_lora_to_gguf.py writes for
// a llama-architecture base: lora_A and lora_B of each adapted weight as
// "<llama.cpp name>.lora_a" / ".lora_b", in the order of the adapter file's sorted keys,
// lora_B's rows permuted for q_proj and k_proj as the base's rows were (the converter
// runs LlamaModel.permute on a LoraTorchTensor, which moves B's rows and leaves A alone),
// embedding LoRA's A transposed (llama.cpp's llm_build_inp_embd wants it so).
//
// llama.cpp scales each pair by adapter.lora.alpha / r with r = lora_b's column count
// (llama_adapter_lora_weight::get_scale); what that cannot express is refused here rather
// than exported wrong.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "io/gguf_export_internal.h"
#include "peft/gguf_llama.h"

namespace fs = std::filesystem;

namespace peft {
namespace gguf_export {
namespace {

constexpr const char* kPrefix = "base_model.model.";

// The config features llama.cpp's LoRA cannot express, refused by name.
void check_config(const Json& c, const std::string& where) {
  const std::string type = c.contains("peft_type") && c["peft_type"].is_string() ? c["peft_type"].get<std::string>() : "";
  if (type != "LORA") fail(where, "peft_type '" + type + "': only LoRA adapters can be exported to llama.cpp");
  auto on = [&](const char* key) { return c.contains(key) && c[key].is_boolean() && c[key].get<bool>(); };
  auto listed = [&](const char* key) { return c.contains(key) && !c[key].is_null() && !c[key].empty(); };
  if (on("use_dora")) fail(where, "DoRA (use_dora) cannot be expressed in llama.cpp's LoRA format");
  if (on("lora_bias")) fail(where, "lora_bias (a trained bias on lora_B) cannot be expressed in llama.cpp's LoRA format");
  if (listed("modules_to_save"))
    fail(where, "modules_to_save: full trained copies of modules cannot be carried by llama.cpp's LoRA format");
  if (listed("target_parameters")) fail(where, "target_parameters (LoRA on parameters) is not supported");
  if (listed("trainable_token_indices")) fail(where, "trainable_token_indices is not supported");
  if (listed("layer_replication")) fail(where, "layer_replication is not supported");
  // Variants whose forward is not x @ A^T @ B^T * alpha / r.
  for (const char* variant : {"use_qalora", "use_bdlora", "arrow_config", "kasa_config", "monteclora_config"})
    if (c.contains(variant) && !c[variant].is_null() && !(c[variant].is_boolean() && !c[variant].get<bool>()))
      fail(where, std::string(variant) + ": this LoRA variant cannot be expressed in llama.cpp's LoRA format");
  if (!c.contains("lora_alpha") || !c["lora_alpha"].is_number()) fail(where, "lora_alpha is missing or not a number");
  const double alpha = c["lora_alpha"].get<double>();
  // get_scale treats alpha 0 as "no alpha" (scale 1); PEFT's scale would be 0.
  if (alpha == 0) fail(where, "lora_alpha 0: llama.cpp would read it as 'no alpha' and scale by 1");
  if (c.contains("alpha_pattern") && c["alpha_pattern"].is_object())
    for (const auto& [module, a] : c["alpha_pattern"].items())
      if (!a.is_number() || a.get<double>() != alpha)
        fail(where, "alpha_pattern gives '" + module + "' its own alpha, but llama.cpp applies one "
                    "adapter.lora.alpha to every tensor");
  if (c.contains("invocation_string") && !listed("alora_invocation_tokens"))
    fail(where, "invocation_string without alora_invocation_tokens: tokenize it into alora_invocation_tokens first");
}

// The base model's hyperparameters: --base (a folder or a .gguf), else the local folder
// adapter_config.json names (as given, then relative to the adapter folder).
LlamaHparams base_hparams(const std::string& base, const Json& cfg, const fs::path& adapter_dir, const std::string& where) {
  std::string path = base;
  if (path.empty()) {
    const std::string named = cfg.value("base_model_name_or_path", Json()).is_string()
                                  ? cfg["base_model_name_or_path"].get<std::string>() : "";
    for (const fs::path& p : {fs::path(named), adapter_dir / named})
      if (!named.empty() && fs::is_directory(p)) path = p.string();
    if (path.empty())
      fail(where, "base_model_name_or_path '" + named + "' is not a local folder; pass --base "
                  "(a folder with config.json, or the base .gguf)");
  }
  if (fs::is_regular_file(path)) {
    const GgufFile g(path);
    return llama_hparams(Json(llama_config_from_gguf(g.header())), path);
  }
  const std::string cfg_path = (fs::path(path) / "config.json").string();
  return llama_hparams(read_json(cfg_path), cfg_path);
}

// get_base_tensor_name's suffixes (lora_embedding_* are what PEFT saves for embeddings).
struct Suffix {
  const char* suffix;
  bool is_a, embedding;
};
constexpr Suffix kSuffixes[] = {{".lora_A.weight", true, false},
                                {".lora_B.weight", false, false},
                                {".lora_embedding_A", true, true},
                                {".lora_embedding_B", false, true}};

struct Pair {
  const StTensorInfo* a = nullptr;
  const StTensorInfo* b = nullptr;
  bool embedding = false;
};

// get_tensors: group the file's A and B by the base weight they adapt, in sorted key order.
std::vector<std::pair<std::string, Pair>> pairs(const StFile& f) {
  std::vector<const StTensorInfo*> infos;
  for (const auto& t : f.tensors()) infos.push_back(&t);
  std::sort(infos.begin(), infos.end(), [](auto* x, auto* y) { return x->name < y->name; });
  std::vector<std::pair<std::string, Pair>> out;
  std::map<std::string, size_t> index;
  for (const auto* t : infos) {
    const std::string& key = t->name;
    if (!key.starts_with(kPrefix)) fail(f.path(), "tensor '" + key + "' is not a PEFT adapter key (base_model.model.*)");
    const std::string rest = key.substr(std::strlen(kPrefix));
    std::string base;
    const Suffix* kind = nullptr;
    for (const auto& s : kSuffixes)
      if (rest.ends_with(s.suffix)) {
        base = rest.substr(0, rest.size() - std::strlen(s.suffix)) + ".weight";
        kind = &s;
      }
    if (base.empty()) {
      if (rest.ends_with(".base_layer.weight")) continue;  // the converter skips these copies
      if (rest.find("lora_magnitude_vector") != std::string::npos)
        fail(f.path(), "tensor '" + key + "': DoRA cannot be expressed in llama.cpp's LoRA format");
      fail(f.path(), "tensor '" + key + "' is not a LoRA A/B matrix (a trained bias, a modules_to_save copy, "
                     "trainable tokens?); llama.cpp's LoRA format cannot carry it");
    }
    auto [it, fresh] = index.emplace(base, out.size());
    if (fresh) out.push_back({base, {}});
    Pair& p = out[it->second].second;
    (kind->is_a ? p.a : p.b) = t;
    p.embedding = kind->embedding;
  }
  return out;
}

// Checks one pair against the base and returns its rank.
int64_t check_pair(const std::string& base, const Pair& p, const LlamaTensor& t, const LlamaHparams& hp,
                   const std::string& where) {
  if (!p.a || !p.b) fail(where, "'" + base + "' has lora_" + (p.a ? "A but no lora_B" : "B but no lora_A"));
  const bool output = t.gguf_name == "output.weight", embd = t.gguf_name == "token_embd.weight";
  // Both load in llama.cpp and then crash it (checked with llama-cpp-python 0.3.36): the
  // tied output projection is token_embd.weight itself, so its LoRA is looked up by that name.
  if (output && hp.tied)
    fail(where, "LoRA on lm_head of a base that ties it to the embeddings: llama.cpp has no output weight of its "
                "own to adapt (it crashes on such an adapter)");
  if (embd && hp.tied)
    fail(where, "LoRA on the embeddings of a base that ties them to lm_head: llama.cpp would apply it to the tied "
                "output projection too, where it does not fit (it aborts)");
  if (p.embedding != embd) fail(where, "'" + base + "': embedding LoRA tensors on a non-embedding weight, or the reverse");
  if (t.shape.size() != 2) fail(where, "'" + base + "' is not a matrix");
  const int64_t r = p.b->shape.size() == 2 ? p.b->shape[1] : -1;
  // Linear: A [r, in], B [out, r]. Embedding: A [r, vocab], B [hidden, r].
  const std::vector<int64_t> want_a = embd ? std::vector<int64_t>{r, t.shape[0]} : std::vector<int64_t>{r, t.shape[1]};
  const std::vector<int64_t> want_b = embd ? std::vector<int64_t>{t.shape[1], r} : std::vector<int64_t>{t.shape[0], r};
  if (r <= 0 || p.a->shape != want_a || p.b->shape != want_b)
    fail(where, "'" + base + "': lora_A " + shape_string(p.a->shape) + " and lora_B " + shape_string(p.b->shape) +
                    " do not fit the base's " + shape_string(t.shape));
  return r;
}

std::vector<float> transpose(const std::vector<float>& v, int64_t rows, int64_t cols) {
  std::vector<float> out(v.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[static_cast<size_t>(j * rows + i)] = v[static_cast<size_t>(i * cols + j)];
  return out;
}

// Writes "<name>.lora_a" and ".lora_b"; returns how many fell back from Q8_0 to F16.
int add_pair(GgufWriter& w, const StFile& f, const Pair& p, const LlamaTensor& t, GgufExportType type) {
  std::vector<float> a = f.to_float(*p.a), b = f.to_float(*p.b);
  std::vector<int64_t> a_shape = p.a->shape;
  const int64_t r = p.b->shape[1];
  if (t.permute_heads) llama_permute_qk(b.data(), p.b->shape[0], sizeof(float) * r, t.permute_heads);
  if (p.embedding) {  // token_embd.lora_a is stored transposed: [vocab, r]
    a = transpose(a, a_shape[0], a_shape[1]);
    a_shape = {a_shape[1], a_shape[0]};
  }
  bool fa = false, fb = false;
  add_float_tensor(w, t.gguf_name + ".lora_a", a_shape, matrix_type(type, a_shape.back(), &fa), a);
  add_float_tensor(w, t.gguf_name + ".lora_b", p.b->shape, matrix_type(type, r, &fb), b);
  return fa + fb;
}

// PEFT scales rsLoRA by alpha / sqrt(r), llama.cpp by alpha / r: alpha * sqrt(r) makes
// them equal, for one r only.
double llama_cpp_alpha(const Json& cfg, const std::set<int64_t>& ranks, const std::string& where,
                       GgufExportReport& report) {
  const double alpha = cfg["lora_alpha"].get<double>();
  if (!(cfg.contains("use_rslora") && cfg["use_rslora"].is_boolean() && cfg["use_rslora"].get<bool>())) return alpha;
  if (ranks.size() > 1) fail(where, "rsLoRA with several ranks (rank_pattern) cannot be expressed with llama.cpp's one alpha");
  const double r = static_cast<double>(*ranks.begin());
  char note[160];
  std::snprintf(note, sizeof note, "rsLoRA: adapter.lora.alpha = %g * sqrt(%g) = %g, so llama.cpp's alpha/r is PEFT's alpha/sqrt(r)",
                alpha, r, alpha * std::sqrt(r));
  report.notes.push_back(note);
  return alpha * std::sqrt(r);
}

// LoraModel.set_type, Metadata.set_gguf_meta_model (the name), set_gguf_parameters.
void add_metadata(GgufMetadata& m, const Json& cfg, const std::string& name, double alpha, const std::string& where) {
  m.add("general.architecture", GgufValue::string("llama"));
  m.add("general.type", GgufValue::string("adapter"));
  m.add("adapter.type", GgufValue::string("lora"));
  m.add("general.name", GgufValue::string(name));
  m.add("adapter.lora.alpha", GgufValue::f32(static_cast<float>(alpha)));
  const Json tokens = cfg.contains("alora_invocation_tokens") ? cfg["alora_invocation_tokens"] : Json();
  if (tokens.is_array() && !tokens.empty()) {
    std::vector<int64_t> ids;
    for (const auto& id : tokens) {
      if (!id.is_number_unsigned()) fail(where, "alora_invocation_tokens must be token ids");
      ids.push_back(id.get<int64_t>());
    }
    m.add("adapter.alora.invocation_tokens", GgufValue::int_array(GgufType::U32, ids));
  }
  m.add("general.quantization_version", GgufValue::u32(2));
}

GgufExportReport export_lora(const fs::path& dir, const std::string& out_path, const LoraExportOptions& opt) {
  const std::string cfg_path = (dir / "adapter_config.json").string();
  const Json cfg = read_json(cfg_path);
  check_config(cfg, cfg_path);
  const LlamaHparams hp = base_hparams(opt.base, cfg, dir, cfg_path);
  const std::string st_path = (dir / "adapter_model.safetensors").string();
  if (!fs::exists(st_path) && fs::exists(dir / "adapter_model.bin"))
    fail((dir / "adapter_model.bin").string(), "pickle adapters are not read; save the adapter as safetensors");
  const StFile file(st_path);

  GgufWriter w;
  GgufExportReport report;
  std::set<int64_t> ranks;
  int fallbacks = 0;
  for (const auto& [base, p] : pairs(file)) {
    const auto t = llama_tensor(base, hp);
    if (!t) fail(st_path, "'" + base + "' is not a weight of llama.cpp's llama architecture");
    ranks.insert(check_pair(base, p, *t, hp, st_path));
    fallbacks += add_pair(w, file, p, *t, opt.type);
  }
  if (ranks.empty()) fail(st_path, "no LoRA tensors");
  const double alpha = llama_cpp_alpha(cfg, ranks, cfg_path, report);
  add_metadata(w.metadata(), cfg, opt.name.empty() ? folder_title(dir.string()) : opt.name, alpha, cfg_path);
  w.write(out_path);

  report.n_tensors = w.tensor_count();
  if (fallbacks)
    report.notes.push_back(std::to_string(fallbacks) + " tensors with rows not a multiple of 32 long are F16, "
                           "as the converter writes them for q8_0");
  return report;
}

}  // namespace
}  // namespace gguf_export

GgufExportReport export_lora_gguf(const std::string& adapter_dir, const std::string& out_path,
                                  const LoraExportOptions& opt) {
  try {
    return gguf_export::export_lora(adapter_dir, out_path, opt);
  } catch (const nlohmann::json::exception& e) {  // a JSON value of an unexpected type
    throw GgufError(adapter_dir + ": " + e.what());
  }
}

}  // namespace peft
