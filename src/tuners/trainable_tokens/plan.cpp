// Where trainable token rows go (see plan.h), and the rows themselves.
#include "tuners/trainable_tokens/plan.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <set>
#include <stdexcept>

#include "peft/layers.h"

namespace peft {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), std::string::npos, suffix) == 0;
}

// The base rows of `indices` and the adapter's starting values.
std::shared_ptr<TokenRows> make_rows(AdaptableLayer& host, const std::string& path, const std::vector<int64_t>& indices,
                                     bool init_weights, at::Generator& gen) {
  const at::Tensor& w = *host.weight_tensor();
  for (int64_t i : indices)
    if (i < 0 || i >= w.size(0))
      throw std::invalid_argument("trainable tokens: token index " + std::to_string(i) + " is outside the " +
                                  std::to_string(w.size(0)) + " rows of '" + path + "'");
  auto rows = std::make_shared<TokenRows>();
  rows->indices = indices;
  rows->index = at::tensor(indices, at::kLong);
  rows->original = w.index_select(0, rows->index.to(w.device())).detach().clone();
  rows->delta = init_weights ? rows->original.to(at::kFloat).clone()
                             : at::randn({rows->index.numel(), w.size(1)}, gen, at::TensorOptions(at::kFloat))
                                   .to(w.device());
  return rows;
}

}  // namespace

const TokenPlan::Entry* TokenPlan::find(const std::string& path) const {
  for (const auto& e : entries)
    if (e.path == path) return &e;
  return nullptr;
}

NamedModules TokenPlan::modules(Model& model) const {
  NamedModules out;
  for (const auto& e : entries) out.emplace_back(e.path, model.find(e.path));
  return out;
}

std::shared_ptr<LayerAdapter> TokenPlan::make(const std::string& path, Module& m, at::Generator& gen) {
  const Entry* e = find(path);
  if (!e) throw std::logic_error("trainable tokens: '" + path + "' is not in the plan");
  auto* host = dynamic_cast<AdaptableLayer*>(&m);
  const bool embedding_layer = host && host->kind() == LayerKind::kEmbedding;
  const bool head = host && host->kind() == LayerKind::kLinear && !host->weight_is_in_out() &&
                    !host->weight_quantized() && !host->bias_tensor();
  if (!host || !host->weight_tensor() || !(embedding_layer || head))
    throw std::invalid_argument("trainable tokens: '" + path + "' is a " + m.type_name() +
                                "; only an Embedding or a bias-free Linear head (lm_head) can train token rows");
  if (e->tied) {
    if (!source) throw std::logic_error("trainable tokens: tied layer '" + path + "' before its embedding");
    return std::make_shared<TrainableTokensLayer>(host, source, false, save_tied ? key : "");
  }
  auto rows = make_rows(*host, path, e->indices, init_weights, gen);
  if (path == embedding) source = rows;
  return std::make_shared<TrainableTokensLayer>(host, rows, true, key);
}

std::string input_embedding_path(Model& model, const std::string& fallback) {
  const Module* e = model.input_embeddings();
  if (e)
    for (auto& [path, m] : model.named_modules())
      if (m == e) return path;
  return fallback;
}

std::vector<std::string> tied_to_input_embedding(Model& model) {
  std::vector<std::string> out;
  Embedding* e = model.input_embeddings();
  if (!e || !e->weight.defined()) return out;
  for (const auto& name : model.tied_parameter_names()) {
    const auto dot = name.rfind('.');
    if (dot == std::string::npos) continue;
    auto* layer = dynamic_cast<AdaptableLayer*>(model.find(name.substr(0, dot)));
    if (layer && layer != e && layer->weight_tensor() && layer->weight_tensor()->defined() &&
        layer->weight_tensor()->unsafeGetTensorImpl() == e->weight.unsafeGetTensorImpl())
      out.push_back(name.substr(0, dot));
  }
  return out;
}

