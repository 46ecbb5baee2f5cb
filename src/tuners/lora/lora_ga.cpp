#include "tuners/lora/lora_ga.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <stdexcept>

#include "peft/model.h"

namespace peft {

namespace {

// Counts its layer's forwards (HF counts backward hook calls: one per forward here).
class ForwardCounter : public LayerAdapter {
 public:
  explicit ForwardCounter(AdaptableLayer* host) : LayerAdapter(host) {}
  std::string type_name() const override { return "ForwardCounter"; }
  at::Tensor forward(const at::Tensor&, const at::Tensor& out) override {
    ++count;
    return out;
  }
  void merge() override {}
  void unmerge() override {}
  std::vector<at::Tensor*> trainable_slots() override { return {}; }
  int64_t count = 0;
};

constexpr const char* kCounter = "__lora_ga_counter__";

}  // namespace

std::map<std::string, at::Tensor> lora_ga_gradients(Model& model, const LoraConfig& config,
                                                   const std::function<void()>& train_step) {
  struct Target {
    std::string path;
    AdaptableLayer* host;
    std::shared_ptr<ForwardCounter> counter;
  };
  std::vector<Target> targets;
  for (const auto& [path, m] : config.layer_targets(model)) {
    auto* host = dynamic_cast<AdaptableLayer*>(m);
    if (!host || host->kind() != LayerKind::kLinear) continue;  // HF: Linear and Conv1D targets only
    if (host->weight_quantized())
      throw std::invalid_argument("LoRA-GA needs full-precision gradients; '" + path + "' is 4-bit");
    targets.push_back({path, host, std::make_shared<ForwardCounter>(host)});
  }
  if (targets.empty()) throw std::invalid_argument("LoRA-GA: no Linear or Conv1D target");
  // Only the targets' weights get gradients (HF turns every other parameter off).
  std::vector<std::pair<at::Tensor, bool>> saved;
  for (auto& [_, p] : model.named_parameters()) {
    saved.emplace_back(p, p.requires_grad());
    p.requires_grad_(false);
  }
  for (auto& t : targets) {
    t.host->weight_tensor()->requires_grad_(true);
    t.host->attach(kCounter, t.counter);
    t.host->active.push_back(kCounter);
  }
  auto restore = [&] {
    for (auto& t : targets) {
      t.host->active.erase(std::find(t.host->active.begin(), t.host->active.end(), kCounter));
      t.host->detach(kCounter);
      t.host->weight_tensor()->mutable_grad() = at::Tensor();
      t.host->weight_tensor()->requires_grad_(false);
    }
    for (auto& [p, rg] : saved) p.requires_grad_(rg);
  };
  std::map<std::string, at::Tensor> out;
  try {
    at::AutoGradMode grad(true);
    train_step();
    for (auto& t : targets) {
      const at::Tensor g = t.host->weight_tensor()->grad();
      if (t.counter->count == 0 || !g.defined())
        throw std::runtime_error("LoRA-GA: the calibration pass never reached '" + t.path + "'");
      const auto mean = g.detach().to(at::kFloat) / static_cast<double>(t.counter->count);
      out[t.path] = (t.host->weight_is_in_out() ? mean.t() : mean).contiguous();
    }
  } catch (...) {
    restore();
    throw;
  }
  restore();
  return out;
}

}  // namespace peft
