// Probes on a LoRA config's Linear targets for a calibration pass before the adapter
// exists (CorDA, LoRA-GA, EVA): LayerAdapters that observe the layer and change nothing,
// attached and active while this object lives, so the model code needs no hooks.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "peft/lora.h"

namespace peft {

class TargetProbes {
 public:
  struct Probe {
    std::string path;
    AdaptableLayer* host;
    std::shared_ptr<LayerAdapter> adapter;
  };
  // One probe `make(host, path)` per Linear / Conv1D target of `config` (HF's CorDA,
  // LoRA-GA and EVA take those only), in module order; `method` names the init in errors.
  TargetProbes(Model& model, const LoraConfig& config, const std::string& method,
               const std::function<std::shared_ptr<LayerAdapter>(AdaptableLayer*, const std::string&)>& make);
  ~TargetProbes();
  TargetProbes(const TargetProbes&) = delete;
  TargetProbes& operator=(const TargetProbes&) = delete;
  const std::vector<Probe>& probes() const { return probes_; }

 private:
  std::vector<Probe> probes_;
};

}  // namespace peft
