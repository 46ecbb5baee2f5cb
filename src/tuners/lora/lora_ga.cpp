#include "tuners/lora/lora_ga.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <stdexcept>

#include "peft/model.h"
#include "tuners/lora/target_probes.h"

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

}  // namespace

std::map<std::string, at::Tensor> lora_ga_gradients(Model& model, const LoraConfig& config,
                                                   const std::function<void()>& train_step) {
  TargetProbes probes(model, config, "LoRA-GA", [](AdaptableLayer* h, const std::string&) { return std::make_shared<ForwardCounter>(h); });
  for (const auto& p : probes.probes())
    if (p.host->weight_quantized())
      throw std::invalid_argument("LoRA-GA needs full-precision gradients; '" + p.path + "' is 4-bit");
  // Only the targets' weights get gradients (HF turns every other parameter off); the
  // settings come back however the pass ends.
  struct GradientsOnTargets {
    std::vector<std::pair<at::Tensor, bool>> saved;
    std::vector<at::Tensor> weights;
    ~GradientsOnTargets() {
      for (auto& w : weights) {
        w.mutable_grad() = at::Tensor();
        w.requires_grad_(false);
      }
      for (auto& [p, rg] : saved) p.requires_grad_(rg);
    }
  } grads;
  for (auto& [_, p] : model.named_parameters()) {
    grads.saved.emplace_back(p, p.requires_grad());
    p.requires_grad_(false);
  }
  for (const auto& p : probes.probes()) {
    grads.weights.push_back(*p.host->weight_tensor());
    grads.weights.back().requires_grad_(true);
  }
  {
    at::AutoGradMode grad(true);
    train_step();
  }
  std::map<std::string, at::Tensor> out;
  for (const auto& p : probes.probes()) {
    const int64_t count = static_cast<const ForwardCounter&>(*p.adapter).count;
    const at::Tensor g = p.host->weight_tensor()->grad();
    if (count == 0 || !g.defined())
      throw std::runtime_error("LoRA-GA: the calibration pass never reached '" + p.path + "'");
    const auto mean = g.detach().to(at::kFloat) / static_cast<double>(count);
    out[p.path] = (p.host->weight_is_in_out() ? mean.t() : mean).contiguous();
  }
  return out;
}

}  // namespace peft
