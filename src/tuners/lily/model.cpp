// Where LILY goes (HF PEFT's LilyModel): Linear targets, LoRA's default table, and the
// sharing of A and B across layers that HF's _post_injection_hook sets up.
#include <ATen/ATen.h>

#include <map>
#include <stdexcept>
#include <tuple>

#include "peft/lily.h"
#include "tuners/config_fields.h"
#include "tuners/init_draws.h"
#include "tuners/injection.h"
#include "tuners/target_match.h"

namespace peft {

void LilyConfig::resolve(const Model& model) {
  if (targets.empty()) targets.target_list = default_targets(model, "LILY", lora_default_targets());
}

namespace {

// The target name a layer matched, as HF's hook finds it: the regex itself, or the last
// entry of target_modules the path ends with ("all-linear" became the layers' own names).
// HF iterates a set there, so where several entries end a path its pick follows the hash
// order; ours is the file's order.
std::string matched_name(const TargetSpec& t, const std::string& path) {
  if (t.target_regex) {
    std::string lower = *t.target_regex;
    for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return lower == "all-linear" ? path.substr(path.rfind('.') + 1) : *t.target_regex;
  }
  std::string found;
  for (const auto& name : *t.target_list)
    if (path.ends_with(name)) found = name;
  return found;
}

}  // namespace

NamedModules LilyConfig::layer_targets(Model& model) const {
  auto found = find_targets(model, targets, task_type);
  shared_.clear();
  // (name, out, in) -> its layers in model order.
  std::map<std::tuple<std::string, int64_t, int64_t>, std::vector<std::string>> groups;
  for (const auto& [path, m] : found) {
    auto& host = linear_host("LILY", path, *m);
    groups[{matched_name(targets, path), host.output_dim(), host.input_dim()}].push_back(path);
  }
  for (const auto& [_, paths] : groups) {
    auto B = std::make_shared<at::Tensor>();
    std::shared_ptr<at::Tensor> A;
    for (size_t i = 0; i < paths.size(); ++i) {
      if (i % static_cast<size_t>(stride_A) == 0) A = std::make_shared<at::Tensor>();
      shared_[paths[i]] = {A, B};
    }
  }
  return found;
}

std::shared_ptr<LayerAdapter> LilyConfig::make_layer_adapter(const std::string& path, Module& m,
                                                            at::Generator& gen) const {
  auto* host = &linear_host("LILY", path, m);
  auto it = shared_.find(path);
  if (it == shared_.end()) throw std::logic_error("LILY: '" + path + "' was not grouped (layer_targets groups it)");
  const int64_t in = host->input_dim(), out = host->output_dim();
  // The group's first layer draws the shared tensors; the others find them drawn.
  auto& [A, B] = it->second;
  if (!A->defined()) *A = kaiming_uniform_sqrt5(r, in, gen).to(host->weight_tensor()->device());
  if (!B->defined())
    *B = (init_weights ? at::zeros({num_B * r, out}, at::kFloat) : kaiming_uniform_sqrt5(num_B * r, out, gen))
             .to(host->weight_tensor()->device());
  auto a = std::make_shared<LilyLayer>(host, r, num_B, scaling, it->second);
  a->router = kaiming_uniform_sqrt5(num_B, r, gen);
  a->to(host->weight_tensor()->device());
  return a;
}

}  // namespace peft