namespace {

// Ties the layers tied to the input embedding to its rows, where it has rows; a layer
// that has rows of its own already keeps them (HF's wrapper update is then a no-op),
// unless `replace` (TRAINABLE_TOKENS swaps in a tied layer).
void add_tied(TokenPlan& plan, Model& model, bool replace) {
  if (!plan.find(plan.embedding)) return;
  for (const auto& path : tied_to_input_embedding(model)) {
    auto it = std::find_if(plan.entries.begin(), plan.entries.end(), [&](const auto& e) { return e.path == path; });
    if (it != plan.entries.end()) {
      if (!replace) continue;
      plan.entries.erase(it);
    }
    plan.entries.push_back({path, plan.find(plan.embedding)->indices, true});
  }
}

using TokenLayers = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// HF's rule for several trainable_token_indices entries on tied layers (the embedding and
// the layers `tied` to it): equal indices make one set of rows, shared, and the tied
// layers' own entries are skipped; different ones train apart, or, with
// ensure_weight_tying, are an error.
struct TiedEntries {
  bool mismatch = false;
  std::set<std::string> skipped;
};
TiedEntries tied_entries(const TokenLayers& layers, const std::vector<std::string>& tied, const std::string& embedding,
                         bool ensure_weight_tying) {
  TiedEntries out;
  if (layers.size() < 2 || tied.empty()) return out;
  std::vector<size_t> keys;
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string& k = layers[i].first;
    bool is_tied = ends_with(embedding, k);
    for (const auto& t : tied)  // HF: t.endswith(k) or k in t.split(".")
      is_tied = is_tied || ends_with(t, k) ||
                (k.find('.') == std::string::npos && ("." + t + ".").find("." + k + ".") != std::string::npos);
    if (is_tied) keys.push_back(i);
  }
  if (keys.size() < 2) return out;
  for (size_t i : keys) out.mismatch = out.mismatch || layers[i].second != layers[keys[0]].second;
  if (out.mismatch && ensure_weight_tying)
    throw std::invalid_argument("trainable_token_indices: tied layers '" + layers[keys[0]].first + "' and '" +
                                layers[keys[1]].first +
                                "' have different token indices; with ensure_weight_tying they must be equal");
  if (!out.mismatch)
    for (size_t i : keys)
      if (std::find(tied.begin(), tied.end(), layers[i].first) != tied.end()) out.skipped.insert(layers[i].first);
  return out;
}

}  // namespace

std::shared_ptr<TokenPlan> plan_trainable_tokens(Model& model, const NamedModules& targets,
                                                 const std::vector<int64_t>& indices, bool init_weights) {
  auto plan = std::make_shared<TokenPlan>();
  plan->key = "trainable_tokens_delta";
  plan->save_tied = true;
  plan->init_weights = init_weights;
  plan->embedding = input_embedding_path(model, "");
  for (const auto& [path, _] : targets) plan->entries.push_back({path, indices, false});
  add_tied(*plan, model, true);
  return plan;
}

std::shared_ptr<TokenPlan> plan_token_indices(Model& model, const ojson& spec, bool ensure_weight_tying,
                                              const std::vector<std::string>& modules_to_save) {
  auto plan = std::make_shared<TokenPlan>();
  plan->key = "token_adapter.trainable_tokens_delta";
  plan->embedding = input_embedding_path(model, "");
  TokenLayers layers;
  if (spec.is_array()) {
    layers.emplace_back(input_embedding_path(model, "embed_tokens"), read_token_list(spec, "trainable_token_indices"));
  } else {
    for (const auto& [k, v] : spec.items()) layers.emplace_back(k, read_token_list(v, "trainable_token_indices '" + k + "'"));
  }
  for (const auto& [name, _] : layers)
    if (std::find(modules_to_save.begin(), modules_to_save.end(), name) != modules_to_save.end())
      throw std::invalid_argument("trainable_token_indices: '" + name +
                                  "' is in modules_to_save too (trained fully); name it in one of them");
  const auto tied = tied_to_input_embedding(model);
  const TiedEntries t = tied_entries(layers, tied, plan->embedding, ensure_weight_tying);
  for (const auto& [name, indices] : layers) {
    if (t.skipped.count(name)) continue;
    bool found = false;
    for (auto& [path, m] : model.named_modules()) {
      if (path.empty() || dynamic_cast<LayerAdapter*>(m) || !ends_with(path, name)) continue;
      found = true;
      if (!plan->find(path)) plan->entries.push_back({path, indices, false});
    }
    if (!found)
      throw std::invalid_argument("trainable_token_indices: '" + name + "' matches no module of " + model.type_name());
  }
  if (!tied.empty() && (ensure_weight_tying || !t.mismatch)) add_tied(*plan, model, false);
  return plan;
}

std::vector<int64_t> read_token_list(const ojson& v, const std::string& what) {
  if (!v.is_array()) throw std::invalid_argument(what + " must be a list of token ids, got " + quote_json(v));
  std::vector<int64_t> out;
  for (const auto& e : v) {
    if (!e.is_number_integer() || e.get<int64_t>() < 0)
      throw std::invalid_argument(what + ": token ids are integers >= 0, got " + quote_json(e));
    out.push_back(e.get<int64_t>());
  }
  if (out.empty()) throw std::invalid_argument(what + " is empty: name the token ids to train");
  return out;
}

void check_token_indices_spec(const ojson& v, const std::string& what) {
  if (v.is_null()) return;
  if (v.is_array()) {
    read_token_list(v, what);
  } else if (v.is_object()) {
    for (const auto& [k, l] : v.items()) read_token_list(l, what + " '" + k + "'");
  } else {
    throw std::invalid_argument(what + " must be a list of token ids or {module name: list}, got " + quote_json(v));
  }
}

}  // namespace peft
