// The per-layer compositions: stack, average / fuse, adapter_fusion (docs/COMPOSITION.md).
#include <ATen/ATen.h>

#include "peft/composition.h"

namespace peft {

at::Tensor LayerComposition::run(AdaptableLayer& host, const at::Tensor& x) {
  std::vector<LayerAdapter*> on;
  for (const auto& name : names_) on.push_back(host.adapter(name));
  at::Tensor in = x;
  for (auto* a : on)
    if (a) in = a->transform_input(in);
  return forward(in, host.base_forward(in), on);
}

namespace {

// AdapterHub's Stack: a_n(... a_2(a_1(base))). Serial bottleneck adapters each read the
// previous output; LoRA adds x A^T B^T whatever it is given, so a stack of LoRAs is their sum.
class StackComposition : public LayerComposition {
 public:
  explicit StackComposition(std::vector<std::string> names) : LayerComposition(std::move(names)) {}
  std::string type_name() const override { return "StackComposition"; }
  at::Tensor forward(const at::Tensor& in, const at::Tensor& base_out, const std::vector<LayerAdapter*>& adapters) override {
    at::Tensor out = base_out;
    for (auto* a : adapters)
      if (a) out = a->forward(in, out);
    return out;
  }
};

// base + sum_i w_i (a_i(x, base) - base): each adapter's own change, weighted. The weights
// are one [n] vector shared by all layers (owned by the model's ActiveComposition).
class WeightedComposition : public LayerComposition {
 public:
  WeightedComposition(std::vector<std::string> names, const at::Tensor* weights)
      : LayerComposition(std::move(names)), weights_(weights) {}
  std::string type_name() const override { return "WeightedComposition"; }
  at::Tensor forward(const at::Tensor& in, const at::Tensor& base_out, const std::vector<LayerAdapter*>& adapters) override {
    const at::Tensor w = weights_->to(base_out.scalar_type());
    at::Tensor out = base_out;
    for (size_t i = 0; i < adapters.size(); ++i)
      if (adapters[i]) out = out + w[static_cast<int64_t>(i)] * (adapters[i]->forward(in, base_out) - base_out);
    return out;
  }

 private:
  const at::Tensor* weights_;
};

// AdapterFusion (Pfeiffer et al. 2021) as AdapterHub's default ("dynamic") config computes
// it: with h the base output and z_i = a_i(x, h) - h each adapter's own output (AdapterHub's
// "up"), s = softmax_i((h Q^T + b_Q) . (z_i K^T + b_K) / T), o = h + sum_i s_i z_i V^T.
// Q, K: Linear(d, d) ~ N(0, 0.02), zero bias (AdapterHub's init_bert_weights); V: Linear(d,
// d) without bias, identity with 1e-6 off the diagonal (AdapterHub's value_initialized).
class FusionComposition : public LayerComposition {
 public:
  FusionComposition(std::vector<std::string> names, int64_t d, double temperature, at::Device device, at::Generator& gen)
      : LayerComposition(std::move(names)), temperature_(temperature) {
    const auto f = at::TensorOptions().dtype(at::kFloat);
    query_w = at::normal(0.0, 0.02, {d, d}, gen, f).to(device);
    key_w = at::normal(0.0, 0.02, {d, d}, gen, f).to(device);
    query_b = at::zeros({d}, f.device(device));
    key_b = at::zeros({d}, f.device(device));
    value_w = (at::full({d, d}, 1e-6, f).fill_diagonal_(1.0)).to(device);
    register_parameter("adapter_fusion.query.weight", &query_w, {d, d});
    register_parameter("adapter_fusion.query.bias", &query_b, {d});
    register_parameter("adapter_fusion.key.weight", &key_w, {d, d});
    register_parameter("adapter_fusion.key.bias", &key_b, {d});
    register_parameter("adapter_fusion.value.weight", &value_w, {d, d});
  }
  std::string type_name() const override { return "FusionComposition"; }
  std::vector<at::Tensor*> trainable_slots() override { return {&query_w, &query_b, &key_w, &key_b, &value_w}; }
  at::Tensor forward(const at::Tensor& in, const at::Tensor& h, const std::vector<LayerAdapter*>& adapters) override {
    std::vector<at::Tensor> zs;
    for (auto* a : adapters)
      if (a) zs.push_back(a->forward(in, h) - h);
    if (zs.empty()) return h;
    const auto dt = h.scalar_type();
    const at::Tensor z = at::stack(zs, -2);                                     // [..., n, d]
    const at::Tensor q = at::linear(h, query_w.to(dt), query_b.to(dt));         // [..., d]
    const at::Tensor k = at::linear(z, key_w.to(dt), key_b.to(dt));             // [..., n, d]
    const at::Tensor s = at::softmax((k * q.unsqueeze(-2)).sum(-1) / temperature_, -1);  // [..., n]
    const at::Tensor v = at::linear(z, value_w.to(dt));                         // [..., n, d]
    return h + (s.unsqueeze(-1) * v).sum(-2);
  }

  at::Tensor query_w, query_b, key_w, key_b, value_w;

 private:
  double temperature_;
};

}  // namespace

std::shared_ptr<LayerComposition> make_layer_composition(const CompositionConfig& cfg, AdaptableLayer& host,
                                                         const at::Tensor* weights, at::Generator& gen) {
  if (cfg.kind == "stack") return std::make_shared<StackComposition>(cfg.adapters);
  if (cfg.kind == "average" || cfg.kind == "fuse") return std::make_shared<WeightedComposition>(cfg.adapters, weights);
  if (cfg.kind == "adapter_fusion")
    return std::make_shared<FusionComposition>(cfg.adapters, host.output_dim(), cfg.temperature, host.device(), gen);
  throw std::invalid_argument("composition: unknown 'composition' kind '" + cfg.kind + "'");
}

}  // namespace peft
