// A named tree of modules holding parameters under Hugging Face's exact names.
//
// Modules keep their tensors as plain members and register pointers to them with the
// shape they expect, so a checkpoint can be checked key by key before anything is
// assigned, and names such as "model.layers.0.self_attn.q_proj.weight" come out of
// the tree exactly as transformers spells them.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace peft {

class Module {
 public:
  virtual ~Module() = default;
  // The class name as transformers has it ("Linear", "LlamaRMSNorm", ...).
  virtual std::string type_name() const = 0;

  struct ParamSlot {
    std::string name;              // local name ("weight")
    at::Tensor* tensor;            // the member it lives in
    std::vector<int64_t> shape;    // shape a checkpoint must have
    bool buffer = false;           // a persistent buffer: loaded and saved, not a parameter
  };

  // Parameters of this module and its children, full dotted names, in registration
  // order. Tied tensors (same storage) are reported once, under their first name.
  std::vector<std::pair<std::string, at::Tensor>> named_parameters(const std::string& prefix = "") const;
  // Persistent buffers (register_buffer), full dotted names.
  std::vector<std::pair<std::string, at::Tensor>> named_buffers(const std::string& prefix = "") const;
  // Every slot, tied duplicates and buffers included: what loading fills in.
  void visit_slots(const std::function<void(const std::string&, ParamSlot&)>& fn, const std::string& prefix = "");
  // This module and all below it, depth first, with full dotted names ("" for the root).
  std::vector<std::pair<std::string, Module*>> named_modules(const std::string& prefix = "");
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }
  const std::vector<ParamSlot>& slots() const { return slots_; }  // this module's own
  Module* find(const std::string& dotted_name);

  // Casts and moves every parameter in place.
  void to(at::ScalarType dtype);
  void to(at::Device device);
  // Where its parameters live and their floating dtype (a module keeps them together);
  // CPU and float32 for a module without parameters.
  at::Device device() const;
  at::ScalarType dtype() const;

 protected:
  void register_parameter(const std::string& name, at::Tensor* slot, std::vector<int64_t> shape);
  // transformers' persistent nn.Buffer (BART's final_logits_bias): loaded and saved with the
  // parameters but neither trained nor counted; a checkpoint may lack it, and then it keeps
  // the value `*slot` holds (set it before loading).
  void register_buffer(const std::string& name, at::Tensor* slot, std::vector<int64_t> shape);
  void remove_module(const std::string& name);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }

 private:
  std::vector<ParamSlot> slots_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

// Children named "0", "1", ... as nn.ModuleList has them.
template <class M>
class ModuleList : public Module {
 public:
  std::string type_name() const override { return "ModuleList"; }
  std::shared_ptr<M> push_back(std::shared_ptr<M> m) {
    items_.push_back(m);
    return register_module(std::to_string(items_.size() - 1), m);
  }
  size_t size() const { return items_.size(); }
  M& operator[](size_t i) { return *items_[i]; }
  const std::vector<std::shared_ptr<M>>& items() const { return items_; }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

}  // namespace peft
