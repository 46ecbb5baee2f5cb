#include "tuners/lora/target_probes.h"

#include <algorithm>
#include <stdexcept>

namespace peft {

namespace {
const std::string kProbe = "__calibration_probe__";
}  // namespace

TargetProbes::TargetProbes(Model& model, const LoraConfig& config, const std::string& method,
                           const std::function<std::shared_ptr<LayerAdapter>(AdaptableLayer*, const std::string&)>& make) {
  for (const auto& [path, m] : config.layer_targets(model)) {
    auto* host = dynamic_cast<AdaptableLayer*>(m);
    if (!host || host->kind() != LayerKind::kLinear) continue;
    probes_.push_back({path, host, make(host, path)});
  }
  if (probes_.empty()) throw std::invalid_argument(method + ": no Linear or Conv1D target");
  for (auto& p : probes_) {
    p.host->attach(kProbe, p.adapter);
    p.host->active.push_back(kProbe);
  }
}

TargetProbes::~TargetProbes() {
  for (auto& p : probes_) {
    p.host->active.erase(std::find(p.host->active.begin(), p.host->active.end(), kProbe));
    p.host->detach(kProbe);
  }
}

}  // namespace peft
